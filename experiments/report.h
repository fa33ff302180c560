#pragma once
/// \file report.h
/// `rala report`.

namespace CLI {
class App;
}

namespace rala {

/// Registers the `report` subcommand on `app`.
void add_report_command(CLI::App& app);

}  // namespace rala
