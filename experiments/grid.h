#pragma once
/// \file grid.h
/// Ablation grids as files. A grid (YAML, written by hand, with comments) names the model, the data and image size,
/// every `rala train` setting (defaults = rala train's), the configurations — listed, or as the product of attention
/// patterns and settings — the seeds, what to analyse after training and whether to time inference. The presets of
/// `rala ablate --preset NAME` are grid files shipped in experiments/grids/ (compiled into the binary).
///
///   name: my-grid
///   model: ravlt_micro
///   data: fashion-mnist        # fashion-mnist | synthetic | a folder with train/ and val/ (or test/)
///   image_size: 28
///   train: {epochs: 30, train_limit: 8192, lr: 2.0e-3}
///   seeds: 3                   # 0, 1, 2   (or a list: [0, 4, 7])
///   analysis: {probes: [kv_buffer, output, output_gated], images: 64, summary_stages: [0, 1], time_inference: true}
///   configs:
///     - {name: RRSS, pattern: RRSS}
///     - {name: RRSS no_alpha, pattern: RRSS, settings: [rala.alpha=0]}
///   product:                   # adds patterns × settings (names: "<pattern> <settings>")
///     patterns: [RRSS, "transnormer_diag,transnormer_diag,transnormer,transnormer"]
///     settings: [[], [gate=0]]
///
/// Usage:
///   auto grid = rala::load_grid("my-grid.yaml");      // throws "my-grid.yaml:7: key 'lr': ..." before anything runs
///   auto quick = rala::grid_preset("quick");

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/train/train_loop.h"

namespace rala {

/// One configuration of a grid: an attention pattern plus attention settings.
struct AblationConfig {
  std::string name;                   ///< e.g. "RRSS", "RRSS no_alpha"
  std::string pattern;                ///< e.g. "RRSS" (letters or comma-separated names)
  std::vector<std::string> settings;  ///< e.g. {"rala.alpha=0"}
};

/// What runs after each training.
struct GridAnalysis {
  std::vector<std::string> probes = {"kv_buffer", "output", "output_gated"};  ///< ranked on the test images
  int64_t images = 64;                       ///< test images for the rank analysis
  std::vector<int64_t> summary_stages = {0, 1};  ///< the layers of these stages go into the table's summary columns
  bool time_inference = true;                ///< inference images/s in the table
};

/// A grid: a training recipe, configurations, seeds and the analysis.
struct AblationGrid {
  std::string name;
  std::string description;             ///< model, data, limits, epochs … (printed and stored)
  std::string source;                  ///< the file it came from ("preset:quick" for a shipped one)
  std::string text;                    ///< the YAML text as read
  std::vector<AblationConfig> configs;
  TrainConfig train;                   ///< model, data, image size, every training setting (out/seed set per run)
  std::vector<int64_t> seeds = {0};
  GridAnalysis analysis;
  int64_t jobs = 0;                    ///< trainings at once, one thread each (0 = one per core)

  /// The canonical description of configuration i (pattern, settings, training recipe, seeds, analysis) as JSON: two
  /// grids that would run configuration NAME differently give different strings.
  std::string config_spec(size_t i) const;
  /// One line per run: "<config> seed <s>: pattern …, settings …".
  std::vector<std::string> runs() const;
};

/// Parses a grid from YAML text. `file` names the source in messages: every problem — an unknown key, a wrong type,
/// an unknown variant or setting, an empty product, a duplicate configuration name — is one line
/// "FILE:LINE: key 'K': what was wrong (expected …)", raised before anything runs.
AblationGrid parse_grid(const std::string& text, const std::string& file);
/// Reads and parses a grid file.
AblationGrid load_grid(const std::string& path);
/// A shipped grid: "quick", "full", "every_variant", "tiny" (for tests). Throws naming the known ones.
AblationGrid grid_preset(const std::string& name);
/// Names of the shipped grids.
std::vector<std::string> grid_preset_names();
/// The YAML text of a shipped grid (the file in experiments/grids/).
std::string grid_preset_text(const std::string& name);

}  // namespace rala
