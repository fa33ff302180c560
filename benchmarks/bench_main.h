#pragma once
// The shared main of the Google Benchmark targets: threads from RALA_THREADS (default all cores), allocator and
// OpenBLAS threads as `rala bench` sets them, the thread count and
// BLAS in the context block of every report, then the registered benchmarks.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "experiments/bench.h"
#include "experiments/runtime.h"

namespace rala {

inline int bench_main(int argc, char** argv) {
  const char* env = std::getenv("RALA_THREADS");
  const int threads = configure_threads(env ? std::atoi(env) : 0);
  // The runtime settings of `rala bench` (see docs/readme-performance.md): freed memory stays in the heap, and
  // OpenBLAS runs single-threaded inside LibTorch's OpenMP threads (RALA_BLAS_THREADS overrides).
  configure_allocator("retain");
  const char* blas_env = std::getenv("RALA_BLAS_THREADS");
  set_blas_threads(blas_env ? std::atoi(blas_env) : 1);
  benchmark::AddCustomContext("blas_threads", blas_env ? blas_env : "1");
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("blas", blas_info());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace rala
