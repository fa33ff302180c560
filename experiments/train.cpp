#include "experiments/train.h"

#include <CLI/CLI.hpp>

namespace rala {

void add_train_command(CLI::App& app) {}  // placeholder until the subcommand lands

}  // namespace rala
