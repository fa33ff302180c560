#include "experiments/demo.h"

#include <CLI/CLI.hpp>

namespace rala {

void add_demo_command(CLI::App& app) {}  // placeholder until the subcommand lands

}  // namespace rala
