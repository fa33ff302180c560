#include "attention_variants/hedgehog.h"

#include "attention_variants/registry.h"
#include "attention_variants/rope.h"

#include <cmath>

namespace rala {

// ------------------------------------------------------------------------------------------------
// The pieces, as free functions on per-head tensors

torch::Tensor hedgehog_feature_map(const torch::Tensor& x, const torch::Tensor& layer, double eps) {
  TORCH_CHECK(x.dim() == 4 && layer.dim() == 3 && x.size(1) == layer.size(0) && x.size(3) == layer.size(1),
              "hedgehog feature map: x must be (B, h, N, d) and layer (h, d, f), got ", x.sizes(), " and ",
              layer.sizes());
  auto u = torch::matmul(x, layer);  // einsum('hdf,bhld->bhlf'): (B, h, N, f)
  return torch::cat({torch::softmax(u, -1), torch::softmax(-u, -1)}, -1).clamp_min(eps);  // (B, h, N, 2f)
}

torch::Tensor hedgehog_quadratic_map(const torch::Tensor& phi_q, const torch::Tensor& phi_k, double eps) {
  auto a = torch::matmul(phi_q, phi_k.transpose(-2, -1));  // (B, h, N, N), no scaling
  return a / (a.sum(-1, true) + eps);
}

SoftmaxTeacher softmax_teacher(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const double scale = std::pow(static_cast<double>(k.size(-1)), -0.5);
  SoftmaxTeacher t;
  // Written as softmax.cpp writes it (q scaled first), so that the teacher is bit for bit the softmax layer.
  t.attention = torch::softmax(torch::matmul(q * scale, k.transpose(-2, -1)), -1);  // (B, h, N, N)
  t.output = torch::matmul(t.attention, v);                                          // (B, h, N, d)
  return t;
}

MimicryLoss attention_mimicry_loss(const torch::Tensor& attn_pred, const torch::Tensor& attn_true,
                                   const torch::Tensor& y_pred, const torch::Tensor& y_true) {
  TORCH_CHECK(attn_pred.sizes() == attn_true.sizes() && y_pred.sizes() == y_true.sizes(),
              "attention mimicry loss: predicted and true shapes differ (maps ", attn_pred.sizes(), " vs ",
              attn_true.sizes(), ", outputs ", y_pred.sizes(), " vs ", y_true.sizes(), ")");
  MimicryLoss l;
  // nn.CrossEntropyLoss(log(clamp_min(A_pred)), A_true) on the (rows, N) view: soft targets, log_softmax of the input.
  auto logp = torch::log_softmax(attn_pred.clamp_min(1e-12).log(), -1);
  l.xent = -(attn_true * logp).sum(-1).mean();
  l.mse = (y_pred - y_true).pow(2).mean();
  return l;
}

// ------------------------------------------------------------------------------------------------
// Modules

HedgehogMlpImpl::HedgehogMlpImpl(int64_t heads, int64_t head_dim, int64_t feature_dim) {
  layer = register_parameter("layer", torch::empty({heads, head_dim, feature_dim}));
  // lolcats: nn.init.kaiming_uniform_ on the 3-D tensor: fan_in = d·f, bound = √2·√(3/(d·f)) = √(6/(d·f)).
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(layer);
}

HedgehogFeatureMapImpl::HedgehogFeatureMapImpl(int64_t heads, int64_t head_dim, int64_t feature_dim) {
  mlp = register_module("mlp", HedgehogMlp(heads, head_dim, feature_dim));
}

torch::Tensor HedgehogFeatureMapImpl::forward(const torch::Tensor& x, double eps) {
  return hedgehog_feature_map(x, mlp->layer, eps);
}

const SettingsSchema& HedgehogAttentionImpl::schema() {
  static const SettingsSchema s = {
      flag_setting("gate", true, "multiply the output by the linear gate o (off: no o projection, qkv has 3C rows)"),
      flag_setting("rope", true, "2-D RoPE on q, k before the feature maps (as lolcats)"),
      flag_setting("lepe", true, "5×5 depthwise LePE on v added to the output"),
      integer_setting("feature_dim", 0, 0, int64_t{1} << 20,
                      "f, columns of each head's (d, f) feature-map matrix; φ has 2f features (0 = head_dim/2)"),
      choice_setting("feature_init", "kaiming", {"kaiming", "identity"},
                     "feature-map init: lolcats' kaiming_uniform (fan_in d·f) or its zero_init (eye(d, f) per head)"),
      real_setting("eps", 1e-12, 0.0, 1.0, "ε added to the normaliser φ(q)·Σφ(k), and φ's floor")};
  return s;
}

std::vector<SettingPair> HedgehogAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  const std::string key = "feature_map_q.mlp.layer";
  for (const auto& [name, shape] : shapes) {
    const bool match = name.size() >= key.size() && name.compare(name.size() - key.size(), key.size(), key) == 0;
    if (match && shape.size() == 3) return {{"feature_dim", std::to_string(shape[2])}};
  }
  return {};
}

