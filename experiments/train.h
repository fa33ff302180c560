#pragma once
/// \file train.h
/// `rala train`.

namespace CLI {
class App;
}

namespace rala {

/// Registers the `train` subcommand on `app`.
void add_train_command(CLI::App& app);

}  // namespace rala
