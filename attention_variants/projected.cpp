#include "attention_variants/projected.h"

#include "attention_variants/fused.h"

namespace rala {

torch::Tensor Projected::token_channels(int64_t c0, int64_t n) const {
  if (tokens.defined()) return tokens.narrow(2, c0, n);
  return map_to_tokens(all.narrow(1, c0, n));
}

ProjectedAttention::ProjectedAttention(AttentionOptions options, Variant variant, const char* variant_name)
    : AttentionBase(std::move(options), variant), variant_name_(variant_name) {
  check_head_split(options_.dim(), options_.heads(), variant_name);
}

void ProjectedAttention::build_projections(bool gated, bool with_lepe) {
  const int64_t C = options_.dim();
  gated_ = gated;
  const char* name = gated ? "qkvo" : "qkv";
  if (options_.vit_layout())
    qkv_linear_ = register_module(name, torch::nn::Linear(C, (gated ? 4 : 3) * C));
  else
    qkv_ = register_module(name, conv1x1(C, (gated ? 4 : 3) * C));
  if (with_lepe) lepe_ = register_module("lepe", depthwise(C, 5));
  if (options_.vit_layout())
    proj_linear_ = register_module("proj", torch::nn::Linear(C, C));
  else
    proj_ = register_module("proj", conv1x1(C, C));
}

torch::Tensor ProjectedAttention::qkv_weight() const {
  return qkv_linear_.is_empty() ? qkv_->weight.flatten(1) : qkv_linear_->weight;
}
torch::Tensor ProjectedAttention::qkv_bias() const { return qkv_linear_.is_empty() ? qkv_->bias : qkv_linear_->bias; }
torch::Tensor ProjectedAttention::proj_weight() const {
  return proj_linear_.is_empty() ? proj_->weight.flatten(1) : proj_linear_->weight;
}
torch::Tensor ProjectedAttention::proj_bias() const { return proj_linear_.is_empty() ? proj_->bias : proj_linear_->bias; }

Projected ProjectedAttention::project(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, variant_name_);
  const int64_t C = options_.dim(), h = options_.heads();
  Projected p;
  auto prefix = context_prefix(ctx, options_, x, variant_name_);
  if (!prefix.defined() && !options_.vit_layout()) {  // the map path (RAVLT)
    auto& all = p.all = qkv_->forward(x);  // (B, 3C|4C, H, W)
    p.q = split_heads(all, 0, C, h);  // (B, h, N, d)
    p.k = split_heads(all, C, C, h);
    p.v = split_heads(all, 2 * C, C, h);
    p.v_map = all.narrow(1, 2 * C, C);  // (B, C, H, W)
    if (gated_) p.o_map = all.narrow(1, 3 * C, C);
    return p;
  }
  // The token path: one Linear over the prefix tokens and the grid tokens (timm's Attention: qkv(x) on (B, N, C)).
  const int64_t H = x.size(2), W = x.size(3);
  p.prefix = prefix.defined() ? prefix.size(1) : 0;
  p.tokens = torch::linear(with_prefix(prefix, map_to_tokens(x)), qkv_weight(), qkv_bias());  // (B, P + N, 3C|4C)
  p.all = tokens_to_map(p.tokens.narrow(1, p.prefix, H * W), H, W);                             // (B, 3C|4C, H, W)
  p.q = token_heads(p.tokens.narrow(2, 0, C), h);  // (B, h, P + N, d)
  p.k = token_heads(p.tokens.narrow(2, C, C), h);
  p.v = token_heads(p.tokens.narrow(2, 2 * C, C), h);
  p.v_map = p.all.narrow(1, 2 * C, C);
  if (gated_) p.o_map = p.all.narrow(1, 3 * C, C);
  return p;
}

torch::Tensor ProjectedAttention::finish(const torch::Tensor& res, const Projected& p, const AttentionContext& ctx,
                                         const torch::Tensor& extra) {
  emit_probe(ctx, Probe::output, res);
  const int64_t H = p.v_map.size(2), W = p.v_map.size(3);
  if (!p.tokens.defined()) {  // the map path
    auto y = merge_heads(res, H, W);  // (B, C, H, W)
    if (!lepe_.is_empty()) y = y + lepe_->forward(p.v_map);
    if (extra.defined()) y = y + extra;
    if (gated_) y = y * p.o_map;
    if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, split_heads(y, 0, y.size(1), options_.heads()));
    return proj_->forward(y);
  }
  const int64_t C = options_.dim(), P = p.prefix;
  auto y = merge_token_heads(res);  // (B, P + N, C)
  torch::Tensor positional;         // (B, C, H, W): on the grid tokens only
  if (!lepe_.is_empty()) positional = lepe_->forward(p.v_map);
  if (extra.defined()) positional = positional.defined() ? positional + extra : extra;
  if (positional.defined()) {
    auto grid = y.narrow(1, P, H * W) + map_to_tokens(positional);
    y = P > 0 ? torch::cat({y.narrow(1, 0, P), grid}, 1) : grid;
  }
  if (gated_) y = y * p.tokens.narrow(2, 3 * C, C);
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(y, options_.heads()));
  return finish_tokens(ctx, torch::linear(y, proj_weight(), proj_bias()), H, W);
}

bool ProjectedAttention::fused_applies(const Projected& p) const {
  // The fused kernels take the grid in the RAVLT layout: no prefix tokens, no token path, the 1×1-conv proj.
  if (p.prefix > 0 || p.tokens.defined() || proj_.is_empty() || !p.all.defined()) return false;
  return fused::channels_last(p.all) &&
         fused::applies({p.all, lepe_.is_empty() ? torch::Tensor() : lepe_->weight,
                         lepe_.is_empty() ? torch::Tensor() : lepe_->bias});
}

torch::Tensor ProjectedAttention::finish_fused(const torch::Tensor& y, const AttentionContext& ctx) {
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, split_heads(y, 0, y.size(1), options_.heads()));
  return proj_->forward(y);
}

AttentionMacs ProjectedAttention::macs(int64_t height, int64_t width) const {
  const int64_t C = options_.dim(), N = height * width, T = options_.prefix_tokens() + N;
  AttentionMacs m;
  m.projections = (gated_ ? 4 : 3) * C * C * T + C * C * T + extra_projection_macs(N);
  if (!lepe_.is_empty()) m.projections += 25 * C * N;
  m.matmuls = matmul_macs(T);
  return m;
}

}  // namespace rala
