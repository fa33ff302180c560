#pragma once
/// \file layer.h
/// `rala layer`: one attention layer on an HDF5 input, for cross-implementation checks. The input file holds the
/// attributes `dim`, `heads`, `height`, `width` (and optionally `variant`, which must match --variant), the datasets
/// `state_dict/<official key>` (strict: every key of the layer present, none extra), `input` (B, C, H, W) float32,
/// and, for variants that use RoPE, optionally `rope_sin` / `rope_cos` (N, d). The layer runs in fp32 eval mode and
/// `output` (B, C, H, W) is written atomically.
///
/// Usage:
///   rala layer --variant rala --input-h5 rala_attention.h5 --output-h5 out.h5
///   rala layer --variant transnormer_diag --attn-opt chunk=16 --input-h5 diag.h5 --output-h5 out.h5

#include <string>
#include <vector>

#include <torch/torch.h>

namespace CLI {
class App;
}

namespace rala {

struct LayerArgs {
  std::string variant, input_h5, output_h5;
  std::vector<std::string> settings;
};

/// What run_layer computed.
struct LayerResult {
  torch::Tensor output;   ///< (B, C, H, W) float32
  std::string settings;   ///< the layer's effective settings
};

/// Reads the input file, builds and loads the layer, runs it; writes the output file when a_output_h5 is set.
LayerResult run_layer(const LayerArgs& a);

/// Registers the `layer` subcommand on app.
void add_layer_command(CLI::App& app);

}  // namespace rala
