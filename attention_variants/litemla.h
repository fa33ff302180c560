#pragma once
/// \file litemla.h
/// E — EfficientViT LiteMLA (Cai et al., ICCV 2023): mit-han-lab/efficientvit @ de7d773
/// efficientvit/models/nn/ops.py `LiteMLA` (use_bias=False, norm (None, bn2d), act (None, None), kernel ReLU).
/// h heads of width d = C/h (from the harness; the official module takes heads = in_channels // dim), S scales,
/// h' = h(1 + S) heads in all:
///   qkv = qkv.conv(x)                                   (B, 3hd, H, W), 1×1, no bias
///   ms  = cat(qkv, aggreg.i.1(aggreg.i.0(qkv)) for each scale k_i)   k×k depthwise (same padding) then a 1×1 grouped
///         in 3h groups (mixes only within one q/k/v block of one head); no biases;   (B, 3hd(1+S), H, W)
///   per head n: channels [3dn, 3dn + 3d) = [q | k | v] (interleaved per head; the multi-scale heads follow the
///         original ones);  q, k ← ReLU(q), ReLU(k)
///   vk  = [v; 1] kᵀ                                      (B, h', d+1, d): row d = Σ_j k_j    = kv_buffer
///   num = vk q                                           (B, h', d+1, N); normalizer = row d = Σ_j k_j·q_i
///   o_i = Σ_j v_j (k_j·q_i) / (Σ_j k_j·q_i + ε)          ε = 1e-15 added (not clamped); fp32 for fp16/bf16 input
///   out = proj.norm(proj.conv(o as (B, h'd, H, W)))      1×1 no bias, then BatchNorm2d (eps 1e-5; eval: running
///         statistics, training: batch statistics and running-stat updates like any BN)
/// The official module switches to its quadratic form (kᵀq normalised over keys, then v·att) when H·W ≤ d; that is
/// the same function and only the linear form is implemented here (a test checks that the two agree).
///
/// Settings: scales ("5", the official and golden configuration; "none" or an ascending list such as "3,5"),
/// eps (1e-15). Probes: kv_buffer (B, h', d+1, d), output = output_gated (B, h', N, d) (no gate, no local term),
/// attention (the normalised ReLU map), normalizer_z = 1/(normalizer + ε). Internals (golden names): qkv_multiscale
/// (B, 3hd(1+S), H, W), normalizer (B, h', N), output_heads (B, h', d, N) channel-major as the module holds it,
/// output_pre_proj (B, h'd, H, W).
///
/// Prefix tokens (DeiT's cls token; attention.h): the ReLU linear attention runs over all P + N tokens; each scale's
/// k×k depthwise conv is bound to the grid, so the cls token's multi-scale heads are the grouped 1×1 of its own qkv;
/// proj's BatchNorm sees all tokens (one (B, h'd, 1, P + N) map).
///
/// Usage:
///   rala::LitemlaAttention attn(rala::AttentionOptions(64, 2));                     // d = 32, scales 5
///   rala::LitemlaAttention two(rala::AttentionOptions(64, 2).set("scales", "3,5"));

#include "attention_variants/batch_norm.h"
#include "attention_variants/common.h"

namespace rala {

/// EfficientViT's ConvLayer as LiteMLA uses it: a bias-free 1×1 conv (`conv`), optionally followed by BatchNorm2d
/// (`norm`), no activation.
class LitemlaConvLayerImpl : public torch::nn::Module {
 public:
  LitemlaConvLayerImpl(int64_t in, int64_t out, bool with_norm);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  BatchNorm2d norm{nullptr};  ///< empty without norm
};
TORCH_MODULE(LitemlaConvLayer);

class LitemlaAttentionImpl : public AttentionBase {
 public:
  explicit LitemlaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// scales from the kernels of aggreg.<i>.0.weight (3hd, 1, k, k), in order ("none" without aggreg entries).
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// Projections: qkv 3hd·C, per scale k²·3hd (depthwise) + 3hd·d (grouped 1×1), proj hd(1+S)·C, per token (BN not
  /// counted). Matmuls: [v;1]kᵀ and vk·q, 2·(d+1)·d per token and head h'.
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  int64_t head_dim() const { return options_.dim() / options_.heads(); }
  /// Heads after the multi-scale aggregation, h' = h(1 + S).
  int64_t total_heads() const { return options_.heads() * (1 + static_cast<int64_t>(scales_.size())); }
  const std::vector<int64_t>& scales() const { return scales_; }
  double eps() const { return eps_; }

  LitemlaConvLayer qkv{nullptr};                ///< conv (3hd, C, 1, 1)
  torch::nn::ModuleList aggreg{nullptr};        ///< per scale: Sequential(0: (3hd, 1, k, k) depthwise, 1: (3hd, d, 1, 1))
  LitemlaConvLayer proj{nullptr};               ///< conv (C, hd(1+S), 1, 1) + norm BatchNorm2d(C)

 private:
  std::vector<int64_t> scales_;
  std::vector<torch::nn::Sequential> aggreg_;  // typed handles on aggreg's entries
  double eps_;
};
TORCH_MODULE(LitemlaAttention);

}  // namespace rala
