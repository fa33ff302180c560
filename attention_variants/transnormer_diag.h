#pragma once
/// \file transnormer_diag.h
/// D — TransNormer DiagAttention (Qin et al., EMNLP 2022; OpenNLPLab/fairseq-evo @ 38fa81f
/// fairseq/modules/x_attention/norm_local_attention.py `NormLocalAttention.forward_chunk`, group_type "chunk",
/// non-causal): block-diagonal attention on 1-D chunks of the raster sequence l = row·W + col.
///   q = q_proj(x) · d^-½;  k = k_proj(x);  v = v_proj(x)         (Linear(C, C, bias) each; heads channel-major)
///   zero-pad q, k, v along the sequence to N' = ⌈N/c⌉·c AFTER the projections (pad rows are exact zeros, no bias)
///   split into N'/c chunks of c consecutive tokens (setting `chunk`, default 64 as in the paper configs);
///   [urpe: q, k ← URPE(q), URPE(k), index = position inside the chunk]                    (setting `urpe`)
///   per head and chunk: P = ReLU(q kᵀ) (T1, unnormalised) or softmax(q kᵀ) over all c keys (T2)  (setting `kernel`)
///   y = P v;  drop the pad rows;  y ← SimpleRMSNorm_C(y) (T1; off in T2)                   (setting `norm`)
///   out = out_proj(y)
/// As in the official code, the pad keys of the last chunk (logit 0) take softmax mass in T2; their values are zero, so
/// they only shrink the real weights. With the ReLU kernel they contribute nothing.
/// T1 = the defaults; T2 = kernel=softmax norm=0.
/// Probes: output (before the norm), output_gated (after it, per head), attention (B, h, N, N) = the block-diagonal map
/// over the real tokens (output = A·v; in T2 the last chunk's rows sum to < 1 because the pad keys are dropped from A),
/// chunk_weights (B, h, N'/c, c, c) = P exactly as computed, pad rows and columns included. No kv_buffer: nothing is
/// summarised into a state. Internals: `output_pre_norm`, `output_pre_proj` (B, N, C) (golden names).
///
/// Prefix tokens (DeiT's cls token; attention.h): a global token, as Longformer's [CLS]: every grid query reads its
/// chunk plus the cls key (in its chunk's normalisation, so T2's softmax spans c + P keys; chunk_weights is then (B, h,
/// N'/c, c, c + P)); the cls query reads all P + N real tokens; URPE index 0 (reflection only).
///
/// Usage:
///   rala::TransnormerDiagAttention t1(rala::AttentionOptions(64, 2));
///   rala::TransnormerDiagAttention t2(rala::AttentionOptions(64, 2).set("kernel", "softmax").set("norm", false));

#include "attention_variants/transnormer.h"

namespace rala {

class TransnormerDiagAttentionImpl : public AttentionBase {
 public:
  explicit TransnormerDiagAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values): chunk, kernel, norm, urpe.
  static const SettingsSchema& schema();
  /// `urpe=1` when the state dict has URPE entries (`urpe.theta`, `urpe.v`).
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  int64_t head_dim() const { return options_.dim() / options_.heads(); }
  int64_t chunk() const { return chunk_; }
  bool softmax_kernel() const { return softmax_; }
  bool norm_enabled() const { return norm_on_; }
  bool urpe_enabled() const { return urpe_on_; }

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  TransnormerUrpe urpe{nullptr};  ///< only with urpe=1

 private:
  int64_t chunk_;
  bool softmax_, norm_on_, urpe_on_;
};
TORCH_MODULE(TransnormerDiagAttention);

}  // namespace rala
