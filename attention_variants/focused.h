#pragma once
/// \file focused.h
/// F — focused linear attention (FLatten Transformer, ICCV 2023; LeapLabTHU/FLatten-Transformer models/flatten_swin.py
/// `FocusedLinearAttention`), on 1×1-conv projections (a Linear weight (3C, C) is the conv weight (3C, C, 1, 1)):
///   q, k, v = qkv(x)  (full C, tokens in raster order);   k ← k + PE   (only when position_tokens > 0)
///   q, k ← (ReLU(·) + 1e-6) / softplus(scale)             (scale: (1, 1, C), learnable, init 0)
///   f_p(x) = ‖x‖ · x^p / ‖x^p‖, norms over the full C (before the head split), p = focusing_factor (3)
///   per head: z_i = 1/(q_i · mean_j k_j + 1e-6);  kv = (kᵀ N^-½)(v N^-½);  y = q kv z
///   y ← y + DWC(v), a k×k depthwise conv over the d head channels with weights shared across heads
///   out = proj(y)
/// Probes: kv_buffer, normalizer_z, output (before DWC), output_gated (after DWC), attention.
///
/// Prefix tokens (DeiT's cls token; attention.h): focusing and the buffer (kᵀv/N, mean k) over all P + N tokens; the
/// DWC of the grid's v adds to the grid tokens only, the positional_encoding (position_tokens > 0) to the grid's keys
/// only.
///
/// Usage:
///   rala::FocusedAttention attn(rala::AttentionOptions(64, 2));                         // RAVLT harness
///   rala::FocusedAttention swin(rala::AttentionOptions(64, 2).position_tokens(64));     // FLatten's 8×8 window

#include "attention_variants/projected.h"

namespace rala {

class FocusedAttentionImpl : public ProjectedAttention {
 public:
  explicit FocusedAttentionImpl(AttentionOptions options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// An official state dict's positional_encoding (1, N, C) sets position_tokens = N.
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);

 protected:
  int64_t matmul_macs(int64_t tokens) const override;
  int64_t extra_projection_macs(int64_t tokens) const override;

 public:
  static constexpr double kEps = 1e-6;

  torch::Tensor scale;                ///< (1, 1, C)
  torch::Tensor positional_encoding;  ///< (1, position_tokens, C), undefined when position_tokens == 0
  torch::nn::Conv2d dwc{nullptr};     ///< (d, 1, k, k)

 private:
  int64_t focusing_factor_, dwc_kernel_;
};
TORCH_MODULE(FocusedAttention);

}  // namespace rala
