#pragma once
/// \file transnormer.h
/// T — TransNormer NormAttention (Qin et al., EMNLP 2022, "The Devil in Linear Transformer"; OpenNLPLab/fairseq-evo
/// @ 38fa81f fairseq/modules/x_attention/norm_linear_attention.py `NormLinearAttention`, non-causal), on the raster
/// tokens l = row·W + col:
///   q, k, v = q_proj(x), k_proj(x), v_proj(x)              (Linear(C, C, bias) each; heads channel-major)
///   q, k ← φ(q), φ(k)      φ = F.elu (T1, no +1: φ can be negative) or 1 + elu (T2)        (setting `phi`)
///   [urpe: q, k ← URPE(q), URPE(k), token index l along the raster sequence]               (setting `urpe`)
///   kv = φ(K)ᵀ V  (d×d per head: no 1/N, no d^-½, no denominator);  y = φ(Q) kv
///   y ← SimpleRMSNorm_C(y) = y / (‖y‖₂ · C^-½ + 1e-8), over the full C (all heads jointly), no weight  (setting `norm`)
///   out = out_proj(y)
/// Probes: feature_q, feature_k (φ(q), φ(k) as multiplied, after URPE), kv_buffer (B, h, d, d), output (before the
/// norm), output_gated (after it, per head), attention (B, h, N, N) = φ(Q)φ(K)ᵀ (unnormalised: output = A·v).
/// Internal: `output_pre_norm` (B, N, C) = output with the heads merged (the golden's layout, tokens-major).
///
/// Also here: TransNormer's URPE (`TransnormerUrpe`) and SimpleRMSNorm (`simple_rms_norm`), shared with the
/// DiagAttention (transnormer_diag.h).
///
/// Prefix tokens (DeiT's cls token; attention.h): φ(K)ᵀV over all P + N tokens, the cls query reads it; URPE gives the
/// cls token index 0 (the Householder reflection alone), the grid keeps its raster index; SimpleRMSNorm per token.
///
/// Usage:
///   rala::TransnormerAttention t1(rala::AttentionOptions(64, 2));                       // T1: elu, SimpleRMSNorm
///   rala::TransnormerAttention t2(rala::AttentionOptions(64, 2).set("phi", "1+elu"));  // T2

#include "attention_variants/common.h"

namespace rala {

/// SimpleRMSNorm (fairseq-evo fairseq/modules/norm/rms_norm.py): x / (‖x‖₂ · n^-½ + eps) over the last dim of size n;
/// parameter-free.
torch::Tensor simple_rms_norm(const torch::Tensor& x, double eps = 1e-8);

/// TransNormer's URPE with core_matrix 1 (RoPE with learned θ) and p_matrix 3 (Householder with a fixed unit vector),
/// fairseq-evo fairseq/modules/positional_encoding/urpe.py `Urpe.forward` (no Pᵀ after the rotation):
///   x ← x − 2 (x·v) v;   then for pair k = (x_2k, x_2k+1), angle a = θ_k · l (l = 0-based index along dim −2):
///   (x_2k, x_2k+1) ← (x_2k cos a − x_2k+1 sin a, x_2k+1 cos a + x_2k sin a).
/// For an odd width d the last channel is not rotated (the official `e = d − 1`).
/// Keys: `theta` (1, 1, ⌊d/2⌋) learned, init 10000^(−2k/d); `v` (d) a fixed random unit vector, a buffer (the
/// official one is a Parameter with requires_grad False, so it is in the state dict under the same key).
class TransnormerUrpeImpl : public torch::nn::Module {
 public:
  explicit TransnormerUrpeImpl(int64_t head_dim);
  /// x (..., L, d) → (..., L, d).
  torch::Tensor forward(const torch::Tensor& x) const;
  /// The Householder reflection alone, x − 2 (x·v) v: URPE at index 0 (what a prefix token gets: no position).
  torch::Tensor reflect(const torch::Tensor& x) const;
  torch::Tensor theta;  ///< (1, 1, ⌊d/2⌋)
  torch::Tensor v;      ///< (d), unit norm at construction
};
TORCH_MODULE(TransnormerUrpe);

/// NormAttention's feature map (setting `phi`).
enum class TransnormerPhi { elu, one_plus_elu };

class TransnormerAttentionImpl : public AttentionBase {
 public:
  explicit TransnormerAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values): phi, urpe, norm.
  static const SettingsSchema& schema();
  /// `urpe=1` when the state dict has URPE entries (`urpe.theta`, `urpe.v`).
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  int64_t head_dim() const { return options_.dim() / options_.heads(); }
  TransnormerPhi phi() const { return phi_; }
  bool urpe_enabled() const { return urpe_on_; }
  bool norm_enabled() const { return norm_on_; }
  /// φ as set (elementwise).
  torch::Tensor feature(const torch::Tensor& x) const;

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  TransnormerUrpe urpe{nullptr};  ///< only with urpe=1

 private:
  TransnormerPhi phi_;
  bool urpe_on_, norm_on_;
};
TORCH_MODULE(TransnormerAttention);

namespace detail {
/// q, k, v projections of tokens (B, N, C) in one GEMM: (B, N, 3C) with columns [q | k | v].
torch::Tensor transnormer_qkv(const torch::Tensor& tokens, const torch::nn::Linear& q_proj,
                              const torch::nn::Linear& k_proj, const torch::nn::Linear& v_proj);
}  // namespace detail

}  // namespace rala
