#pragma once
/// \file presets.h
/// Model presets as plain functions returning options. CLI names are lower-case (`ravlt_t`); `RAVLT_T` is accepted.
///
/// Usage:
///   rala::Ravlt model(rala::ravlt_preset("ravlt_t").attn_pattern("RRRR"));

#include <string>
#include <vector>

#include "models/deit.h"
#include "models/macs.h"
#include "models/ravlt.h"

namespace rala {

/// Official RAVLT-T/S/B/L (qhfan/RALA factories RAVLT_T … RAVLT_L): 14,897,768 / 25,591,208 / 48,241,288 / 95,242,440
/// parameters.
RavltOptions ravlt_t();
RavltOptions ravlt_s();
RavltOptions ravlt_b();
RavltOptions ravlt_l();
/// The micro configuration of the golden files (embed 16,32,64,128; depths 1,1,2,1; heads 1,2,4,4; projection 64;
/// 10 classes; drop path 0) — small enough for 28–64 px inputs on a CPU.
RavltOptions ravlt_micro();
/// By name (case-insensitive); throws listing the known presets.
RavltOptions ravlt_preset(const std::string& name);
/// Names of the RAVLT presets.
std::vector<std::string> ravlt_preset_names();
/// Every preset name: the RAVLT ones, then deit_tiny, deit_small.
std::vector<std::string> model_preset_names();
/// Whether `name` (case-insensitive) is a DeiT preset.
bool is_deit_preset(const std::string& name);

/// One attention layer of a model: where it sits and what it is.
struct AttentionLayerInfo {
  int64_t stage = 0, block = 0;
  Variant variant;
  int64_t heads = 0, head_dim = 0;
  std::string settings;  ///< the layer's effective settings, Settings::describe()
  /// "<stage>.<block>", the layer's name in results files.
  std::string name() const { return std::to_string(stage) + "." + std::to_string(block); }
};

/// A model of either family behind one face, built from a preset name, an attention pattern and attention settings.
///   auto m = rala::make_model("ravlt_t", "RRRR", {"alpha=0"});
///   auto logits = m.forward(images);
class AnyModel {
 public:
  /// Checks a preset name, a pattern and settings as the constructor would, without building the model; throws the
  /// constructor's one-line errors.
  static void check_pattern_and_settings(const std::string& preset, const std::string& pattern,
                                         const std::vector<std::string>& settings);
  /// pattern "" = the preset's default (RRSS for RAVLT, S for DeiT); num_classes < 0 = the preset's.
  /// drop_path_rate < 0 = the preset's (stochastic depth, active in training mode only). depth > 0: that many blocks
  /// (DeiT presets only; 0 = the preset's 12).
  AnyModel(const std::string& preset, const std::string& pattern = "", const std::vector<std::string>& settings = {},
           int64_t num_classes = -1, double drop_path_rate = -1, int64_t depth = 0);
  torch::Tensor forward(const torch::Tensor& images);
  ModelMacs macs(int64_t height, int64_t width) const;
  int64_t parameters() const { return count_parameters(*module_); }
  /// Every attention layer, in forward order.
  std::vector<AttentionLayerInfo> attention_layers() const;
  /// Attach per-layer probe sinks (stage, block) → sink or nullptr.
  void set_probe_sinks(std::function<ProbeSink*(int64_t, int64_t)> sinks);
  const std::string& preset() const { return preset_; }
  /// The pattern in letters, one per stage ("RRSS"), whichever spelling it was given in.
  const std::string& pattern() const { return pattern_; }
  const std::vector<std::string>& settings() const { return settings_; }
  /// The default input side (224 for the ImageNet presets, 64 for ravlt_micro).
  int64_t default_image_size() const;
  std::shared_ptr<torch::nn::Module> module() const { return module_; }
  bool is_ravlt() const { return !ravlt_.is_empty(); }
  Ravlt& ravlt() { return ravlt_; }
  Deit& deit() { return deit_; }

 private:
  std::string preset_, pattern_;
  std::vector<std::string> settings_;
  Ravlt ravlt_{nullptr};
  Deit deit_{nullptr};
  std::shared_ptr<torch::nn::Module> module_;
};

}  // namespace rala
