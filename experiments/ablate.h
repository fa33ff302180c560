#pragma once
/// \file ablate.h
/// `rala ablate`.

namespace CLI {
class App;
}

namespace rala {

/// Registers the `ablate` subcommand on `app`.
void add_ablate_command(CLI::App& app);

}  // namespace rala
