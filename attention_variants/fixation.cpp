#include "attention_variants/fixation.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& FixationAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

FixationAttentionImpl::FixationAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::fixation) {}

torch::Tensor FixationAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant fixation is not implemented yet");
}

AttentionMacs FixationAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
