#pragma once
// The shared main of the Google Benchmark targets: threads from RALA_THREADS (default all cores), the thread count and
// BLAS in the context block of every report, then the registered benchmarks.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "experiments/runtime.h"

namespace rala {

inline int bench_main(int argc, char** argv) {
  const char* env = std::getenv("RALA_THREADS");
  const int threads = configure_threads(env ? std::atoi(env) : 0);
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("blas", blas_info());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace rala
