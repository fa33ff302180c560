#include "attention_variants/agent.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& AgentAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

AgentAttentionImpl::AgentAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::agent) {}

torch::Tensor AgentAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant agent is not implemented yet");
}

AttentionMacs AgentAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
