#pragma once
/// \file bench.h
/// `rala bench`.

namespace CLI {
class App;
}

namespace rala {

/// Registers the `bench` subcommand on `app`.
void add_bench_command(CLI::App& app);

}  // namespace rala
