#include "attention_variants/mlla.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& MllaAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

MllaAttentionImpl::MllaAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::mlla) {}

torch::Tensor MllaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant mlla is not implemented yet");
}

AttentionMacs MllaAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
