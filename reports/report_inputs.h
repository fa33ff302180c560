#pragma once
/// \file report_inputs.h
/// What `rala report` reads: results files of every kind the toolkit writes, loaded into plain structs (no tensors)
/// so the figure, table and page code stays free of HDF5 and LibTorch.
///
///   auto input = rala::report::load_input("results/ravlt_micro_RRSS.h5");   // throws naming the file if unusable
///   if (input.kind == rala::report::InputKind::rank) { ... input.rank.layers ... }
///
/// Kinds: a rank file (`/layers`, from `rala rank`) or a `/table` file, classified by the root attr `table_kind`
/// ("ablation", "bench", "bench_attention", "train") when present, else by its columns.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "analysis/results_table.h"

namespace rala::report {

enum class InputKind { rank, ablation, bench, bench_attention, train, table };

/// "rank", "ablation", "bench", "bench_attention", "train", "table".
const char* kind_name(InputKind kind);

/// Mean and sample standard deviation (n − 1; 0 for one value) of some values; mean and std NaN when count is 0.
struct MeanStd {
  int64_t count = 0;
  double mean = 0, std = 0;
};
/// Over the finite values[i] with ok[i] (all when ok is empty).
MeanStd mean_std(const std::vector<double>& values, const std::vector<uint8_t>& ok = {});

/// One probe of one layer: per (image, head) values, row-major (n, heads). Entries whose decomposition failed
/// (status != 0) have ok == 0 and are left out of every statistic.
struct ProbeData {
  int64_t images = 0, heads = 0;
  int64_t k = 0;                        ///< singular values per matrix (min of the probe's two dims)
  std::vector<int32_t> rank;            ///< (n, heads)
  std::vector<double> effective_rank;   ///< (n, heads)
  std::vector<uint8_t> ok;              ///< (n, heads): 1 when status == 0 (or no status dataset)
  std::string path;                     ///< HDF5 group, e.g. "/layers/0.0/kv_buffer" (spectra are read lazily)
  /// Numerical rank, mean ± std over images and heads (status-ok entries).
  MeanStd rank_stat() const;
  /// Effective rank, mean ± std over images and heads (status-ok entries).
  MeanStd effective_rank_stat() const;
};

/// One attention layer of a rank file (attrs of /layers/<stage>.<block>).
struct LayerData {
  std::string name;  ///< "<stage>.<block>"
  int64_t stage = 0, block = 0;
  std::string variant;
  int64_t heads = 0, head_dim = 0, tokens = 0;
  std::map<std::string, ProbeData> probes;  ///< probe name → data (probes with rank metrics only)
};

struct RankData {
  std::vector<LayerData> layers;  ///< sorted by (stage, block)
  int64_t num_images = 0;
  /// The layer called `name`, or nullptr.
  const LayerData* layer(const std::string& name) const;
};

/// A loaded input file.
struct InputFile {
  std::string path;
  InputKind kind = InputKind::table;
  /// Root attributes as text (provenance: command_line, git_commit, tool_version, torch_version, created_utc, …).
  std::vector<std::pair<std::string, std::string>> attrs;
  std::string label;  ///< short name for legends: "<pattern>[ <settings>]" for rank files, else the file stem
  RankData rank;      ///< kind == rank
  ResultsTable table; ///< every other kind
  /// A root attribute as text, or "" when absent.
  std::string attr(const std::string& name) const;
};

/// Loads `path`. Throws std::runtime_error with one line naming the file when it is missing, not HDF5, or neither a
/// rank file nor a table file.
InputFile load_input(const std::string& path);

/// Makes the labels of rank files unique and informative: "RRSS", "RRSS alpha=0", prefixed with the model when the
/// files' models differ, suffixed with the file stem when still ambiguous.
void assign_labels(std::vector<InputFile>& inputs);

/// Singular values of one probe, normalised per matrix by σ_1: (images·heads) rows of k values, row-major. Rows
/// with status != 0 or σ_1 == 0 are left out.
std::vector<std::vector<double>> normalised_spectra(const InputFile& file, const ProbeData& probe);

}  // namespace rala::report
