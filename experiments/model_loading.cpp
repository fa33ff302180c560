#include "experiments/model_loading.h"

#include <nlohmann/json.hpp>

#include "experiments/device.h"
#include <set>

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
  cmd.add_option("--depth", depth, "DeiT presets: number of blocks (default: the checkpoint's, else 12)")
      ->check(CLI::PositiveNumber);
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
  int64_t depth = flags.depth;
  if (!flags.checkpoint.empty() && is_deit_preset(flags.model)) {
    const int64_t stored = deit_depth_of(ckpt.state, flags.checkpoint);
    TORCH_CHECK(depth == 0 || stored == 0 || depth == stored, "checkpoint '", flags.checkpoint, "' has ", stored,
                " DeiT blocks, --depth asks for ", depth);
    if (depth == 0) depth = stored;
  }
  torch::manual_seed(flags.seed);
  out.model = std::make_unique<AnyModel>(flags.model, pattern, settings, num_classes, -1, depth);
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

int64_t deit_depth_of(const std::map<std::string, torch::Tensor>& state, const std::string& source) {
  std::set<int64_t> blocks;
  for (const auto& entry : state) {
    const auto& key = entry.first;
    if (key.rfind("blocks.", 0) != 0) continue;
    const auto dot = key.find('.', 7);
    const auto index = key.substr(7, dot == std::string::npos ? std::string::npos : dot - 7);
    TORCH_CHECK(!index.empty() && index.size() < 10 && index.find_first_not_of("0123456789") == std::string::npos,
                "checkpoint '", source, "': key '", key, "' has no block number after 'blocks.'");
    blocks.insert(std::stoll(index));
  }
  if (blocks.empty()) return 0;
  const auto n = static_cast<int64_t>(blocks.size());
  TORCH_CHECK(*blocks.rbegin() == n - 1, "checkpoint '", source, "': DeiT blocks must be numbered 0 to n-1, found ", n,
              " blocks numbered ", *blocks.begin(), " to ", *blocks.rbegin());
  return n;
}

std::string model_meta_json(const AnyModel& model, const std::vector<std::string>& classes) {
  nlohmann::json meta = {{"preset", model.preset()},        {"attn_pattern", model.pattern()},
                         {"attn_settings", model.settings()}, {"classes", classes},
                         {"tool_version", tool_version()},    {"git_commit", git_commit()}};
  return meta.dump();
}

}  // namespace rala
