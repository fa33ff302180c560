#include "attention_variants/inline.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& InlineAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

InlineAttentionImpl::InlineAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::inline_attention) {}

torch::Tensor InlineAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant inline is not implemented yet");
}

AttentionMacs InlineAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
