#include "attention_variants/vicinity.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& VicinityAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

VicinityAttentionImpl::VicinityAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::vicinity) {}

torch::Tensor VicinityAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant vicinity is not implemented yet");
}

AttentionMacs VicinityAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
