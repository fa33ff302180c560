#pragma once
/// \file rank.h
/// `rala rank`: the rank analysis of the KV buffer and the output features of every attention layer, for one or more
/// attention patterns, into one results file per pattern, and a comparison table.

#include <map>
#include <utility>
#include <string>
#include <vector>

#include "analysis/probe_recorder.h"
#include "experiments/model_loading.h"

namespace CLI {
class App;
}

namespace rala {

/// The options of `rala rank` (one results file per pattern).
struct RankArgs {
  ModelFlags model;
  std::vector<std::string> patterns;
  std::string data = "fashion-mnist";
  int64_t num_images = 16;
  int64_t batch_size = 8;
  int64_t image_size = 0;
  std::string probes = "kv_buffer,output,output_gated";
  /// "default", or "paper": the RALA paper's Figure 2 protocol, made sharper — float32 probes ranked per head with
  /// numpy's rule, the KV buffer with and without α on the same keys, the output before and after the gate, per head
  /// and for the whole map (sets `probes` to kPaperProbes and `tolerance` to numpy).
  std::string protocol = "default";
  std::string tolerance = "numpy";
  /// How spectra are computed: "gram" (float64 Gram matrix + dsyevd; the default) or "exact" (QR + dgesdd).
  std::string spectra = "gram";
  int64_t attention_top_k = 64;
  std::string out;
  /// "" = all images; "K/N" = shard K (0-based) of N: the K-th contiguous block of whole batches of the images, into
  /// its own file (`rala rank-merge` joins the shards into the single-run file).
  std::string shard;
  bool overwrite = false;
  bool quiet = false;
};

/// A shard of a rank analysis: index K (0-based) of count N.
struct ShardSpec {
  int64_t index = 0, count = 1;
  bool sharded() const { return count > 1 || index > 0; }
};
/// Parses "K/N" (0 ≤ K < N); "" = no sharding. Throws one line otherwise.
ShardSpec parse_shard(const std::string& spec);
/// Images [begin, end) of shard `s` of `total` images read in batches of `batch_size`: the K-th contiguous block of
/// whole batches (batches split as evenly as possible), so a shard runs exactly the batches a full run runs on those
/// images and its results are bit for bit the full run's rows. Throws when the shard would be empty.
std::pair<int64_t, int64_t> shard_range(const ShardSpec& s, int64_t total, int64_t batch_size);

/// The probes of `--protocol paper`.
constexpr const char* kPaperProbes =
    "kv_buffer,kv_buffer_unweighted,output,output_gated,output_all_heads,output_gated_all_heads";

/// Layer ("0.0") → probe ("kv_buffer", …) → mean ± std over images and heads.
using RankSummary = std::map<std::string, std::map<std::string, ProbeSummary>>;

/// Runs the rank analysis of one pattern ("" = the model's/checkpoint's) and writes the results file at `path`
/// atomically (nothing at `path` on error). Returns the summary printed by `rala rank`. If `analysed` is given, it
/// receives the model that was analysed (eval mode, no probe sinks), so a caller need not load it a second time.
RankSummary run_rank(const RankArgs& args, const std::string& pattern, const std::string& path,
                     LoadedModel* analysed = nullptr);

/// Registers the `rank` subcommand on app.
void add_rank_command(CLI::App& app);

/// Prints, per probe, a layers × runs table of mean ± std numerical rank and effective rank.
void print_rank_table(std::ostream& out, const std::vector<std::string>& run_names,
                      const std::vector<std::map<std::string, std::map<std::string, ProbeSummary>>>& summaries);

}  // namespace rala
