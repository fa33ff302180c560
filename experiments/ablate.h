#pragma once
/// \file ablate.h
/// `rala ablate`: a grid of trainings (a grid file, experiments/grid.h), each followed by a rank analysis of its test
/// images and an inference-throughput measurement, summarised in one table (DIR/ablation.h5 in the /table convention +
/// DIR/ablation.csv).
///
///   auto grid = rala::load_grid("my-grid.yaml");           // or rala::grid_preset("quick")
///   auto table = rala::run_ablation(grid, "runs/ablation", /*quiet=*/false);

#include <ostream>
#include <utility>
#include <string>
#include <vector>

#include "analysis/results_table.h"
#include "experiments/grid.h"

namespace CLI {
class App;
}

namespace rala {

/// Runs the grid into `out`: first every training (runs/<config>_seed<k>/ with checkpoint, metrics and train.log), as
/// `parallel` child processes of this executable (`rala --threads 1 train`) at a time (0 = the grid's jobs, else one
/// per core); then, per configuration, the rank analysis of the test images (rank/<config>_seed<k>.h5) and the
/// inference throughput; ablation.h5 + ablation.csv are rewritten after each configuration. A run whose checkpoint
/// exists is resumed (a complete one is not retrained), so an interrupted ablation continues where it stopped. The
/// expanded grid is kept in DIR/grid.json (and the file as given in DIR/grid.yaml): a different grid under the same DIR
/// is refused, naming the configurations that differ, unless `overwrite` (their runs are then deleted and retrained).
/// Must run inside the `rala` executable (it starts /proc/self/exe). Returns the table.
ResultsTable run_ablation(const AblationGrid& grid, const std::string& out, bool quiet, bool overwrite = false,
                          int64_t parallel = 0);

/// The ablation table as Markdown (config, params, GMACs, top-1, ranks, images/s).
void print_ablation_table(std::ostream& out, const ResultsTable& table);

/// The empty ablation table: the columns (names, kinds, units, descriptions) `rala ablate` writes for these probes.
ResultsTable make_ablation_table(const std::vector<std::string>& probes = GridAnalysis().probes,
                                 const std::vector<int64_t>& summary_stages = GridAnalysis().summary_stages);

/// Mean ± sample std of values (std 0 for one value; NaN, NaN for none).
std::pair<double, double> mean_std(const std::vector<double>& values);

/// Registers the `ablate` subcommand on `app`.
void add_ablate_command(CLI::App& app);

}  // namespace rala
