#pragma once
/// \file agent.h
/// A — Agent attention (Han et al., ECCV 2024), PVT form: LeapLabTHU/Agent-Attention @ 207ce3e
/// agent_transformer/models/agent_pvt.py `AgentAttention` (sr 1). Per head, s = d^-½, P = √agent_num:
///   q = q(x);  [k | v] = kv(x)                                          (Linear layers on tokens, raster order)
///   A = AdaptiveAvgPool2d(P)(q as a (B, C, H, W) map)  → (B, h, n_a, d) agent tokens, agent a = row·P + col
///       (bins [⌊iH/P⌋, ⌈(i+1)H/P⌉): unequal and overlapping when P ∤ H, exactly as PyTorch pools)
///   B1 = bilinear(an_bias → H×W) + ah_bias + aw_bias                     (1, h, n_a, N)  "position_bias"
///   agent_v = softmax_j(s·A kᵀ + B1) v                                   (B, h, n_a, d)  = kv_buffer
///   B2 = bilinear(na_bias → H×W)ᵀ + ha_bias + wa_bias                    (1, h, N, n_a)  "agent_bias"
///   o = softmax_a(s·q Aᵀ + B2) agent_v                                   (B, h, N, d)    = output
///   out = proj(o + dwc(v))   dwc: k×k depthwise (C groups, not shared across heads) with bias
///
/// Any grid. The official ah/aw/ha/wa tables are sized by the grid it was built for, Hw = Ww = √num_patches (setting
/// `bias_grid`), so the official module runs on that square grid only. On an H×W grid that differs, each of the four
/// tables is resampled along its grid axis to H (ah, ha) or W (aw, wa) by linear interpolation with
/// align_corners=False (F.interpolate(mode='linear'), the 1-D form of the bilinear rule the official code applies to
/// its 7×7 an/na tables); the 7×7 tables are resampled bilinearly to H×W as the official code does. On the official
/// grid nothing is resampled, and the official numbers are reproduced exactly.
/// Grids smaller than the agent grid (P > H or P > W) run as PyTorch's adaptive pool defines them: every bin holds at
/// least one row/column, so some agents coincide (e.g. H = 2, P = 3: rows {0}, {0, 1}, {1}); nothing is clamped.
///
/// Settings: agent_num (9, a perfect square; the PVT configs use 9-16-49-49 per stage), bias_grid (8, the golden's
/// 8×8 grid), dwc_kernel (3), qkv_bias (1: PVT builds its blocks with qkv_bias=True).
/// Probes: kv_buffer (= agent_v), output, output_gated (o + dwc(v) per head), attention (q_attn · agent_attn).
/// Internals (golden names): agent_tokens, position_bias, agent_attn, agent_v, agent_bias, q_attn, output_heads
/// (B, h, N, d), dwc_v and output_pre_proj (B, N, C) as the official code holds them.
///
/// Prefix tokens (DeiT's cls token; attention.h): as the official DeiT port (LeapLabTHU/Agent-Attention
/// agent_transformer/models/agent_deit.py): the agents are pooled from the grid's q only; the cls token is a key of the
/// agent attention (bias ac_bias (1, h, n_a, P)) and a query of the agents (bias ca_bias (1, h, P, n_a)); the DWC of
/// the grid's v adds to the grid tokens only. With vit_layout the projections are the port's one `qkv` (3C, C);
/// tests/data/agent_deit_attention.h5 is the port's golden.
///
/// Usage:
///   rala::AgentAttention attn(rala::AttentionOptions(64, 2));                       // 9 agents, 8×8 tables
///   rala::AgentAttention pvt(rala::AttentionOptions(64, 2).set("agent_num", 16).set("bias_grid", 28));

#include "attention_variants/common.h"

namespace rala {

class AgentAttentionImpl : public AttentionBase {
 public:
  explicit AgentAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// agent_num from an/na_bias (h, n_a, 7, 7), bias_grid from ah_bias (1, h, n_a, Hw, 1), dwc_kernel from dwc.weight,
  /// qkv_bias from the presence of q.bias.
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// Projections: q C², kv 2C², proj C², dwc k²C per token. Matmuls: s·A kᵀ, agent_attn·v, s·q Aᵀ, q_attn·agent_v:
  /// 4·n_a·C per token. Pooling, bias resampling and softmax are not multiply-accumulates and are not counted.
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  /// The position bias B1 (1, h, n_a, H·W) and agent bias B2 (1, h, H·W, n_a) for an H×W grid (resampled tables).
  std::pair<torch::Tensor, torch::Tensor> biases(int64_t height, int64_t width) const;

  int64_t agent_num() const { return agent_num_; }
  int64_t pool_size() const { return pool_size_; }
  int64_t bias_grid() const { return bias_grid_; }

  torch::nn::Linear q{nullptr};     ///< (C, C)
  torch::nn::Linear kv{nullptr};    ///< (2C, C): rows [k | v]
  torch::nn::Linear qkv{nullptr};   ///< (3C, C): rows [q | k | v], vit_layout only (then no q, kv)
  torch::nn::Linear proj{nullptr};  ///< (C, C) with bias
  torch::nn::Conv2d dwc{nullptr};   ///< (C, 1, k, k) with bias, groups C
  torch::Tensor an_bias, na_bias;   ///< (h, n_a, 7, 7)
  torch::Tensor ah_bias;            ///< (1, h, n_a, Hw, 1)
  torch::Tensor aw_bias;            ///< (1, h, n_a, 1, Ww)
  torch::Tensor ha_bias;            ///< (1, h, Hw, 1, n_a)
  torch::Tensor wa_bias;            ///< (1, h, 1, Ww, n_a)
  torch::Tensor ac_bias;            ///< (1, h, n_a, P) agent ← prefix token: only with prefix_tokens P > 0
  torch::Tensor ca_bias;            ///< (1, h, P, n_a) prefix token ← agent: only with prefix_tokens P > 0

 private:
  int64_t agent_num_, pool_size_, bias_grid_, dwc_kernel_;
};
TORCH_MODULE(AgentAttention);

}  // namespace rala
