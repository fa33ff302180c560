#include "attention_variants/transnormer.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& TransnormerAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

TransnormerAttentionImpl::TransnormerAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::transnormer) {}

torch::Tensor TransnormerAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant transnormer is not implemented yet");
}

AttentionMacs TransnormerAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