HedgehogAttentionImpl::HedgehogAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::hedgehog, "hedgehog"),
      rope_(settings_.flag("rope")),
      feature_dim_(settings_.integer("feature_dim")),
      eps_(settings_.real("eps")) {
  build_projections(settings_.flag("gate"), settings_.flag("lepe"));
  if (rope_)
    TORCH_CHECK(head_dim() % 4 == 0, "hedgehog: RoPE needs a head dim divisible by 4, got ", head_dim(), " (channels ",
                options_.dim(), ", heads ", options_.heads(), ")");
  if (feature_dim_ == 0) {
    feature_dim_ = head_dim() / 2;
    TORCH_CHECK(feature_dim_ > 0, "hedgehog: feature_dim=0 means head_dim/2, which is 0 for head dim ", head_dim(),
                "; give feature_dim >= 1");
  }
  const int64_t h = options_.heads(), d = head_dim();
  feature_map_q = register_module("feature_map_q", HedgehogFeatureMap(h, d, feature_dim_));
  feature_map_k = register_module("feature_map_k", HedgehogFeatureMap(h, d, feature_dim_));
  if (settings_.choice("feature_init") == "identity") {
    // lolcats zero_init_ (no skip connection): nn.init.eye_ on each head's (d, f) matrix.
    torch::NoGradGuard no_grad;
    auto eye = torch::eye(d, feature_dim_).expand({h, d, feature_dim_});
    feature_map_q->mlp->layer.copy_(eye);
    feature_map_k->mlp->layer.copy_(eye);
  }
}

HedgehogAttentionImpl::Result HedgehogAttentionImpl::attend(const torch::Tensor& q, const torch::Tensor& k,
                                                            const torch::Tensor& v) {
  Result r;
  r.phi_q = feature_map_q->forward(q, eps_);  // (B, h, N, 2f)
  r.phi_k = feature_map_k->forward(k, eps_);
  auto la = linear_attention(r.phi_q, r.phi_k, r.phi_q, r.phi_k, v, Normalizer::sum, eps_);
  r.output = la.output;                 // (B, h, N, d)
  r.kv = la.kv;                         // (B, h, 2f, d)
  r.z = la.z;                           // (B, h, N, 1)
  r.k_sum = r.phi_k.sum(-2);            // (B, h, 2f)
  return r;
}

HedgehogAttentionImpl::Mimicry HedgehogAttentionImpl::mimic(const torch::Tensor& q, const torch::Tensor& k,
                                                            const torch::Tensor& v) {
  Mimicry m;
  {
    torch::NoGradGuard no_grad;
    m.teacher = softmax_teacher(q, k, v);
  }
  auto phi_q = feature_map_q->forward(q, eps_), phi_k = feature_map_k->forward(k, eps_);
  m.attention = hedgehog_quadratic_map(phi_q, phi_k, eps_);  // (B, h, N, N)
  m.output = torch::matmul(m.attention, v);                   // (B, h, N, d)
  m.loss = attention_mimicry_loss(m.attention, m.teacher.attention, m.output, m.teacher.output);
  return m;
}

torch::Tensor HedgehogAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  auto q = p.q, k = p.k;  // (B, h, N, d)
  if (rope_) {
    auto tables = context_rope(ctx, head_dim(), x);
    q = theta_shift(q, tables.sin, tables.cos);
    k = theta_shift(k, tables.sin, tables.cos);
  }
  const int64_t N = q.size(-2);
  if (distillation_) {
    auto m = mimic(q, k, p.v);
    last_mimicry_ = m.loss;
    if (probe_wanted(ctx, Probe::attention, N)) emit_probe(ctx, Probe::attention, m.attention);
    emit_internal(ctx, "attn_softmax", m.teacher.attention);
    emit_internal(ctx, "softmax_output", m.teacher.output);
    // The teacher's output goes on (lolcats train_attention): the next layers see teacher hidden states.
    torch::NoGradGuard no_grad;
    return finish(m.teacher.output, p, ctx);
  }
  auto r = attend(q, k, p.v);
  emit_probe(ctx, Probe::feature_q, r.phi_q);
  emit_probe(ctx, Probe::feature_k, r.phi_k);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  emit_internal(ctx, "k_sum", r.k_sum);
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention, implied_attention(r.phi_q, r.phi_k, r.z, Normalizer::sum));
  if (internal_wanted(ctx, "attn_softmax") || internal_wanted(ctx, "softmax_output")) {
    torch::NoGradGuard no_grad;
    auto t = softmax_teacher(q, k, p.v);
    emit_internal(ctx, "attn_softmax", t.attention);
    emit_internal(ctx, "softmax_output", t.output);
  }
  return finish(r.output, p, ctx);
}

int64_t HedgehogAttentionImpl::extra_projection_macs(int64_t tokens) const {
  // the feature-map matrices u = x W for q and k: 2 · T · h · d · f = 2·T·C·f on the T = P + N tokens
  return 2 * (tokens + options_.prefix_tokens()) * options_.dim() * feature_dim_;
}

int64_t HedgehogAttentionImpl::matmul_macs(int64_t tokens) const {
  // S = φ(K)ᵀV and φ(Q)·S: 2 · N · h · 2f · d; normaliser φ(q)·z: N · h · 2f (softmaxes are element-wise, not counted)
  const int64_t h = options_.heads();
  return 2 * tokens * h * 2 * feature_dim_ * head_dim() + tokens * h * 2 * feature_dim_;
}

}  // namespace rala
