#pragma once
/// \file rank_merge.h
/// `rala rank-merge SHARDS… --out F.h5`: joins the shard files of one rank analysis (`rala rank --shard K/N`, run as
/// separate jobs, e.g. a Slurm array) into the results file a single run writes. The shards must be one analysis:
/// the same model, pattern, settings, weights, dataset, image size, probes, tolerance, protocol, batch size and
/// shard count, every layer and probe with the same attributes and row shapes, and between them every shard exactly
/// once (no image twice, none missing). The first difference is one line naming it. The merged file is written
/// atomically; its datasets equal a single run's bit for bit, and its summary table is recomputed from it.
///
///   rala rank-merge runs/rank/ravlt_t_RRSS.shard-*-of-4.h5 --out runs/rank/ravlt_t_RRSS.h5

#include <string>
#include <vector>

#include "experiments/rank.h"

namespace CLI {
class App;
}

namespace rala {

/// Merges `shards` (any order) into `out` (written atomically; an existing `out` needs `overwrite`). Prints one
/// progress line per shard on stderr unless `quiet`. Returns the summary recomputed from the merged file.
RankSummary merge_rank_shards(const std::vector<std::string>& shards, const std::string& out, bool overwrite,
                              bool quiet);

/// Registers the `rank-merge` subcommand on app.
void add_rank_merge_command(CLI::App& app);

}  // namespace rala
