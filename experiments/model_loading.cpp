#include "experiments/model_loading.h"

#include <nlohmann/json.hpp>

#include "experiments/device.h"
#include "experiments/runtime.h"
#include "models/checkpoint.h"

namespace rala {

void ModelFlags::add_to(CLI::App& cmd, bool with_pattern) {
  cmd.add_option("--model", model, "Preset: ravlt_t ravlt_s ravlt_b ravlt_l ravlt_micro deit_tiny deit_small")
      ->capture_default_str();
  if (with_pattern) cmd.add_option("--attn-pattern", pattern, "Attention variant per stage: letters (RRSS) or names, comma-separated");
  cmd.add_option("--attn-opt", settings, "Attention setting [variant.]key=value (repeatable), e.g. alpha=0 or rala.gate=0");
  cmd.add_option("--checkpoint", checkpoint, "Weights: own checkpoint or official RAVLT .pth (default: random)");
  cmd.add_option("--checkpoint-key", checkpoint_key, "Which state dict of an official checkpoint: model | model_ema")
      ->check(CLI::IsMember({"model", "model_ema"}));
  cmd.add_option("--seed", seed, "Seed for random weights")->capture_default_str();
}

std::string ModelFlags::weights_description() const {
  if (checkpoint.empty()) return "random:seed=" + std::to_string(seed);
  return checkpoint + (checkpoint_key.empty() ? "" : " [" + checkpoint_key + "]");
}

LoadedModel load_model(const ModelFlags& flags) {
  LoadedModel out;
  std::string pattern = flags.pattern;
  std::vector<std::string> settings = flags.settings;
  int64_t num_classes = -1;
  Checkpoint ckpt;
  if (!flags.checkpoint.empty()) {
    ckpt = read_checkpoint(flags.checkpoint, flags.checkpoint_key);
    auto head = ckpt.state.find("head.bias");
    if (head != ckpt.state.end()) num_classes = head->second.size(0);
    if (!ckpt.meta.empty()) {
      auto meta = nlohmann::json::parse(ckpt.meta, nullptr, /*allow_exceptions=*/false);
      TORCH_CHECK(!meta.is_discarded(), "checkpoint '", flags.checkpoint, "' has a 'meta' entry that is not JSON");
      if (pattern.empty() && meta.contains("attn_pattern")) pattern = meta["attn_pattern"].get<std::string>();
      if (settings.empty() && meta.contains("attn_settings"))
        settings = meta["attn_settings"].get<std::vector<std::string>>();
      if (meta.contains("classes")) out.classes = meta["classes"].get<std::vector<std::string>>();
    }
  }
  torch::manual_seed(flags.seed);
  out.model = std::make_unique<AnyModel>(flags.model, pattern, settings, num_classes);
  if (!flags.checkpoint.empty()) {
    std::set<std::string> optional;  // the deterministic RoPE buffers may be absent
    for (const auto& b : out.model->module()->named_buffers())
      if (b.key().find("RoPE.angle") != std::string::npos) optional.insert(b.key());
    try {
      load_state_dict(*out.model->module(), ckpt.state, optional);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "checkpoint '", flags.checkpoint, "' does not fit ", flags.model, " (pattern ",
                  out.model->pattern(), "): ", e.what_without_backtrace());
    }
  }
  out.model->module()->eval();
  out.model->module()->to(run_device());  // --device: weights and buffers (RoPE angles) there; inputs follow
  return out;
}

torch::Device model_device(const AnyModel& model) {
  for (const auto& p : model.module()->parameters()) return p.device();
  return torch::Device(torch::kCPU);
}

std::string model_meta_json(const AnyModel& model, const std::vector<std::string>& classes) {
  nlohmann::json meta = {{"preset", model.preset()},        {"attn_pattern", model.pattern()},
                         {"attn_settings", model.settings()}, {"classes", classes},
                         {"tool_version", tool_version()},    {"git_commit", git_commit()}};
  return meta.dump();
}

}  // namespace rala
