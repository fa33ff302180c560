#pragma once
/// \file deit.h
/// DeiT as timm builds it (huggingface/pytorch-image-models timm/models/vision_transformer.py `VisionTransformer`, the
/// deit_tiny_patch16_224 / deit_small_patch16_224 configurations), with any attention variant of the registry as its
/// token mixer.
///
/// With the pattern `S` this is timm's DeiT: timm's state-dict keys and shapes — cls_token (1, 1, C),
/// pos_embed (1, 1 + N, C), patch_embed.proj (C, 3, 16, 16), blocks.i.{norm1, attn.qkv (3C, C), attn.proj (C, C),
/// norm2, mlp.fc1, mlp.fc2}, norm, head — pre-norm blocks with LayerNorm eps 1e-6 and exact GELU, the cls token
/// attending and attended over all 1 + N tokens, the head on the final cls token. A timm DeiT checkpoint (the DeiT
/// release's .pth with 'model', or timm's model.safetensors) loads with strict key matching and gives timm's logits
/// (tests/models/deit_test.cpp holds them to 1e-4 of the largest logit on timm's own golden).
/// Other input sizes resample the position embedding as timm does (resample_abs_pos_embed below).
///
/// Other variants: the cls token enters the mixer as a prefix token (attention_variants/attention.h "Prefix tokens"),
/// as the official DeiT ports of InLine and Agent attention do: global reductions over all 1 + N tokens, grid-bound
/// terms (LePE, DWC, RoPE, convolutions, positional tables) on the patch tokens only; each variant's header says what
/// its cls token does. The layers are built in the ViT layout (AttentionOptions::vit_layout: Linear projections, the
/// DeiT ports' `qkv`) with one prefix token. Harness settings, applied before the user's where a variant has the key
/// (harness_settings()): softmax gate=0 rope=0 lepe=0 (timm's plain Attention), agent agent_num=49 and bias_grid = the
/// patch grid of image_size (Agent-DeiT's configuration).
///
/// Usage:
///   rala::Deit model(rala::deit_tiny().attn_pattern("R"));
///   auto logits = model->forward(images);   // (B, 3, 224, 224) → (B, 1000); other multiples of 16 too

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
  /// Image size the position embedding is made for (a square grid of image_size / patch_size); other input sizes
  /// resample it (resample_abs_pos_embed).
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(double, drop_path_rate) = 0.1;
  /// One variant (letter or name) for every block.
  TORCH_ARG(std::string, attn_pattern) = "S";
  TORCH_ARG(std::vector<std::string>, attn_settings) = std::vector<std::string>{};
};

DeitOptions deit_tiny();
DeitOptions deit_small();

/// timm's resample_abs_pos_embed (timm/layers/pos_embed.py): the grid part of `pos_embed`
/// (1, prefix_tokens + old_h·old_w, C), laid out as an old_h × old_w grid, resampled to new_h × new_w by
/// F.interpolate(mode='bicubic', antialias=True, align_corners=False) in float32 (cast back to the input's dtype); the
/// prefix tokens' entries are kept out of the resampling and put back in front. `pos_embed` itself when the grid is
/// unchanged. → (1, prefix_tokens + new_h·new_w, C).
torch::Tensor resample_abs_pos_embed(const torch::Tensor& pos_embed, int64_t new_h, int64_t new_w, int64_t old_h,
                                     int64_t old_w, int64_t prefix_tokens = 1);

class DeitBlockImpl : public torch::nn::Module {
 public:
  DeitBlockImpl(Variant variant, const AttentionOptions& attn_options, int64_t hidden, double drop_path);
  /// x (B, 1 + H·W, C), the cls token first → same.
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
  /// (B, in_chans, H, W) with H, W positive multiples of the patch size → (B, num_classes).
  torch::Tensor forward(const torch::Tensor& x);
  /// Sink for the attention layer of block i (stage 0), or nullptr. Probes cover the 1 + H·W tokens, cls first.
  std::function<ProbeSink*(int64_t stage, int64_t block)> probe_sinks;
  const DeitOptions& options() const { return options_; }
  Variant variant() const { return variant_; }
  /// Settings the harness applies before the user's, where a variant has them (see the file comment).
  static std::vector<std::string> harness_settings(const DeitOptions& options);

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
