#include "attention_variants/cosformer.h"

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& CosformerAttentionImpl::schema() {
  static const SettingsSchema s = {choice_setting(
      "cosformer_index", "separable_2d", {"separable_2d", "raster_1d"},
      "token index: separable_2d = Vicinity's 2-D sum form (rows, columns), raster_1d = cosFormer's 1-D module on the "
      "raster order")};
  return s;
}

TensorMap CosformerAttentionImpl::state_from_official(const TensorMap& state) {
  if (!state.count("q_proj.weight")) return state;  // already in our layout
  TensorMap out;
  for (const auto& [key, t] : state) {
    const bool stacked = key.rfind("q_proj.", 0) == 0 || key.rfind("k_proj.", 0) == 0 || key.rfind("v_proj.", 0) == 0;
    if (stacked) continue;
    if (key.rfind("out_proj.", 0) == 0) out["proj." + key.substr(9)] = t;
    else out[key] = t;
  }
  for (const char* p : {"weight", "bias"}) {
    const std::string s(p);
    if (state.count("q_proj." + s) && state.count("k_proj." + s) && state.count("v_proj." + s))
      out["qkv." + s] = torch::cat({state.at("q_proj." + s), state.at("k_proj." + s), state.at("v_proj." + s)});
    else  // leave the parts for the strict loader to name
      for (const char* part : {"q_proj.", "k_proj.", "v_proj."})
        if (state.count(part + s)) out[part + s] = state.at(part + s);
  }
  return out;
}

CosformerAttentionImpl::CosformerAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::cosformer, "cosFormer"),
      index_(settings_.choice("cosformer_index") == "raster_1d" ? CosformerIndex::raster_1d
                                                                : CosformerIndex::separable_2d) {
  build_projections(/*gated=*/false, /*with_lepe=*/false);
}

torch::Tensor CosformerAttentionImpl::angles(CosformerIndex index, int64_t height, int64_t width,
                                             const torch::TensorOptions& options) {
  const double half_pi = M_PI / 2.0;
  const int64_t N = height * width;
  if (index == CosformerIndex::raster_1d) {
    auto i = torch::arange(1, N + 1, torch::kFloat64);  // 1-based raster index
    return (i * half_pi / static_cast<double>(N)).unsqueeze(1).to(options);  // (N, 1)
  }
  auto l = torch::arange(N, torch::kInt64);
  auto rows = torch::floor_divide(l, width).to(torch::kFloat64), cols = torch::remainder(l, width).to(torch::kFloat64);
  return torch::stack({rows * half_pi / static_cast<double>(height), cols * half_pi / static_cast<double>(width)}, 1)
      .to(options);  // (N, 2)
}

torch::Tensor CosformerAttentionImpl::reweight(const torch::Tensor& x, const torch::Tensor& angles,
                                               CosformerIndex index) {
  if (index == CosformerIndex::raster_1d) return torch::cat({x * angles.sin(), x * angles.cos()}, -1);
  auto r = angles.select(1, 0).unsqueeze(1), c = angles.select(1, 1).unsqueeze(1);  // (N, 1)
  return torch::cat({x * r.cos(), x * r.sin(), x * c.cos(), x * c.sin()}, -1);
}

torch::Tensor CosformerAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  const auto index = index_;
  const int64_t P = p.prefix, N = x.size(2) * x.size(3);
  auto theta = angles(index, x.size(2), x.size(3), x.options());
  auto q_plain = torch::relu(p.q), k_plain = torch::relu(p.k);  // (B, h, P + N, d)
  auto q = reweight(q_plain.narrow(2, P, N), theta, index);    // (B, h, N, 4d | 2d)
  auto k = reweight(k_plain.narrow(2, P, N), theta, index);
  if (P > 0) {  // prefix tokens: un-re-weighted pairs with the weight of zero distance (2 in 2-D, 1 in 1-D)
    const double w0 = index == CosformerIndex::raster_1d ? 1.0 : 2.0;
    q = prefix_reweighted_features(q, q_plain, P, w0, /*query=*/true);  // (B, h, P + N, f + 2d)
    k = prefix_reweighted_features(k, k_plain, P, w0, /*query=*/false);
  }
  auto r = linear_attention(q, k, q, k, p.v, Normalizer::sum_clamp, kEps);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  if (probe_wanted(ctx, Probe::attention, q.size(2)))
    emit_probe(ctx, Probe::attention, implied_attention(q, k, r.z, Normalizer::sum_clamp));
  return finish(r.output, p, ctx);
}

int64_t CosformerAttentionImpl::matmul_macs(int64_t tokens) const {
  // re-weighted features of width f = 2d (1-D) or 4d (2-D), + 2d with prefix tokens: kv and q̃·kv: 2·N·f·C;
  // normaliser: N·f·h
  const int64_t f = (index_ == CosformerIndex::raster_1d ? 2 : 4) * head_dim() +
                    (options_.prefix_tokens() > 0 ? 2 * head_dim() : 0);
  return 2 * tokens * f * options_.dim() + tokens * f * options_.heads();
}

}  // namespace rala
