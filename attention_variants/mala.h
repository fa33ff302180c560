#pragma once
/// \file mala.h
/// Y — MALA, magnitude-aware linear attention (Fan et al., ICCV 2025; qhfan/MALA @ 7114e63
/// classfication_release/model.py `AddLinearAttention` l.100), on RALA's skeleton (qkvo 1×1 conv, 5×5 LePE, proj):
///   q, k, v, o = qkvo(x);  φ = elu + 1;  s = d^-½;  R = RAVLT's 2-D RoPE from the context (numerator only)
///   z_i   = s · φq_i · mean_j φk_j                          (NOT a reciprocal; RoPE-free)
///   kv    = (R(φk)ᵀ (s/N)^½)(v (s/N)^½) = (s/N) Σ_j R(φk_j)ᵀ v_j
///   y_i   = R(φq_i) kv · (1 + 1/(z_i + 1e-6)) − z_i · mean_j v_j
///   out   = proj((y + LePE₅ₓ₅(v)) ⊙ o)                    (o raw, no activation)
/// No α re-weighting. Switches as RALA's (each default on): gate (off: no o rows, qkv has 3C), rope, lepe.
/// The implied map (output = A·v): A_ij = (s/N)(1 + 1/(z_i + ε)) R(φq_i)·R(φk_j) − z_i/N; without RoPE its rows sum
/// to z_i/(z_i + ε).
/// Probes: feature_q/feature_k (φ), kv_buffer, output (y, before LePE and gate), output_gated, attention.
/// Internals (golden names): z (B, h, N); rope_q, rope_k (B, h, N, d); lepe, gate_o (B, C, H, W).
///
/// Prefix tokens (DeiT's cls token; attention.h): z from the mean φ(k) over all P + N tokens, kv and mean v over all P
/// + N; RoPE leaves the cls token un-rotated, LePE adds to the grid tokens only, the gate o applies to every token.
///
/// Usage:
///   rala::MalaAttention attn(rala::AttentionOptions(64, 2));
///   auto y = attn->forward(x, rala::AttentionContext::for_input(x, 32));

#include "attention_variants/projected.h"

namespace rala {

class MalaAttentionImpl : public ProjectedAttention {
 public:
  explicit MalaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  bool uses_rope() const override { return rope_; }
  static constexpr double kEps = 1e-6;

 protected:
  /// kv and R(φq)·kv: 2·N·d·C; z: N·C; z·mean v: N·C.
  int64_t matmul_macs(int64_t tokens) const override;

 private:
  bool rope_;
};
TORCH_MODULE(MalaAttention);

}  // namespace rala
