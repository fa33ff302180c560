#include "attention_variants/litemla.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& LitemlaAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

LitemlaAttentionImpl::LitemlaAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::litemla) {}

torch::Tensor LitemlaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant litemla is not implemented yet");
}

AttentionMacs LitemlaAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
