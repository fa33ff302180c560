// Writes the table fixtures of tests/data/report with the toolkit's own tables: the empty tables come from the
// builders `rala ablate`, `rala bench` and `rala train` use (make_ablation_table, make_bench_table,
// make_metrics_table: same columns, kinds, units and descriptions), written by analysis/results_table. The values are
// illustrative (typed in, chosen to show at the report's display precision), not measurements.
// Usage: rala_make_report_fixtures DIR   (see tests/data/report/make_fixtures.sh)
#include <cstdio>
#include <filesystem>
#include <string>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "experiments/ablate.h"
#include "experiments/bench.h"
#include "experiments/runtime.h"
#include "experiments/train/train_loop.h"

using namespace rala;

namespace {

void write(const ResultsTable& t, const std::string& path, const std::string& kind) {
  write_table_files(t, path, [&](h5::File& f) {
    set_provenance(f);
    f.set_attr("/", "table_kind", kind);
  });
  std::printf("%s: %lld rows\n", path.c_str(), static_cast<long long>(t.rows()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  set_command_line(argc, argv);
  const std::string dir = argv[1];
  std::filesystem::create_directories(dir);
  using I = int64_t;

  ResultsTable a = make_ablation_table();
  struct A {
    const char *config, *pattern, *opts;
    double gmacs, top1, std, kvr, kve, o, oe, g, ge, ips;
  };
  for (const A& r : {A{"RRSS", "RRSS", "", 0.0312, 78.42, 0.31, 14.5, 5.23, 12.25, 1.75, 16.0, 9.48, 812.4},
                     A{"RRSS no_alpha", "RRSS", "alpha=0", 0.0312, 77.95, 0.27, 13.75, 4.61, 11.5, 1.62, 16.0, 9.12, 820.1},
                     A{"LLSS", "LLSS", "", 0.0298, 76.1, 0.44, 9.25, 2.02, 1.25, 1.01, 1.5, 1.04, 901.7},
                     A{"FFSS", "FFSS", "", 0.0305, 77.31, 0.12, 12.0, 3.35, 7.5, 1.4, 16.0, 4.06, 760.0}})
    a.add_row({{"config", std::string(r.config)}, {"pattern", std::string(r.pattern)}, {"attn_opts", std::string(r.opts)},
               {"seeds", I{2}}, {"epochs", I{3}}, {"params", I{1234567}}, {"gmacs", r.gmacs}, {"top1_mean", r.top1},
               {"top1_std", r.std}, {"kv_buffer_rank", r.kvr}, {"kv_buffer_effective_rank", r.kve},
               {"output_rank", r.o}, {"output_effective_rank", r.oe}, {"output_gated_rank", r.g},
               {"output_gated_effective_rank", r.ge}, {"images_per_s", r.ips}});
  write(a, dir + "/ablation.h5", "ablation");

  ResultsTable b = make_bench_table();
  struct B {
    const char* pattern;
    I size;
    double ips, lat, p95, mem, gmacs, gflops, ratio;
  };
  for (const B& r : {B{"RRSS", 64, 412.5, 19.39, 21.02, 96.3, 0.1248, 103.0, 0.936},
                     B{"RRSS", 128, 101.2, 79.05, 83.4, 301.7, 0.4992, 101.0, 0.918},
                     B{"RRSS", 256, 22.8, 350.88, 371.25, 1150.2, 1.9968, 91.1, 0.828},
                     B{"LLSS", 64, 455.1, 17.58, 19.1, 90.8, 0.1201, 109.3, 0.994},
                     B{"LLSS", 128, 114.6, 69.81, 72.66, 280.4, 0.4804, 110.1, 1.001},
                     B{"LLSS", 256, 27.3, 293.04, 305.5, 1052.9, 1.9216, 104.9, 0.954}})
    b.add_row({{"model", std::string("ravlt_micro")}, {"pattern", std::string(r.pattern)}, {"mode", std::string("infer")},
               {"dtype", std::string("float32")}, {"device", std::string("cpu")}, {"commit", std::string("24b1cc5")},
               {"threads", I{2}}, {"batch", I{8}}, {"image_size", r.size}, {"images_per_s", r.ips},
               {"latency_median_ms", r.lat}, {"latency_p95_ms", r.p95}, {"peak_memory_mb", r.mem}, {"gmacs", r.gmacs},
               {"gflops", r.gflops}, {"gemm_gflops", 110.0}, {"gemm_ratio", r.ratio},
               {"baseline_memory_mb", 60.0}, {"blas_threads", I{1}}, {"iters", I{4}}, {"rounds", I{3}},
               {"status", std::string("ok")}});
  write(b, dir + "/bench.h5", "bench");

  ResultsTable t = make_metrics_table();
  struct T {
    I epoch;
    double loss, train, test_loss, test, ema, lr, ips, s;
  };
  for (const T& r : {T{1, 1.2345, 55.12, 0.9512, 68.4, 66.93, 0.001, 805.2, 74.5},
                     T{2, 0.8123, 71.06, 0.7034, 74.87, 73.5, 0.0005, 811.9, 73.9},
                     T{3, 0.6871, 75.33, 0.6122, 78.42, 77.95, 0.0001, 809.4, 74.1}})
    t.add_row({{"epoch", r.epoch}, {"train_loss", r.loss}, {"train_top1", r.train}, {"test_loss", r.test_loss},
               {"test_top1", r.test}, {"test_top1_ema", r.ema}, {"lr", r.lr}, {"images_per_s", r.ips},
               {"seconds", r.s}});
  write(t, dir + "/train.h5", "train");
  return 0;
}
