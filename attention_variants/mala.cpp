#include "attention_variants/mala.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& MalaAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

MalaAttentionImpl::MalaAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::mala) {}

torch::Tensor MalaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant mala is not implemented yet");
}

AttentionMacs MalaAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
