#pragma once
/// \file softmax.h
/// S — softmax attention as in the official RAVLT stages 3–4 (`VanillaSelfAttention`, qhfan/RALA RALA.py):
///   q, k, v, o = qkvo(x) (1×1 conv);  q, k ← RoPE(q), RoPE(k)
///   y = softmax(d^-½ q kᵀ) v + LePE₅ₓ₅(v);   out = proj(y ⊙ o)
/// Switches (default on): rope, lepe, gate. Probes: attention (on request), output, output_gated.
///
/// Prefix tokens (DeiT's cls token; attention.h): the cls token is a query and a key of the softmax over all P + N
/// tokens (timm's DeiT with gate, rope, lepe off); RoPE leaves it un-rotated, LePE adds to the grid tokens only, the
/// gate o applies to every token.
///
/// Usage:
///   rala::SoftmaxAttention attn(rala::AttentionOptions(256, 4));
///   auto y = attn->forward(x, rala::AttentionContext::for_input(x, 64));

#include "attention_variants/projected.h"

namespace rala {

class SoftmaxAttentionImpl : public ProjectedAttention {
 public:
  explicit SoftmaxAttentionImpl(AttentionOptions options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();

 protected:
  int64_t matmul_macs(int64_t tokens) const override;

 public:
  bool uses_rope() const override { return rope_; }

 private:
  bool rope_;
};
TORCH_MODULE(SoftmaxAttention);

}  // namespace rala
