// The `rala` executable: one CLI11 app with a subcommand per job.
#include <CLI/CLI.hpp>

#include <iostream>

#include "experiments/ablate.h"
#include "experiments/bench.h"
#include "experiments/convert.h"
#include "experiments/demo.h"
#include "experiments/distill.h"
#include "experiments/info.h"
#include "experiments/layer.h"
#include "experiments/predict.h"
#include "experiments/rank.h"
#include "experiments/report.h"
#include "experiments/train.h"
#include "experiments/device.h"
#include "experiments/rank_merge.h"
#include "experiments/runtime.h"

int main(int argc, char** argv) {
  rala::select_blas_kernels(argv);  // may re-execute this program once, before anything else happens
  CLI::App app{"RALA Lab: linear-attention variants, rank analysis and benchmarks for vision transformers"};
  app.require_subcommand(0, 1);
  int threads = 0;
  std::string device = "cpu";
  app.add_option("--threads", threads, "Intra-op threads (0 = all cores, shared among a launcher's processes on a node)")
      ->check(CLI::NonNegativeNumber);
  app.set_version_flag("--version", rala::tool_version());
  app.parse_complete_callback([&] {
    // Process-wide runtime (measured in the README's Performance section): intra-op threads, freed memory kept in the
    // heap, OpenBLAS single-threaded inside LibTorch's threads. `rala bench` flags override the last two.
    rala::configure_threads(threads);
    rala::configure_allocator("retain");
    rala::set_blas_threads(1);
    rala::set_run_device(rala::resolve_run_device(device));
  });
  rala::set_command_line(argc, argv);
  rala::add_info_command(app);
  rala::add_layer_command(app);
  rala::add_predict_command(app);
  rala::add_rank_command(app);
  rala::add_report_command(app);
  rala::add_train_command(app);
  rala::add_ablate_command(app);
  rala::add_bench_command(app);
  rala::add_demo_command(app);
  rala::add_convert_command(app);
  rala::add_distill_command(app);
  rala::add_rank_merge_command(app);
  // --device on every subcommand (models, inputs, RoPE tables and probes follow it; results files record it).
  app.add_option("--device", device, "cpu | cuda | cuda:N (default cpu)")->capture_default_str();
  for (auto* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_option_no_throw("--device") == nullptr)
      sub->add_option("--device", device, "cpu | cuda | cuda:N (under a launcher, cuda = the local rank's GPU)")
          ->capture_default_str();
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::cerr << "rala: error: a subcommand is required (one of: info, layer, predict, rank, rank-merge, report, train, ablate, bench, demo, distill, convert); run 'rala --help'\n";
      return 2;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "rala: error: " << rala::error_line(e) << "\n";
    return 1;
  }
  return 0;
}
