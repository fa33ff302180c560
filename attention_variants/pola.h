#pragma once
/// \file pola.h
/// P — PolaFormer (ICLR 2025): polarity-aware linear attention, PVT form (ZacharyMeng/PolaFormer @ 44cdd39
/// models/pola_pvt.py `PolaLinearAttention`, sr_ratio 1 as in the released configs). On tokens x (B, N, C):
///   q, g = qg(x)  (Linear(C, 2C), rows [q | g]);   k, v = kv(x)  (Linear(C, 2C), rows [k | v])
///   k ← k + PE                     (PE (1, N_pe, C) learned; resampled when the grid is not the table's, see below)
///   q ← q / softplus(scale), k ← k / softplus(scale)     (scale (1, 1, C), per channel, before the head split)
///   p = 1 + α·sigmoid(power)                            (power (1, h, 1, d): one exponent per head and channel)
///   per head: q± = ReLU(±q)^p, k± = ReLU(±k)^p;  q_sim = [q+, q−], q_opp = [q−, q+], K = [k+, k−]   (2d features)
///   kv = (Kᵀ N^-½)(v N^-½)  (2d × d);  v1 = the first ⌈d/2⌉ channels of v, v2 = the rest
///   o = [ q_sim kv[:, :⌈d/2⌉] z_sim , q_opp kv[:, ⌈d/2⌉:] z_opp ],  z_* = 1/(q_* · mean_j K_j + 1e-6)
///   out = proj((o + DWC(v)) ⊙ g)   (DWC: k×k depthwise over the d channels of a head, weights shared by all heads;
///                                   g raw, no activation)
///
/// Positional encoding and the grid. The official table `positional_encoding` has N_pe = pe_height·pe_width rows in
/// raster order of the official grid (pe_height × pe_width). On that grid it is added as is (the official numbers
/// exactly). On any other grid it is reshaped to (1, C, pe_height, pe_width) and resampled to (H, W) as position
/// embeddings are resampled for a new resolution (`pe_resample`: F.interpolate bicubic, align_corners=False, the
/// DeiT/timm `resize_pos_embed` rule — default; `bicubic_antialias`, timm ≥ 0.9 `resample_abs_pos_embed`'s default;
/// `bilinear`, PVT's own `_get_pos_embed`). pe_height = pe_width = 0: no positional encoding. The official module
/// itself accepts only H·W = N_pe (and adds the table as raster rows whatever H×W is).
/// An official (1, N, C) table does not tell its grid: settings_from_state_shapes() picks pe_height = the largest
/// divisor of N not above √N and pe_width = N / pe_height (the square grid when N is a square, as in every released
/// config; 63 → 7×9, the golden's grid). Give pe_height / pe_width explicitly when the table's grid is another.
///
/// Probes: kv_buffer (B, h, 2d, d) = (1/N) Σ_j K_jᵀ v_j (columns [:⌈d/2⌉] feed the same-sign stream, the rest the
/// opposite-sign stream); output (B, h, N, d) = o; output_gated (B, h, N, d) = (o + DWC(v)) ⊙ g; feature_q = q_sim,
/// feature_k = K (B, h, N, 2d). Two streams read the same buffer with different queries, so no single N×N map gives
/// output = A·v for all channels: `attention` and `normalizer_z` are the SAME-SIGN stream's (A_sim = z_sim q_sim Kᵀ/N,
/// output[..., :⌈d/2⌉] = A_sim v1); the opposite-sign stream's are the internals `attention_opp`
/// (output[..., ⌈d/2⌉:] = A_opp v2) and `normalizer_z_opp`.
/// Internals (the golden's names): scale_softplus (1,1,C), power_effective (1,h,1,d), positional_encoding (1,N,C) as
/// added (resampled or not), phi_q_sim, phi_q_opp, phi_k (B,h,N,2d), normalizer_z_sim, normalizer_z_opp (B,h,N),
/// output_heads (B,h,N,d), attention_opp (B,h,N,N), dwc_v, output_pre_gate, gate, output_pre_proj (B,N,C).
///
/// Prefix tokens (DeiT's cls token; attention.h): both streams' buffer and means over all P + N tokens; the positional
/// encoding adds to the grid's keys only, the DWC of the grid's v to the grid tokens only; the gate g applies to every
/// token.
///
/// Usage:
///   rala::PolaAttention attn(rala::AttentionOptions(64, 2));                                 // PE on a 7×9 grid
///   rala::PolaAttention stage1(rala::AttentionOptions(64, 1).set("pe_height", 56).set("pe_width", 56));

#include "attention_variants/common.h"

namespace rala {

class PolaAttentionImpl : public AttentionBase {
 public:
  explicit PolaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// From an official state dict: pe_height / pe_width from `positional_encoding` (1, N, C) by the rule above
  /// (0 / 0 when there is none), dwc_kernel from `dwc.weight` (d, 1, k, k). Keys may carry a module prefix.
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  /// The positional encoding as added to k on an H×W grid, (1, H·W, C): the table itself on its own grid, else the
  /// table resampled by `pe_resample`. Undefined when the layer has no positional encoding.
  torch::Tensor positional_encoding_for(int64_t height, int64_t width) const;

  static constexpr double kEps = 1e-6;

  torch::nn::Linear qg{nullptr};      ///< (2C, C), rows [q | g]
  torch::nn::Linear kv{nullptr};      ///< (2C, C), rows [k | v]
  torch::nn::Linear proj{nullptr};    ///< (C, C)
  torch::nn::Conv2d dwc{nullptr};     ///< (d, 1, k, k), shared by the heads
  torch::Tensor power;                ///< (1, h, 1, d)
  torch::Tensor scale;                ///< (1, 1, C)
  torch::Tensor positional_encoding;  ///< (1, pe_height·pe_width, C); undefined when there is none

 private:
  double alpha_;
  int64_t dwc_kernel_, pe_height_, pe_width_;
  std::string pe_resample_;
};
TORCH_MODULE(PolaAttention);

}  // namespace rala
