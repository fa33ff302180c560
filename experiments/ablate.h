#pragma once
/// \file ablate.h
/// `rala ablate`: a grid of trainings, each followed by a rank analysis of its test images and an inference-throughput
/// measurement, summarised in one table (DIR/ablation.h5 in the /table convention + DIR/ablation.csv).
///
///   auto preset = rala::ablation_preset("quick");
///   auto table = rala::run_ablation(preset, /*seeds=*/1, "runs/ablation", /*quiet=*/false);

#include <ostream>
#include <string>
#include <vector>

#include "analysis/results_table.h"
#include "experiments/train/train_loop.h"

namespace CLI {
class App;
}

namespace rala {

/// One configuration of the grid: an attention pattern plus attention options.
struct AblationConfig {
  std::string name;                   ///< e.g. "RRSS", "RRSS no_alpha"
  std::string pattern;                ///< e.g. "RRSS"
  std::vector<std::string> settings;  ///< e.g. {"alpha=0"}
};

/// A named grid and its training recipe.
struct AblationPreset {
  std::string name;
  std::string description;             ///< what subset, epochs, image size it uses (printed and stored)
  std::vector<AblationConfig> configs;
  TrainConfig train;                   ///< model, data, limits, epochs, optimiser settings (out/seed set per run)
  int64_t rank_images = 64;            ///< test images for the rank analysis
  int64_t seeds = 1;                   ///< default number of seeds (0, 1, …)
};

/// The configurations every full grid holds: SSSS, RRSS, RRRR, LLSS, FFSS, CCSS and the RALA component ablations on RRSS
/// (no α; no gate; neither; no RoPE; no LePE).
std::vector<AblationConfig> standard_ablation_configs();
/// "quick" (≤ 8 minutes on 2 cores), "full", or "tiny" (a two-configuration grid for tests). Throws naming the known
/// presets otherwise.
AblationPreset ablation_preset(const std::string& name);

/// Runs the grid into `out`: first every training (runs/<config>_seed<k>/ with checkpoint, metrics and train.log), as
/// `parallel` child processes of this executable (`rala --threads 1 train`) at a time (0 = one per core); then, per
/// configuration, the rank analysis of the test images (rank/<config>_seed<k>.h5) and the inference throughput with
/// all threads; ablation.h5 + ablation.csv are rewritten after each configuration. A run whose checkpoint exists is
/// resumed (a complete one is not retrained), so an interrupted ablation continues where it stopped. Must run inside
/// the `rala` executable (it starts /proc/self/exe). Returns the table.
ResultsTable run_ablation(const AblationPreset& preset, int64_t seeds, const std::string& out, bool quiet,
                          int64_t parallel = 0);

/// The ablation table as Markdown (config, params, GMACs, top-1, ranks, images/s).
void print_ablation_table(std::ostream& out, const ResultsTable& table);

/// The empty ablation table: the columns (names, kinds, units, descriptions) `rala ablate` writes.
ResultsTable make_ablation_table();

/// Mean ± sample std of values (std 0 for one value; NaN, NaN for none).
std::pair<double, double> mean_std(const std::vector<double>& values);

/// Registers the `ablate` subcommand on `app`.
void add_ablate_command(CLI::App& app);

}  // namespace rala
