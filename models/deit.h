#pragma once
/// \file deit.h
/// A DeiT harness (timm VisionTransformer layout and key names) taking any attention variant from the registry.
///
/// Token mixing on a 2-D grid: every variant acts on the patch tokens as a (B, C, H/16, W/16) map; the cls token does not
/// enter the mixer. Its attention output is the mean of the mixer's patch outputs (a pooled read-out), so it still
/// gathers the image through attention, and everything after the mixer (residual, LayerNorm, MLP, head on the cls token)
/// is as in DeiT. The softmax variant is built as timm's plain `Attention` (gate, RoPE and LePE off) unless the
/// attention settings say otherwise; then deit_tiny has exactly timm's 5,717,416 parameters.
///
/// Usage:
///   rala::Deit model(rala::deit_tiny().attn_pattern("R"));
///   auto logits = model->forward(images);   // (B, 3, 224, 224) → (B, 1000)

#include <torch/torch.h>

#include "attention_variants/registry.h"

namespace rala {

struct DeitOptions {
  TORCH_ARG(int64_t, embed_dim) = 192;
  TORCH_ARG(int64_t, depth) = 12;
  TORCH_ARG(int64_t, heads) = 3;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_chans) = 3;
  /// Image size the position embedding is made for; other sizes interpolate it (bicubic).
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(double, drop_path_rate) = 0.1;
  /// One variant (letter or name) for every block.
  TORCH_ARG(std::string, attn_pattern) = "S";
  TORCH_ARG(std::vector<std::string>, attn_settings) = std::vector<std::string>{};
};

DeitOptions deit_tiny();
DeitOptions deit_small();

class DeitBlockImpl : public torch::nn::Module {
 public:
  DeitBlockImpl(Variant variant, const AttentionOptions& attn_options, int64_t hidden, double drop_path);
  /// x (B, 1 + H·W, C) → same.
  torch::Tensor forward(const torch::Tensor& x, int64_t grid_h, int64_t grid_w, ProbeSink* probes);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<AttentionBase> attn;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};  ///< `mlp.fc1`, `mlp.fc2`
  double drop_path;
};
TORCH_MODULE(DeitBlock);

class DeitImpl : public torch::nn::Module {
 public:
  explicit DeitImpl(DeitOptions options);
  /// (B, in_chans, H, W) with H, W multiples of the patch size → (B, num_classes).
  torch::Tensor forward(const torch::Tensor& x);
  /// Sink for the attention layer of block i (stage 0), or nullptr.
  std::function<ProbeSink*(int64_t stage, int64_t block)> probe_sinks;
  const DeitOptions& options() const { return options_; }
  Variant variant() const { return variant_; }
  /// Settings the harness applies before the user's, where a variant has them (softmax: gate, RoPE, LePE off).
  static std::vector<std::string> harness_settings();

  torch::nn::Conv2d patch_embed{nullptr};  ///< `patch_embed.proj`
  torch::Tensor cls_token, pos_embed;
  std::vector<DeitBlock> blocks;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};

 private:
  DeitOptions options_;
  Variant variant_;
};
TORCH_MODULE(Deit);

}  // namespace rala
