#pragma once
/// \file inline.h
/// I — InLine attention (NeurIPS 2024): injective linear attention with an identity kernel and a per-sample dynamic
/// 3×3 residual, PVT form (LeapLabTHU/InLine @ e463a6f models/inline_pvt.py `InLineAttention`, sr_ratio 1: the only
/// one its code runs). On tokens x (B, N, C), s = d^-½:
///   q = q(x); k, v = kv(x)  (Linear(C, 2C), rows [k | v]);  q, k ← φ(q), φ(k) (`kernel_func`, identity by default)
///   per head: kv = (kᵀ (s/N)^½)(v (s/N)^½) = (s/N) Σ_j k_jᵀ v_j        (d × d)
///             o_i = q_i kv + (1 − s·q_i·mean_j k_j) · mean_j v_j         (= Σ_j [1/N + (s/N) q_i·(k_j − k̄)] v_j)
///   w = residual(mean_tokens(x))  (Conv1d(C, C, 1, groups=h) → GELU (erf) → Conv1d(C, k²C, 1, groups=h)): a k×k
///       depthwise kernel per SAMPLE and channel (channel c: rows k²c … k²c + k² − 1, row-major)
///   out = proj(o + conv2d(v as (B, C, H, W), w per sample, padding k/2, no bias))
/// Nothing is sized by N: any grid runs. `kernel_func` relu / leakyrelu (slope 0.01) / exp (exp(0.2·x)) are the Swin
/// copy's alternatives (models/inline_swin.py), applied to q and k before the head split.
///
/// Probes: kv_buffer (B, h, d, d) = (s/N) Σ φ(k)ᵀv as multiplied; output (B, h, N, d) = o (before the residual);
/// output_gated (B, h, N, d) = o + the dynamic residual (no gate: the positional term only); attention (B, h, N, N)
/// A_ij = 1/N + (s/N) φ(q_i)·(φ(k_j) − mean φ(k)) — the mean-value correction included, so output = A·v exactly
/// (rows sum to 1, entries can be negative); feature_q, feature_k = φ(q), φ(k) (B, h, N, d). No reciprocal
/// normaliser exists (normalizer_z is not emitted).
/// Internals (the golden's names): k_mean, v_mean (B, h, d), output_heads (B, h, N, d), residual_weight (B, C, k, k),
/// local_residual, output_pre_proj (B, N, C); and mean_correction (B, h, N) = 1 − s·φ(q_i)·mean φ(k).
///
/// Prefix tokens (DeiT's cls token; attention.h): as the official DeiT port (LeapLabTHU/InLine models/inline_deit.py):
/// q, k, v, the buffer and the means over all P + N tokens; the residual kernel from the mean of all tokens, the cls
/// token included; the dynamic 3×3 conv of the grid's v adds to the grid tokens only. With vit_layout the projections
/// are the port's one `qkv` (3C, C); tests/data/inline_deit_attention.h5 is the port's golden.
///
/// Usage:
///   rala::InlineAttention attn(rala::AttentionOptions(64, 2));
///   rala::InlineAttention relu(rala::AttentionOptions(64, 2).set("kernel_func", "relu"));

#include "attention_variants/common.h"

namespace rala {

class InlineAttentionImpl : public AttentionBase {
 public:
  explicit InlineAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// From an official state dict: residual / residual_kernel from `residual.0.weight` (C, C/h, 1) and
  /// `residual.2.weight` (k²C, C/h, 1) (residual=0 when they are absent). Keys may carry a module prefix.
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  torch::nn::Linear q{nullptr};            ///< (C, C)
  torch::nn::Linear kv{nullptr};           ///< (2C, C), rows [k | v]
  torch::nn::Linear qkv{nullptr};          ///< (3C, C), rows [q | k | v]: vit_layout only (then no q, kv)
  torch::nn::Linear proj{nullptr};         ///< (C, C)
  torch::nn::Sequential residual{nullptr};  ///< 0: Conv1d(C, C, 1, groups=h), 1: GELU, 2: Conv1d(C, k²C, 1, groups=h)

 private:
  std::string kernel_func_;
  bool residual_on_;
  int64_t residual_kernel_;
};
TORCH_MODULE(InlineAttention);

}  // namespace rala
