#include "attention_variants/hedgehog.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& HedgehogAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

HedgehogAttentionImpl::HedgehogAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::hedgehog) {}

torch::Tensor HedgehogAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant hedgehog is not implemented yet");
}

AttentionMacs HedgehogAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
