#include "attention_variants/gla.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& GlaAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

GlaAttentionImpl::GlaAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::gla) {}

torch::Tensor GlaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant gla is not implemented yet");
}

AttentionMacs GlaAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
