#include "attention_variants/transnormer_diag.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& TransnormerDiagAttentionImpl::schema() {
  static const SettingsSchema s = {};
  return s;
}

TransnormerDiagAttentionImpl::TransnormerDiagAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::transnormer_diag) {}

torch::Tensor TransnormerDiagAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  TORCH_CHECK(false, "attention variant transnormer_diag is not implemented yet");
}

AttentionMacs TransnormerDiagAttentionImpl::macs(int64_t height, int64_t width) const { return {}; }

}  // namespace rala
