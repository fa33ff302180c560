#include "models/presets.h"

#include <cctype>

namespace rala {

namespace {
std::string lower(const std::string& s) {
  std::string out;
  for (char c : s) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

RavltOptions ravlt_t() { return RavltOptions(); }

RavltOptions ravlt_s() {
  return RavltOptions().embed_dims({64, 128, 320, 512}).depths({3, 5, 9, 3}).heads({1, 2, 5, 8}).drop_path_rate(0.15);
}

RavltOptions ravlt_b() {
  return RavltOptions()
      .embed_dims({96, 192, 384, 512})
      .depths({4, 6, 12, 6})
      .heads({1, 2, 6, 8})
      .drop_path_rate(0.4)
      .layer_init_values({1, 1, 1e-6, 1e-6});
}

RavltOptions ravlt_l() {
  return RavltOptions()
      .embed_dims({96, 192, 448, 640})
      .depths({4, 7, 19, 8})
      .heads({1, 2, 7, 10})
      .drop_path_rate(0.55)
      .layer_init_values({1e-6, 1e-6, 1e-6, 1e-6});
}

RavltOptions ravlt_micro() {
  return RavltOptions()
      .embed_dims({16, 32, 64, 128})
      .depths({1, 1, 2, 1})
      .heads({1, 2, 4, 4})
      .projection(64)
      .num_classes(10)
      .drop_path_rate(0.0);
}

std::vector<std::string> ravlt_preset_names() { return {"ravlt_t", "ravlt_s", "ravlt_b", "ravlt_l", "ravlt_micro"}; }

RavltOptions ravlt_preset(const std::string& name) {
  const std::string n = lower(name);
  if (n == "ravlt_t") return ravlt_t();
  if (n == "ravlt_s") return ravlt_s();
  if (n == "ravlt_b") return ravlt_b();
  if (n == "ravlt_l") return ravlt_l();
  if (n == "ravlt_micro") return ravlt_micro();
  std::string known;
  for (const auto& k : model_preset_names()) known += (known.empty() ? "" : ", ") + k;
  TORCH_CHECK(false, "unknown model preset '", name, "' (expected one of: ", known, ")");
}

std::vector<std::string> model_preset_names() {
  auto names = ravlt_preset_names();
  names.push_back("deit_tiny");
  names.push_back("deit_small");
  return names;
}

bool is_deit_preset(const std::string& name) {
  const auto n = lower(name);
  return n == "deit_tiny" || n == "deit_small";
}

void AnyModel::check_pattern_and_settings(const std::string& preset, const std::string& pattern,
                                          const std::vector<std::string>& settings) {
  const std::string p = lower(preset);
  if (is_deit_preset(p)) {
    const auto o = p == "deit_tiny" ? deit_tiny() : deit_small();
    distribute_settings(parse_pattern(pattern.empty() ? o.attn_pattern() : pattern, 1), settings,
                        DeitImpl::harness_settings(o));
    return;
  }
  const auto o = ravlt_preset(p);
  distribute_settings(parse_pattern(pattern.empty() ? o.attn_pattern() : pattern, o.embed_dims().size()), settings);
}

AnyModel::AnyModel(const std::string& preset, const std::string& pattern, const std::vector<std::string>& settings,
                   int64_t num_classes, double drop_path_rate, int64_t depth)
    : preset_(lower(preset)), settings_(settings) {
  if (is_deit_preset(preset_)) {
    auto o = preset_ == "deit_tiny" ? deit_tiny() : deit_small();
    if (!pattern.empty()) o.attn_pattern(pattern);
    if (num_classes >= 0) o.num_classes(num_classes);
    if (drop_path_rate >= 0) o.drop_path_rate(drop_path_rate);
    if (depth > 0) o.depth(depth);
    o.attn_settings(settings);
    deit_ = Deit(o);
    pattern_ = pattern_letters({deit_->variant()});
    module_ = deit_.ptr();
  } else {
    auto o = ravlt_preset(preset_);
    TORCH_CHECK(depth <= 0, "a depth (", depth, ") applies to the DeiT presets only, not to ", preset_);
    if (!pattern.empty()) o.attn_pattern(pattern);
    if (num_classes >= 0) o.num_classes(num_classes);
    if (drop_path_rate >= 0) o.drop_path_rate(drop_path_rate);
    o.attn_settings(settings);
    ravlt_ = Ravlt(o);
    pattern_ = pattern_letters(ravlt_->stage_variants());
    module_ = ravlt_.ptr();
  }
}

torch::Tensor AnyModel::forward(const torch::Tensor& images) {
  return is_ravlt() ? ravlt_->forward(images) : deit_->forward(images);
}

ModelMacs AnyModel::macs(int64_t height, int64_t width) const {
  return is_ravlt() ? count_macs(*ravlt_, height, width) : count_macs(*deit_, height, width);
}

void AnyModel::set_probe_sinks(std::function<ProbeSink*(int64_t, int64_t)> sinks) {
  if (is_ravlt())
    ravlt_->probe_sinks = std::move(sinks);
  else
    deit_->probe_sinks = std::move(sinks);
}

std::vector<AttentionLayerInfo> AnyModel::attention_layers() const {
  std::vector<AttentionLayerInfo> layers;
  auto add = [&](int64_t stage, int64_t block, const AttentionBase& attn) {
    layers.push_back({stage, block, attn.variant(), attn.heads(), attn.dim() / attn.heads(), attn.settings().describe()});
  };
  if (is_ravlt()) {
    for (const auto& stage : ravlt_->stages) {
      int64_t j = 0;
      for (const auto& block : *stage->blocks) add(stage->stage, j++, *block->as<RavltBlock>()->attn);
    }
  } else {
    for (size_t i = 0; i < deit_->blocks.size(); ++i) add(0, static_cast<int64_t>(i), *deit_->blocks[i]->attn);
  }
  return layers;
}

int64_t AnyModel::default_image_size() const { return preset_ == "ravlt_micro" ? 64 : 224; }


}  // namespace rala
