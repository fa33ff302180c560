#include "attention_variants/agent.h"

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

namespace {

constexpr const char* kName = "agent attention";
constexpr int64_t kTable = 7;  // an_bias / na_bias are (h, n_a, 7, 7) in the official code

namespace F = torch::nn::functional;

/// t resampled along `dim` to `size` by linear interpolation, align_corners=False (F.interpolate mode='linear');
/// t itself when the size already matches (so the official grid sees the official tables bit for bit).
torch::Tensor resample_axis(const torch::Tensor& t, int64_t dim, int64_t size) {
  if (t.size(dim) == size) return t;
  auto moved = t.movedim(dim, -1);
  auto shape = moved.sizes().vec();
  auto lines = moved.reshape({1, -1, shape.back()});  // (1, lines, G)
  auto r = F::interpolate(lines, F::InterpolateFuncOptions()
                                     .size(std::vector<int64_t>{size})
                                     .mode(torch::kLinear)
                                     .align_corners(false));
  shape.back() = size;
  return r.reshape(shape).movedim(-1, dim);
}

/// (h, n_a, 7, 7) → (h, n_a, H, W) bilinearly, align_corners=False, as the official F.interpolate(mode='bilinear').
torch::Tensor resample_table(const torch::Tensor& t, int64_t height, int64_t width) {
  return F::interpolate(t, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{height, width})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

int64_t exact_sqrt(int64_t n) {
  auto r = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  return r * r == n ? r : -1;
}

/// trunc_normal_(std=.02) as timm does it (truncated at ±2, i.e. ~100σ: effectively a normal).
torch::Tensor small_normal(std::vector<int64_t> shape) { return (torch::randn(shape) * 0.02).clamp_(-2.0, 2.0); }

}  // namespace

const SettingsSchema& AgentAttentionImpl::schema() {
  static const SettingsSchema s = {
      integer_setting("agent_num", 9, 1, 4096,
                      "agent tokens n_a = P×P (a perfect square), pooled from q; PVT uses 9-16-49-49 per stage"),
      integer_setting("bias_grid", 8, 1, 4096,
                      "grid side Hw = Ww = √num_patches the ah/aw/ha/wa bias tables are sized for (resampled on others)"),
      integer_setting("dwc_kernel", 3, 1, 31, "kernel of the depthwise conv on v (C groups, with bias)", /*odd=*/true),
      flag_setting("qkv_bias", true, "biases on the q and kv Linear layers (PVT builds them with qkv_bias=True)")};
  return s;
}

std::vector<SettingPair> AgentAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  std::vector<SettingPair> out;
  auto it = shapes.find("an_bias");
  if (it != shapes.end() && it->second.size() == 4) out.emplace_back("agent_num", std::to_string(it->second[1]));
  it = shapes.find("ah_bias");
  if (it != shapes.end() && it->second.size() == 5) out.emplace_back("bias_grid", std::to_string(it->second[3]));
  it = shapes.find("dwc.weight");
  if (it != shapes.end() && it->second.size() == 4) out.emplace_back("dwc_kernel", std::to_string(it->second[2]));
  if (shapes.count("q.weight")) out.emplace_back("qkv_bias", shapes.count("q.bias") ? "1" : "0");
  if (shapes.count("qkv.weight")) out.emplace_back("qkv_bias", shapes.count("qkv.bias") ? "1" : "0");  // DeiT port
  return out;
}

AgentAttentionImpl::AgentAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::agent),
      agent_num_(settings_.integer("agent_num")),
      pool_size_(exact_sqrt(agent_num_)),
      bias_grid_(settings_.integer("bias_grid")),
      dwc_kernel_(settings_.integer("dwc_kernel")) {
  check_head_split(options_.dim(), options_.heads(), kName);
  TORCH_CHECK(pool_size_ > 0, kName, ": setting 'agent_num' must be a perfect square (P×P pooled agents), got ",
              agent_num_);
  const int64_t C = options_.dim(), h = options_.heads(), n = agent_num_, G = bias_grid_;
  const bool qkv_bias = settings_.flag("qkv_bias");
  if (options_.vit_layout()) {  // the DeiT port's one qkv Linear, rows [q | k | v]
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(C, 3 * C).bias(qkv_bias)));
  } else {
    q = register_module("q", torch::nn::Linear(torch::nn::LinearOptions(C, C).bias(qkv_bias)));
    kv = register_module("kv", torch::nn::Linear(torch::nn::LinearOptions(C, 2 * C).bias(qkv_bias)));
  }
  proj = register_module("proj", torch::nn::Linear(C, C));
  dwc = register_module("dwc", torch::nn::Conv2d(torch::nn::Conv2dOptions(C, C, dwc_kernel_)
                                                     .padding(dwc_kernel_ / 2)
                                                     .groups(C)
                                                     .bias(true)));
  an_bias = register_parameter("an_bias", small_normal({h, n, kTable, kTable}));
  na_bias = register_parameter("na_bias", small_normal({h, n, kTable, kTable}));
  ah_bias = register_parameter("ah_bias", small_normal({1, h, n, G, 1}));
  aw_bias = register_parameter("aw_bias", small_normal({1, h, n, 1, G}));
  ha_bias = register_parameter("ha_bias", small_normal({1, h, G, 1, n}));
  wa_bias = register_parameter("wa_bias", small_normal({1, h, 1, G, n}));
  if (const int64_t P = options_.prefix_tokens(); P > 0) {  // the DeiT port's cls biases (P = 1 there)
    ac_bias = register_parameter("ac_bias", small_normal({1, h, n, P}));
    ca_bias = register_parameter("ca_bias", small_normal({1, h, P, n}));
  }
}

