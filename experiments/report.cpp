#include "experiments/report.h"

#include <CLI/CLI.hpp>

namespace rala {

void add_report_command(CLI::App& app) {}  // placeholder until the subcommand lands

}  // namespace rala
