#include "attention_variants/pola.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& PolaAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

PolaAttentionImpl::PolaAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::pola) {}

torch::Tensor PolaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant pola is not implemented yet");
}

AttentionMacs PolaAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
