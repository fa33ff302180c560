#pragma once
/// \file agent.h
/// A — Agent attention (ECCV 2024): pooled agent tokens, two softmax stages, DWC.
/// Source: LeapLabTHU/Agent-Attention agent_transformer/models/agent_pvt.py AgentAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class AgentAttentionImpl : public AttentionBase {
 public:
  explicit AgentAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(AgentAttention);

}  // namespace rala
