#pragma once
/// \file gla.h
/// G — Gated linear attention, vision form: ViG-H `GLA2D` (hustvl/ViG @ dfb9d32, classification/models/vig_h.py; the
/// recurrence is flash-linear-attention's `naive_recurrent_gla`). Per image, on the token grid in raster order
/// (l = row·W + col), K = expand_k·C key channels, V = expand_v·C = C value channels, h heads (d_k = K/h, d_v = V/h):
///   xs = DWConv3×3(x)                       (in_proj.0, groups C, no bias; SiLU after it only with use_act_in_conv)
///   [q | k | v] = qkv_proj(xs)              (Linear2d, no bias, rows [q: K | k: K | v: V])
///   [g_f | g_b] = gk_proj(xs)               (Linear C→r no bias, Linear r→2K with bias; r = gate_low_rank)
///   log α = logsigmoid(g_f)/gate_normalizer,   log β = logsigmoid(g_b)/gate_normalizer     (per token, key channel)
///   forward  S_l = diag(α_l) S_{l−1} + k_lᵀ v_l,   o^f_l = d_k^-½ q_l S_l       (l = 0 … N−1)
///   backward R_l = diag(β_l) R_{l+1} + k_lᵀ v_l,   o^b_l = d_k^-½ q_l R_l       (l = N−1 … 0)
///   o = (o^f + o^b)/2                                                           (token l counted by both scans)
///   g = σ(g_proj(xs));   y = o_proj( RMSNorm(o)·w_g ⊙ g + RMSNorm(xs per head)·w_l ⊙ (1 − g) )   (SiLU before o_proj
///   only with use_out_act);   RMSNorm(x) = x / sqrt(mean(x²) + eps) over the d_v channels of a head, w shared by heads.
/// The scans run in O(N) as chunked scans (gla_chunked_scan, `scan_chunk` tokens, default 16 — the sub-chunk at which
/// flash-linear-attention's chunk kernel forms these weights; 64 measured 3–4× slower here): within a chunk only
/// differences of cumulative log decays b_t − b_u ≤ 0 are exponentiated (logsigmoid/16 is unbounded below, e^{−b}
/// alone would overflow). Both directions run as one scan over the batch [x; reversed x].
/// Parameters use the official keys and shapes (Linear2d is an nn.Linear): in_proj.0.weight (C,1,3,3),
/// qkv_proj.weight (2K+V, C), gk_proj.0.weight (r, C), gk_proj.1.{weight (2K, r), bias (2K)} rows [fwd K | bwd K],
/// g_proj.{weight (V, C), bias (V)}, g_norm.weight (d_v), l_norm.weight (d_v), o_proj.weight (C, V).
/// Probes: kv_buffer = S_{N−1}, kv_buffer_bwd = R_0 (B, h, d_k, d_v) (the states q·d_k^-½ reads); log_decay_fwd /
/// log_decay_bwd (B, h, N, d_k); output = o before g_norm (B, h, N, d_v); output_gated = what enters o_proj per head;
/// attention (on request) = A with o = A·v: A_ij = ½·d_k^-½ Σ_c q_ic k_jc (Π_{j<m≤i} α_mc [j ≤ i] + Π_{i≤m<j} β_mc
/// [j ≥ i]). Internals (golden names): q, k (B, h, N, d_k) unscaled, v, output_fwd, output_bwd (B, h, N, d_v),
/// output_pre_norm, local_pre_norm (B, N, h, d_v), gate_logit (B, V, H, W).
///
/// Prefix tokens (DeiT's cls token; attention.h): the cls token is inserted in the middle of the raster sequence
/// (position ⌊N/2⌋, ViG's use_middle_cls_token) and both scans run over all P + N tokens; it skips the depthwise 3×3
/// conv and its SiLU (ViG's token_position path: its local branch is the raw token). Probes are reordered to the
/// toolkit's order, cls first.
///
/// Usage:
///   rala::GlaAttention attn(rala::AttentionOptions(64, 2));                       // ViG-H-T: d_k 16, d_v 32
///   auto y = attn->forward(x, rala::AttentionContext::for_input(x, 32));          // x, y: (B, 64, H, W)

