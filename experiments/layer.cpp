#include "experiments/layer.h"

#include <CLI/CLI.hpp>

#include <iostream>

#include "analysis/h5_store.h"
#include "attention_variants/common.h"
#include "attention_variants/registry.h"
#include "experiments/device.h"
#include "experiments/runtime.h"
#include "models/checkpoint.h"

namespace rala {

namespace {

int64_t required_int(const h5::File& f, const std::string& name, const std::string& path) {
  TORCH_CHECK(f.has_attr("/", name), "'", path, "' has no root attribute '", name,
              "' (expected the attributes dim, heads, height, width)");
  return f.attr_int("/", name);
}

/// A file's state dict as stored.
StateDict read_state(const h5::File& f, const std::string& path) {
  TORCH_CHECK(f.is_group("state_dict"), "'", path, "' has no group 'state_dict' (expected state_dict/<official key>)");
  StateDict state;
  for (const auto& key : f.list("state_dict")) {
    TORCH_CHECK(f.is_dataset("state_dict/" + key), "'", path, "': state_dict/", key,
                " is a group; keys are datasets named by the official dotted key");
    state[key] = f.read("state_dict/" + key);
  }
  return state;
}

/// A Linear weight (O, I) reshaped to the layer's 1×1 conv (O, I, 1, 1) and back, so that official code written either
/// way loads; any other shape difference is left for load_state_dict to report.
StateDict fit_linear_and_conv(StateDict state, const StateDict& module_state) {
  for (auto& [key, t] : state) {
    auto it = module_state.find(key);
    if (it != module_state.end() && t.sizes() != it->second.sizes() && t.numel() == it->second.numel()) {
      const auto ms = it->second.sizes();
      const bool linear_to_conv = t.dim() == 2 && ms.size() == 4 && ms[2] == 1 && ms[3] == 1 &&
                                  t.size(0) == ms[0] && t.size(1) == ms[1];
      const bool conv_to_linear = ms.size() == 2 && t.dim() == 4 && t.size(2) == 1 && t.size(3) == 1 &&
                                  t.size(0) == ms[0] && t.size(1) == ms[1];
      if (linear_to_conv || conv_to_linear) t = t.reshape(ms);
    }
  }
  return state;
}

}  // namespace

LayerResult run_layer(const LayerArgs& a) {
  const Variant variant = variant_from_name(a.variant);
  const std::string name = variant_info(variant).name;
  h5::File f(a.input_h5, h5::Mode::read);
  if (f.has_attr("/", "variant")) {
    const auto stored = f.attr_string("/", "variant");
    TORCH_CHECK(variant_from_name(stored) == variant, "'", a.input_h5, "' is for variant '", stored,
                "', --variant is '", name, "'");
  }
  const int64_t dim = required_int(f, "dim", a.input_h5), heads = required_int(f, "heads", a.input_h5);
  const int64_t height = required_int(f, "height", a.input_h5), width = required_int(f, "width", a.input_h5);
  TORCH_CHECK(f.is_dataset("input"), "'", a.input_h5, "' has no dataset 'input' (expected (B, C, H, W) float32)");
  auto input = f.read("input");
  TORCH_CHECK(input.dim() == 4 && input.size(0) > 0 && input.size(1) == dim && input.size(2) == height &&
                  input.size(3) == width,
              "dataset 'input' of '", a.input_h5, "' must be (B, ", dim, ", ", height, ", ", width,
              ") as the attributes say, got ", input.sizes());
  TORCH_CHECK(input.scalar_type() == torch::kFloat32 || input.scalar_type() == torch::kFloat64, "dataset 'input' of '",
              a.input_h5, "' must be float32, got ", input.scalar_type());

  // Settings: learned tables sized from the file's state dict first, then the user's.
  StateShapes shapes;
  if (f.is_group("state_dict"))
    for (const auto& key : f.list("state_dict"))
      if (f.is_dataset("state_dict/" + key)) shapes[key] = f.shape("state_dict/" + key);
  auto options = AttentionOptions(dim, heads).settings(settings_from_state_shapes(variant, shapes));
  for (const auto& s : a.settings) {
    auto pair = split_setting(s);
    const auto dot = pair.first.find('.');
    if (dot != std::string::npos) {  // "variant.key": the scope must be this variant
      TORCH_CHECK(variant_from_name(pair.first.substr(0, dot)) == variant, "attention setting '", s,
                  "' is scoped to another variant than --variant ", name);
      pair.first = pair.first.substr(dot + 1);
    }
    options.set(pair.first, pair.second);
  }
  auto layer = make_attention(variant, options);
  layer->eval();
  load_state_dict(*layer,
                  fit_linear_and_conv(state_from_official(variant, read_state(f, a.input_h5)), state_dict(*layer)));

  const torch::Device device = run_device();
  layer->to(device);
  auto x = input.to(device, torch::kFloat32);
  auto ctx = AttentionContext::for_input(x, dim / heads);
  if (layer->uses_rope() && f.is_dataset("rope_sin")) {
    TORCH_CHECK(f.is_dataset("rope_cos"), "'", a.input_h5, "' has rope_sin but no rope_cos");
    ctx.rope_sin = f.read("rope_sin").to(device, torch::kFloat32);
    ctx.rope_cos = f.read("rope_cos").to(device, torch::kFloat32);
  }
  LayerResult r;
  {
    torch::NoGradGuard no_grad;
    r.output = layer->forward(x, ctx).cpu().contiguous();
  }
  r.settings = layer->settings().describe();
  if (!a.output_h5.empty()) {
    h5::AtomicPath target(a.output_h5);
    {
      h5::File out(target.partial(), h5::Mode::truncate);
      out.write("output", r.output);
      set_provenance(out);
      out.set_attr("/", "variant", name);
      out.set_attr("/", "settings", r.settings);
      out.set_attr("/", "input", a.input_h5);
    }
    target.commit();
  }
  return r;
}

void add_layer_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("layer", "Run one attention layer on an HDF5 input (official weights by key name)");
  auto args = std::make_shared<LayerArgs>();
  cmd->add_option("--variant", args->variant, "Attention variant (name or letter)")->required();
  cmd->add_option("--attn-opt", args->settings, "Setting key=value (repeatable); defaults otherwise");
  cmd->add_option("--input-h5", args->input_h5,
                  "Input file: attrs dim, heads, height, width [, variant]; state_dict/<key>; input (B, C, H, W); "
                  "[rope_sin, rope_cos]")
      ->required();
  cmd->add_option("--output-h5", args->output_h5, "Where to write dataset 'output' (B, C, H, W)")->required();
  cmd->callback([args] {
    auto r = run_layer(*args);
    std::cout << "wrote output " << r.output.sizes() << " of " << variant_info(variant_from_name(args->variant)).name
              << " (" << (r.settings.empty() ? "no settings" : r.settings) << ") to " << args->output_h5 << "\n";
  });
}

}  // namespace rala
