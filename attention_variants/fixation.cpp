#include "attention_variants/fixation.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& FixationAttentionImpl::schema() {
  static const SettingsSchema s = {
      flag_setting("fixation", true,
                   "re-weight the q and k channels by the fixation ratios (off: plain linear attention)"),
      choice_setting("neighbourhood", "mean", {"mean", "conv", "off"},
                     "neighbourhood association of the ratio input [q; k; v]: window mean, learned depthwise conv, or "
                     "the token alone"),
      integer_setting("neighbourhood_size", 3, 1, 31, "side of the spatial neighbourhood window", /*odd=*/true),
      choice_setting("ratio_activation", "sigmoid", {"sigmoid", "2sigmoid", "softmax"},
                     "fixation ratio r = σ(ρ), 2σ(ρ), or d·softmax(ρ) over the head's d channels"),
      choice_setting("phi", "1+elu", {"1+elu", "relu"}, "kernel feature map φ of the fixed q and k"),
      choice_setting("normalizer", "sum", {"sum", "mean"},
                     "sum = 1/(φq·Σφk + ε) (Katharopoulos), mean = 1/(φq·mean φk + ε) with kv ÷ N")};
  return s;
}

FixationAttentionImpl::FixationAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::fixation, "fixation"),
      fixation_(settings_.flag("fixation")),
      relu_phi_(settings_.choice("phi") == "relu"),
      neighbourhood_size_(settings_.integer("neighbourhood_size")),
      normalizer_(normalizer_from_name(settings_.choice("normalizer"))) {
  build_projections(/*gated=*/false, /*with_lepe=*/false);
  const auto& n = settings_.choice("neighbourhood");
  neighbourhood_ = n == "mean" ? Neighbourhood::mean : n == "conv" ? Neighbourhood::conv : Neighbourhood::off;
  const auto& a = settings_.choice("ratio_activation");
  activation_ = a == "sigmoid" ? RatioActivation::sigmoid : a == "2sigmoid" ? RatioActivation::sigmoid2
                                                                            : RatioActivation::softmax;
  if (!fixation_) return;
  const int64_t C = options_.dim(), d = head_dim();
  ratio = register_module("ratio", torch::nn::Linear(3 * d, 2 * d));
  if (neighbourhood_ == Neighbourhood::conv)
    neighbourhood_conv = register_module("neighbourhood_conv", depthwise(3 * C, neighbourhood_size_));
}

torch::Tensor FixationAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  const int64_t C = options_.dim(), h = options_.heads(), d = head_dim(), N = p.q.size(2);
  auto q = p.q, k = p.k;  // (B, h, N, d)
  if (fixation_) {
    torch::Tensor a = p.all;  // (B, 3C, H, W)
    const int64_t ks = neighbourhood_size_;
    if (neighbourhood_ == Neighbourhood::mean)
      a = torch::avg_pool2d(a, {ks, ks}, {1, 1}, {ks / 2, ks / 2}, /*ceil_mode=*/false, /*count_include_pad=*/false);
    else if (neighbourhood_ == Neighbourhood::conv)
      a = neighbourhood_conv->forward(a);
    auto agg = torch::cat({split_heads(a, 0, C, h), split_heads(a, C, C, h), split_heads(a, 2 * C, C, h)}, -1);
    if (p.prefix > 0)  // a prefix token has no neighbourhood: its ratio reads its own q, k, v
      agg = torch::cat({torch::cat({p.q, p.k, p.v}, -1).narrow(2, 0, p.prefix), agg}, 2);  // (B, h, P + N, 3d)
    auto rho = ratio->forward(agg);  // (B, h, N, 2d)
    torch::Tensor rq, rk;
    switch (activation_) {
      case RatioActivation::sigmoid: rho = torch::sigmoid(rho); break;
      case RatioActivation::sigmoid2: rho = 2.0 * torch::sigmoid(rho); break;
      case RatioActivation::softmax: break;
    }
    rq = rho.narrow(-1, 0, d);
    rk = rho.narrow(-1, d, d);
    if (activation_ == RatioActivation::softmax) {
      rq = static_cast<double>(d) * torch::softmax(rq, -1);
      rk = static_cast<double>(d) * torch::softmax(rk, -1);
    }
    emit_internal(ctx, "ratio_q", rq);
    emit_internal(ctx, "ratio_k", rk);
    q = q * rq;
    k = k * rk;
  }
  auto phi = [&](const torch::Tensor& t) { return relu_phi_ ? torch::relu(t) : elu_feature(t); };
  auto fq = phi(q), fk = phi(k);
  auto r = linear_attention(fq, fk, fq, fk, p.v, normalizer_, kEps);
  emit_probe(ctx, Probe::feature_q, fq);
  emit_probe(ctx, Probe::feature_k, fk);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention, implied_attention(fq, fk, r.z, normalizer_));
  return finish(r.output, p, ctx);
}

int64_t FixationAttentionImpl::matmul_macs(int64_t tokens) const {
  return 2 * tokens * head_dim() * options_.dim() + tokens * options_.dim();
}

int64_t FixationAttentionImpl::extra_projection_macs(int64_t tokens) const {
  if (!fixation_) return 0;
  int64_t m = 6 * (tokens + options_.prefix_tokens()) * head_dim() * options_.dim();  // the ratio on every token
  if (neighbourhood_ == Neighbourhood::conv)
    m += neighbourhood_size_ * neighbourhood_size_ * 3 * options_.dim() * tokens;
  return m;
}

}  // namespace rala
