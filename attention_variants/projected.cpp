#include "attention_variants/projected.h"

#include "attention_variants/fused.h"

namespace rala {

ProjectedAttention::ProjectedAttention(AttentionOptions options, Variant variant, const char* variant_name)
    : AttentionBase(std::move(options), variant), variant_name_(variant_name) {
  check_head_split(options_.dim(), options_.heads(), variant_name);
}

void ProjectedAttention::build_projections(bool gated, bool with_lepe) {
  const int64_t C = options_.dim();
  gated_ = gated;
  qkv_ = register_module(gated ? "qkvo" : "qkv", conv1x1(C, (gated ? 4 : 3) * C));
  if (with_lepe) lepe_ = register_module("lepe", depthwise(C, 5));
  proj_ = register_module("proj", conv1x1(C, C));
}

Projected ProjectedAttention::project(const torch::Tensor& x) {
  check_attention_input(x, options_, variant_name_);
  const int64_t C = options_.dim(), h = options_.heads();
  Projected p;
  auto& all = p.all = qkv_->forward(x);  // (B, 3C|4C, H, W)
  p.q = split_heads(all, 0, C, h);  // (B, h, N, d)
  p.k = split_heads(all, C, C, h);
  p.v = split_heads(all, 2 * C, C, h);
  p.v_map = all.narrow(1, 2 * C, C);  // (B, C, H, W)
  if (gated_) p.o_map = all.narrow(1, 3 * C, C);
  return p;
}

torch::Tensor ProjectedAttention::finish(const torch::Tensor& res, const Projected& p, const AttentionContext& ctx,
                                         const torch::Tensor& extra) {
  emit_probe(ctx, Probe::output, res);
  const int64_t H = p.v_map.size(2), W = p.v_map.size(3);
  auto y = merge_heads(res, H, W);  // (B, C, H, W)
  if (!lepe_.is_empty()) y = y + lepe_->forward(p.v_map);
  if (extra.defined()) y = y + extra;
  if (gated_) y = y * p.o_map;
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, split_heads(y, 0, y.size(1), options_.heads()));
  return proj_->forward(y);
}

bool ProjectedAttention::fused_applies(const Projected& p) const {
  return fused::channels_last(p.all) &&
         fused::applies({p.all, lepe_.is_empty() ? torch::Tensor() : lepe_->weight,
                         lepe_.is_empty() ? torch::Tensor() : lepe_->bias});
}

torch::Tensor ProjectedAttention::finish_fused(const torch::Tensor& y, const AttentionContext& ctx) {
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, split_heads(y, 0, y.size(1), options_.heads()));
  return proj_->forward(y);
}

AttentionMacs ProjectedAttention::macs(int64_t height, int64_t width) const {
  const int64_t C = options_.dim(), N = height * width;
  AttentionMacs m;
  m.projections = (gated_ ? 4 : 3) * C * C * N + C * C * N + extra_projection_macs(N);
  if (!lepe_.is_empty()) m.projections += 25 * C * N;
  m.matmuls = matmul_macs(N);
  return m;
}

}  // namespace rala
