#pragma once
/// \file mlla.h
/// M — MLLA linear attention (Han et al., "Demystify Mamba in Vision: A Linear Attention Perspective", NeurIPS 2024;
/// LeapLabTHU/MLLA @ 66b6d29 models/mlla.py `LinearAttention` l.94, inside `MLLABlock` l.151):
///   (mixer=1) g = SiLU(act_proj(x));  a = SiLU(dwc₃ₓ₃(in_proj(x)))          (tokens; dwc on the H×W map)
///             (mixer=0) a = x                                                  (v is the input itself)
///   q, k = qk(a);  φ = elu + 1 over the full C;  v = a                         (no v projection)
///   R = complex 2-D RoPE over the FULL C before the head split (see mlla_rope_rotations), numerator only
///   per head: z_i = 1/(φq_i · mean_j φk_j + 1e-6);  kv = (1/N) Σ_j R(φk_j)ᵀ v_j;  y_i = R(φq_i) kv z_i
///   y ← y + LePE₃ₓ₃(v)                                                        (lepe=1; depthwise with bias)
///   (mixer=1) out = out_proj(y ⊙ g)      (mixer=0) out = y                    (the bare module has no projection)
/// Parameters keep the official names: with mixer=1 those of MLLABlock's mixer part — in_proj, act_proj, dwc,
/// out_proj, attn.qk, attn.lepe, attn.rope.rotations; with mixer=0 those of LinearAttention — qk, lepe,
/// rope.rotations. `rope.rotations` (rotations_h, rotations_w, C/2, 2) is the official deterministic [cos, sin] buffer,
/// kept only so that official state dicts load strictly: the forward regenerates the rotations for the grid of each
/// call (any H×W, non-square too; cached per (C, H, W, dtype, device)), so the stored copy is never read.
/// Deviations from the official code: any grid runs (the official forward sets h = w = √N); the RoPE keeps the input
/// dtype (the official forward casts to fp32: identical in fp32).
/// Probes: feature_q/feature_k (φ), kv_buffer, normalizer_z, output (before LePE and gate), output_gated (after LePE
/// and, with mixer=1, the gate g; before out_proj), attention (A with output = A·v, v = the attention input a).
/// Internals (golden names): rope_q, rope_k (B, h, N, d); lepe (B, N, C); with mixer=1 also gate = g,
/// attn_input = a, attn_output = y before the gate (B, N, C).
///
/// Prefix tokens (DeiT's cls token; attention.h): kv and the normaliser over all P + N tokens; the complex RoPE leaves
/// the cls token un-rotated, LePE adds to the grid tokens only; in the mixer the depthwise conv is the grid's, so the
/// cls token's attention input is SiLU(in_proj(x)); the gate and out_proj apply to every token.
///
/// Usage:
///   rala::MllaAttention mixer(rala::AttentionOptions(64, 2));                         // MLLA's token mixer
///   rala::MllaAttention bare(rala::AttentionOptions(64, 2).set("mixer", false));      // LinearAttention alone

#include "attention_variants/common.h"

namespace rala {

/// The official `RoPE(shape=(H, W, C)).rotations` buffer: (H, W, C/2, 2) = [cos, sin] of the angles
/// cat[row·θ_0 … row·θ_{K−1}, col·θ_0 … col·θ_{K−1}], θ_k = 10000^(−k/K), K = C/4; rows, columns 0-based.
/// Computed in float64, cast to `options`' dtype. Requires C % 4 == 0.
torch::Tensor mlla_rope_rotations(int64_t channels, int64_t height, int64_t width,
                                  const torch::TensorOptions& options = torch::kFloat32);
/// The same rotations as theta_shift tables over the full C: sin, cos (N, C), angle j repeated at channels 2j, 2j+1,
/// so that theta_shift(x (…, N, C), sin, cos) multiplies each channel pair (2j, 2j+1) by e^{i·angle_j}.
RopeTables mlla_rope_tables(int64_t channels, int64_t height, int64_t width,
                            const torch::TensorOptions& options = torch::kFloat32);
/// mlla_rope_tables from a cache keyed by (C, H, W, dtype, device), built once per grid (thread-safe).
RopeTables cached_mlla_rope_tables(int64_t channels, int64_t height, int64_t width,
                                   const torch::TensorOptions& options = torch::kFloat32);

class MllaAttentionImpl : public AttentionBase {
 public:
  explicit MllaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// From an official state dict: mixer (in_proj present or not), qkv_bias, rope, lepe, and the grid the stored
  /// rope.rotations buffer was built for (rotations_h, rotations_w).
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// Projections: qk 2C²N, LePE 9CN; mixer: in_proj, act_proj, out_proj 3C²N, dwc 9CN.
  /// Matmuls: kv and R(φq)·kv 2·N·d·C, normaliser N·C. (RoPE, SiLU and the gate are element-wise: not counted.)
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }
  bool mixer() const { return mixer_; }
  static constexpr double kEps = 1e-6;

  torch::nn::Linear in_proj{nullptr}, act_proj{nullptr}, out_proj{nullptr};  ///< (C, C), mixer=1 only
  torch::nn::Conv2d dwc{nullptr};                                            ///< (C, 1, 3, 3), mixer=1 only
  torch::nn::Linear qk{nullptr};                                             ///< (2C, C), rows [q | k]
  torch::nn::Conv2d lepe{nullptr};                                           ///< (C, 1, 3, 3), lepe=1 only
  torch::Tensor rotations;  ///< (rotations_h, rotations_w, C/2, 2) buffer, rope=1 only (stored, not read)

 private:
  bool mixer_, rope_;
};
TORCH_MODULE(MllaAttention);

}  // namespace rala
