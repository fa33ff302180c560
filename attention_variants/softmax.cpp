#include "attention_variants/softmax.h"

#include "attention_variants/fused.h"

#include "attention_variants/registry.h"
#include "attention_variants/rope.h"

namespace rala {

const SettingsSchema& SoftmaxAttentionImpl::schema() {
  static const SettingsSchema s = {
      flag_setting("gate", true, "multiply the output by the linear gate o (off: no o projection, qkv has 3C rows)"),
      flag_setting("rope", true, "2-D RoPE on q, k"),
      flag_setting("lepe", true, "5×5 depthwise LePE on v added to the output")};
  return s;
}

SoftmaxAttentionImpl::SoftmaxAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::softmax, "softmax attention"), rope_(settings_.flag("rope")) {
  build_projections(settings_.flag("gate"), settings_.flag("lepe"));
  if (rope_)
    TORCH_CHECK(head_dim() % 4 == 0, "softmax attention: RoPE needs a head dim divisible by 4, got ", head_dim(),
                " (channels ", options_.dim(), ", heads ", options_.heads(), ")");
}

torch::Tensor SoftmaxAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  if (fused_applies(p)) {  // fused CPU path (fused.h): RoPE + scale in one pass, LePE and gate in one pass
    RopeTables t;
    if (rope_) t = context_rope(ctx, head_dim(), x);
    const bool want_attention = probe_wanted(ctx, Probe::attention, x.size(2) * x.size(3));
    torch::Tensor attn, res;
    auto y = fused::softmax_attention(p.all, options_.dim(), options_.heads(), gated_, t.sin, t.cos,
                                      has_lepe() ? lepe_->weight : torch::Tensor(),
                                      has_lepe() ? lepe_->bias : torch::Tensor(), want_attention ? &attn : nullptr,
                                      probe_wanted(ctx, Probe::output) ? &res : nullptr);
    if (want_attention) emit_probe(ctx, Probe::attention, attn);
    if (res.defined()) emit_probe(ctx, Probe::output, res);
    return finish_fused(y, ctx);
  }
  auto q = p.q, k = p.k;  // (B, h, N, d)
  if (rope_) {
    auto tables = context_rope(ctx, head_dim(), x);
    q = theta_shift(q, tables.sin, tables.cos);
    k = theta_shift(k, tables.sin, tables.cos);
  }
  const double scale = std::pow(static_cast<double>(head_dim()), -0.5);
  auto attn = torch::softmax(torch::matmul(q * scale, k.transpose(-2, -1)), -1);  // (B, h, N, N)
  if (probe_wanted(ctx, Probe::attention, attn.size(-1))) emit_probe(ctx, Probe::attention, attn);
  auto res = torch::matmul(attn, p.v);  // (B, h, N, d)
  return finish(res, p, ctx);
}

int64_t SoftmaxAttentionImpl::matmul_macs(int64_t tokens) const {
  // QKᵀ and A·V: 2·N²·C (RoPE and softmax are element-wise, not counted)
  return 2 * tokens * tokens * options_.dim();
}

}  // namespace rala
