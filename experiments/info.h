#pragma once
/// \file info.h
/// `rala info`: versions, threads, the BLAS in use and the registered attention variants.

#include <ostream>

namespace CLI {
class App;
}

namespace rala {

/// Prints the information block to `out`.
void print_info(std::ostream& out);
/// Prints every preset with its parameters and GMACs at its default size.
void print_presets(std::ostream& out);
/// Registers the `info` subcommand on app.
void add_info_command(CLI::App& app);

}  // namespace rala
