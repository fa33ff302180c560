#pragma once
/// \file predict.h
/// `rala predict`: classify images (top-k per image) or turn an HDF5 `input` dataset into `logits`.

namespace CLI {
class App;
}

namespace rala {

/// Registers the `predict` subcommand on app.
void add_predict_command(CLI::App& app);

}  // namespace rala
