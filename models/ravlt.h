#pragma once
/// \file ravlt.h
/// RAVLT with the official module tree and state-dict key names (qhfan/RALA classfication/RALA.py), any attention
/// variant per stage. See ../shared/spec/variants.md §7.
///
/// Usage:
///   rala::Ravlt model(rala::ravlt_t());                                    // official RRSS
///   auto logits = model->forward(images);                                  // (B, 3, H, W) → (B, classes)

#include <torch/torch.h>

#include <vector>

#include "attention_variants/batch_norm.h"
#include "attention_variants/registry.h"

namespace rala {

struct RavltOptions {
  TORCH_ARG(std::vector<int64_t>, embed_dims) = std::vector<int64_t>{64, 128, 256, 512};
  TORCH_ARG(std::vector<int64_t>, depths) = std::vector<int64_t>{2, 2, 6, 2};
  TORCH_ARG(std::vector<int64_t>, heads) = std::vector<int64_t>{1, 2, 4, 8};
  TORCH_ARG(double, mlp_ratio) = 3.5;
  TORCH_ARG(int64_t, projection) = 1024;
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_chans) = 3;
  TORCH_ARG(double, drop_path_rate) = 0.1;
  /// γ init per stage (layer-scale is always on, as in every official preset).
  TORCH_ARG(std::vector<double>, layer_init_values) = std::vector<double>{1, 1, 1, 1};
  /// One letter per stage (S, L, F, C, R). "RRSS" is the official RAVLT.
  TORCH_ARG(std::string, attn_pattern) = "RRSS";
  /// Options applied to every attention layer (dim and heads are set per stage).
  TORCH_ARG(std::vector<std::string>, attn_settings) = std::vector<std::string>{};
};

/// LayerNorm over channels of a (B, C, H, W) map (official `LayerNorm2d`, child `norm`, eps 1e-6).
class LayerNorm2dImpl : public torch::nn::Module {
 public:
  explicit LayerNorm2dImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(LayerNorm2d);

/// ConvFFN: fc1 (1×1) → GELU → x + dwconv₃ₓ₃(x) → fc2 (1×1).
class ConvFfnImpl : public torch::nn::Module {
 public:
  ConvFfnImpl(int64_t dim, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d fc1{nullptr}, dwconv{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ConvFfn);

/// x ← x + pos(x); x ← x + DropPath(γ1 ⊙ attn(norm1 x)); x ← x + DropPath(γ2 ⊙ ffn(norm2 x)).
class RavltBlockImpl : public torch::nn::Module {
 public:
  RavltBlockImpl(Variant variant, const AttentionOptions& attn_options, int64_t ffn_dim, double drop_path,
                 double layer_init_value);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx);
  torch::nn::Conv2d pos{nullptr};
  LayerNorm2d norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<AttentionBase> attn;
  ConvFfn ffn{nullptr};
  torch::Tensor gamma_1, gamma_2;
  double drop_path;
};
TORCH_MODULE(RavltBlock);

/// Stochastic depth: in training, zeroes a sample's residual with probability p and rescales the rest by 1/(1−p).
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

/// Holds the official `angle` buffer (key `layers.i.RoPE.angle`).
class RopeBufferImpl : public torch::nn::Module {
 public:
  explicit RopeBufferImpl(int64_t head_dim);
  torch::Tensor angle;
};
TORCH_MODULE(RopeBuffer);

/// 3×3 stride-2 conv + BN (`reduction`, `norm`).
class PatchMergingImpl : public torch::nn::Module {
 public:
  PatchMergingImpl(int64_t in, int64_t out);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d reduction{nullptr};
  BatchNorm2d norm{nullptr};
};
TORCH_MODULE(PatchMerging);

/// One stage (`layers.i`): `RoPE` buffer, `blocks`, and for i < 3 the `downsample`.
class RavltStageImpl : public torch::nn::Module {
 public:
  RavltStageImpl(const RavltOptions& o, int64_t stage, Variant variant, const std::vector<SettingPair>& settings,
                 const std::vector<double>& drop_paths);
  torch::Tensor forward(const torch::Tensor& x, const std::function<ProbeSink*(int64_t, int64_t)>& sinks);
  int64_t stage;
  int64_t head_dim;
  RopeBuffer rope{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  PatchMerging downsample{nullptr};
};
TORCH_MODULE(RavltStage);

class RavltImpl : public torch::nn::Module {
 public:
  explicit RavltImpl(RavltOptions options);
  /// (B, in_chans, H, W) → (B, num_classes).
  torch::Tensor forward(const torch::Tensor& x);
  /// Stem and stages; when `features` is given it receives the stem output and each stage's output (after its
  /// downsample, as the official BasicLayer returns it). Returns the last stage's output.
  torch::Tensor forward_features(const torch::Tensor& x, std::vector<torch::Tensor>* features = nullptr);
  /// Sink for the attention layer (stage, block), or nullptr; consulted on every forward.
  std::function<ProbeSink*(int64_t stage, int64_t block)> probe_sinks;
  const RavltOptions& options() const { return options_; }
  const std::vector<Variant>& stage_variants() const { return variants_; }

  torch::nn::Sequential stem{nullptr};  ///< `patch_embed.proj`
  std::vector<RavltStage> stages;       ///< `layers.i`
  torch::nn::Conv2d proj{nullptr}, head{nullptr};
  BatchNorm2d norm{nullptr};

 private:
  RavltOptions options_;
  std::vector<Variant> variants_;
};
TORCH_MODULE(Ravlt);

}  // namespace rala
