#include "experiments/ablate.h"

#include <CLI/CLI.hpp>

namespace rala {

void add_ablate_command(CLI::App& app) {}  // placeholder until the subcommand lands

}  // namespace rala
