#include "attention_variants/chela.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& ChelaAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

ChelaAttentionImpl::ChelaAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::chela) {}

torch::Tensor ChelaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant chela is not implemented yet");
}

AttentionMacs ChelaAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
