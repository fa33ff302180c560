#pragma once
/// \file demo.h
/// `rala demo`.

namespace CLI {
class App;
}

namespace rala {

/// Registers the `demo` subcommand on `app`.
void add_demo_command(CLI::App& app);

}  // namespace rala
