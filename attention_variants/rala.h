#pragma once
/// \file rala.h
/// R — Rank-Augmented Linear Attention, exactly as the official `GateLinearAttentionNoSilu` (qhfan/RALA RALA.py):
///   q, k, v, o = qkvo(x);  φ = elu + 1;  q, k ← φ(q), φ(k)
///   α_j = softmax_j(d^-½ · mean_l(q_l) · k_jᵀ)           (per image and head; switch `alpha`)
///   k_j ← α_j · N · k_j
///   z_i = 1 / (q_i · mean_j k_j + 1e-6)                   (non-RoPE q, α-weighted k)
///   kv  = (RoPE(k)ᵀ N^-½)(v N^-½) = Σ_j α_j RoPE(φ(k_j))ᵀ v_j     (switch `rope`: RoPE in the numerator only)
///   y_i = RoPE(q_i) · kv · z_i + LePE₅ₓ₅(v)                (switch `lepe`)
///   out = proj(y ⊙ o)                                      (switch `gate`: o is a raw linear gate)
/// With every switch off this is the mean-normalised linear attention (`linear` with normalizer=mean) on the same
/// q, k, v projections. Probes: kv_buffer, kv_buffer_unweighted (the same keys without α: Σ_j RoPE(φk_j)ᵀ v_j / N),
/// normalizer_z, alpha, output, output_gated, attention (on request).
///
/// Prefix tokens (DeiT's cls token; attention.h): α = softmax over all P + N keys of the mean φ(q) over all P + N
/// queries; the cls token is in kv and the normaliser and reads them; RoPE leaves it un-rotated, LePE adds to the grid
/// tokens only, the gate o applies to every token.
///
/// Usage:
///   rala::RalaAttention attn(rala::AttentionOptions(64, 2));            // official
///   rala::RalaAttention no_alpha(rala::AttentionOptions(64, 2).alpha(false));

#include "attention_variants/projected.h"

namespace rala {

class RalaAttentionImpl : public ProjectedAttention {
 public:
  explicit RalaAttentionImpl(AttentionOptions options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();

 protected:
  int64_t matmul_macs(int64_t tokens) const override;

 public:
  bool uses_rope() const override { return rope_; }
  static constexpr double kEps = 1e-6;

 private:
  bool alpha_, rope_;
};
TORCH_MODULE(RalaAttention);

}  // namespace rala