std::pair<torch::Tensor, torch::Tensor> AgentAttentionImpl::biases(int64_t height, int64_t width) const {
  const int64_t h = options_.heads(), n = agent_num_, N = height * width;
  // Agent ← token: bilinear 7×7 table + row table + column table.
  auto position_bias = resample_table(an_bias, height, width).reshape({1, h, n, N}) +
                       (resample_axis(ah_bias, 3, height) + resample_axis(aw_bias, 4, width)).reshape({1, h, n, N});
  // Token ← agent.
  auto agent_bias = resample_table(na_bias, height, width).reshape({1, h, n, N}).permute({0, 1, 3, 2}) +
                    (resample_axis(ha_bias, 2, height) + resample_axis(wa_bias, 3, width)).reshape({1, h, N, n});
  return {position_bias, agent_bias};  // (1, h, n_a, N), (1, h, N, n_a)
}

torch::Tensor AgentAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, kName);
  auto prefix = context_prefix(ctx, options_, x, kName);
  const int64_t B = x.size(0), C = options_.dim(), h = options_.heads(), d = C / h;
  const int64_t T = ctx.prefix_tokens(), H = x.size(2), W = x.size(3), G = H * W, N = T + G;  // N: all tokens
  const int64_t P = pool_size_, n = agent_num_;
  const double scale = std::pow(static_cast<double>(d), -0.5);

  auto tokens = with_prefix(prefix, map_to_tokens(x));  // (B, N, C), the prefix first
  torch::Tensor q_tokens, kv_tokens;                     // (B, N, C), (B, N, 2C): [k | v]
  if (!qkv.is_empty()) {
    auto all = qkv->forward(tokens);
    q_tokens = all.narrow(2, 0, C);
    kv_tokens = all.narrow(2, C, 2 * C);
  } else {
    q_tokens = q->forward(tokens);
    kv_tokens = kv->forward(tokens);
  }
  auto v_tokens = kv_tokens.narrow(2, C, C);
  // Agents: adaptive average pool of the grid's q as a map (the official q.reshape(b, H, W, c).permute(0, 3, 1, 2);
  // the DeiT port pools q[:, 1:], the grid without the cls token).
  auto agents = torch::adaptive_avg_pool2d(tokens_to_map(q_tokens.narrow(1, T, G), H, W), {P, P})
                    .reshape({B, C, n})
                    .transpose(1, 2);  // (B, n_a, C), agent a = row·P + col
  auto qh = token_heads(q_tokens, h);                     // (B, h, N, d)
  auto kh = token_heads(kv_tokens.narrow(2, 0, C), h);    // (B, h, N, d)
  auto vh = token_heads(v_tokens, h);                     // (B, h, N, d)
  auto ah = token_heads(agents, h);                       // (B, h, n_a, d)
  emit_internal(ctx, "agent_tokens", ah);

  auto bias = biases(H, W);
  if (T > 0) {  // the DeiT port: the cls biases in front of the grid's (agent ← cls: ac, cls ← agent: ca)
    bias.first = torch::cat({ac_bias, bias.first}, -1);    // (1, h, n_a, T + G)
    bias.second = torch::cat({ca_bias, bias.second}, -2);  // (1, h, T + G, n_a)
  }
  emit_internal(ctx, "position_bias", bias.first);
  emit_internal(ctx, "agent_bias", bias.second);
  auto agent_attn = torch::softmax(torch::matmul(ah * scale, kh.transpose(-2, -1)) + bias.first, -1);  // (B,h,n_a,N)
  auto agent_v = torch::matmul(agent_attn, vh);                                                        // (B,h,n_a,d)
  auto q_attn = torch::softmax(torch::matmul(qh * scale, ah.transpose(-2, -1)) + bias.second, -1);   // (B,h,N,n_a)
  auto o = torch::matmul(q_attn, agent_v);                                                             // (B,h,N,d)
  emit_internal(ctx, "agent_attn", agent_attn);
  emit_internal(ctx, "agent_v", agent_v);
  emit_internal(ctx, "q_attn", q_attn);
  emit_internal(ctx, "output_heads", o);
  emit_probe(ctx, Probe::kv_buffer, agent_v);
  emit_probe(ctx, Probe::output, o);
  if (probe_wanted(ctx, Probe::attention, N)) emit_probe(ctx, Probe::attention, torch::matmul(q_attn, agent_attn));

  auto dwc_v = map_to_tokens(dwc->forward(tokens_to_map(v_tokens.narrow(1, T, G), H, W)));  // (B, G, C): the grid
  auto y = merge_token_heads(o);                                                              // (B, N, C)
  y = T > 0 ? torch::cat({y.narrow(1, 0, T), y.narrow(1, T, G) + dwc_v}, 1) : y + dwc_v;
  emit_internal(ctx, "dwc_v", dwc_v);
  emit_internal(ctx, "output_pre_proj", y);
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(y, h));
  return finish_tokens(ctx, proj->forward(y), H, W);  // (B, C, H, W)
}

AttentionMacs AgentAttentionImpl::macs(int64_t height, int64_t width) const {
  const int64_t G = height * width, N = options_.prefix_tokens() + G, C = options_.dim();
  AttentionMacs m;
  m.projections = 4 * N * C * C + dwc_kernel_ * dwc_kernel_ * C * G;  // q, kv, proj on all tokens; dwc on the grid
  m.matmuls = 4 * agent_num_ * N * C;                                // A kᵀ, agent_attn v, q Aᵀ, q_attn agent_v
  return m;
}

}  // namespace rala
