#pragma once
/// \file rank.h
/// `rala rank`: the rank analysis of the KV buffer and the output features of every attention layer, for one or more
/// attention patterns, into one results file per pattern, and a comparison table.

#include <map>
#include <string>
#include <vector>

#include "analysis/probe_recorder.h"

namespace CLI {
class App;
}

namespace rala {

/// Registers the `rank` subcommand on app.
void add_rank_command(CLI::App& app);

/// Prints, per probe, a layers × runs table of mean ± std numerical rank and effective rank.
void print_rank_table(std::ostream& out, const std::vector<std::string>& run_names,
                      const std::vector<std::map<std::string, std::map<std::string, ProbeSummary>>>& summaries);

}  // namespace rala
