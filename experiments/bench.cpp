#include "experiments/bench.h"

#include <CLI/CLI.hpp>

namespace rala {

void add_bench_command(CLI::App& app) {}  // placeholder until the subcommand lands

}  // namespace rala