#include "attention_variants/common.h"

namespace rala {

/// Result of one direction of the gated scan.
struct GlaScanResult {
  torch::Tensor output;  ///< (B, h, N, d_v): o_l = q_l S_l (q as given, i.e. already scaled)
  torch::Tensor state;   ///< (B, h, d_k, d_v): S_{N−1}, the state after the last token
};

/// Causal gated scan S_l = diag(exp(log_decay_l)) S_{l−1} + k_lᵀ v_l, o_l = q_l S_l (S_{−1} = 0), computed in chunks of
/// `chunk` tokens (the last one zero-padded): within a chunk with b_t = Σ_{u≤t} log_decay_u (per key channel),
///   o_t = (q_t ⊙ e^{b_t}) S_prev + Σ_{u≤t} (Σ_c q_tc k_uc e^{b_tc − b_uc}) v_u,
///   S_next = diag(e^{b_T}) S_prev + Σ_u (k_u ⊙ e^{b_T − b_u})ᵀ v_u;
/// every exponent is ≤ 0 when log_decay ≤ 0. Cost O(N·(d_k·d_v + T·d_k + T·d_v)). Differentiable (autograd).
/// q, k, log_decay: (B, h, N, d_k); v: (B, h, N, d_v); chunk ≥ 1 (min(chunk, N) is used).
GlaScanResult gla_chunked_scan(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& log_decay, int64_t chunk);

/// RMSNorm over the last dim with a learned weight (fla.modules.RMSNorm without bias): x / sqrt(mean(x²) + eps) · w.
class GlaRmsNormImpl : public torch::nn::Module {
 public:
  GlaRmsNormImpl(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  ///< (size), init 1

 private:
  double eps_;
};
TORCH_MODULE(GlaRmsNorm);

class GlaAttentionImpl : public AttentionBase {
 public:
  explicit GlaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// An official state dict's shapes imply gate_low_rank_dim (gk_proj.0.weight rows) and expand_k / expand_v
  /// (qkv_proj.weight rows 2K + V, o_proj.weight (C, V)).
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  int64_t key_dim() const { return key_dim_; }          ///< K = int(C·expand_k)
  int64_t value_dim() const { return value_dim_; }      ///< V = int(C·expand_v) (= C)
  int64_t head_k_dim() const { return key_dim_ / heads(); }
  int64_t head_v_dim() const { return value_dim_ / heads(); }
  int64_t scan_chunk() const { return chunk_; }
  int64_t gate_normalizer() const { return gate_normalizer_; }
  bool use_act_in_conv() const { return act_in_conv_; }
  bool use_out_act() const { return out_act_; }
  double norm_eps() const { return eps_; }

  torch::nn::Sequential in_proj{nullptr};  ///< [0] depthwise 3×3 (C, 1, 3, 3), no bias
  torch::nn::Conv2d dwconv{nullptr};       ///< in_proj[0]
  torch::nn::Linear qkv_proj{nullptr};     ///< (2K + V, C), no bias
  torch::nn::Sequential gk_proj{nullptr};  ///< [0] Linear(C, r) no bias, [1] Linear(r, 2K) with bias
  torch::nn::Linear g_proj{nullptr};       ///< (V, C) with bias
  GlaRmsNorm g_norm{nullptr};              ///< (d_v)
  GlaRmsNorm l_norm{nullptr};              ///< (d_v)
  torch::nn::Linear o_proj{nullptr};       ///< (C, V), no bias

 private:
  int64_t key_dim_, value_dim_, low_rank_, gate_normalizer_, chunk_;
  bool act_in_conv_, out_act_;
  double eps_;
};
TORCH_MODULE(GlaAttention);

}  // namespace rala
