#include "attention_variants/common.h"

namespace rala {

const char* normalizer_name(Normalizer n) {
  switch (n) {
    case Normalizer::sum: return "sum";
    case Normalizer::mean: return "mean";
    case Normalizer::sum_clamp: return "sum_clamp";
  }
  return "?";
}

Normalizer normalizer_from_name(const std::string& name) {
  for (auto n : {Normalizer::sum, Normalizer::mean, Normalizer::sum_clamp})
    if (name == normalizer_name(n)) return n;
  TORCH_CHECK(false, "unknown normalizer '", name, "' (expected sum, mean or sum_clamp)");
}

void check_head_split(int64_t dim, int64_t heads, const char* variant_name) {
  TORCH_CHECK(dim > 0 && heads > 0, variant_name, ": channels (", dim, ") and heads (", heads, ") must be positive");
  TORCH_CHECK(dim % heads == 0, variant_name, ": channels (", dim, ") must be divisible by heads (", heads, ")");
}

void check_attention_input(const torch::Tensor& x, const AttentionOptions& options, const char* variant_name) {
  TORCH_CHECK(x.defined(), variant_name, ": input tensor is undefined");
  TORCH_CHECK(x.dim() == 4, variant_name, ": input must be (B, C, H, W), got a ", x.dim(), "-D tensor of shape ",
              x.sizes());
  TORCH_CHECK(x.size(1) == options.dim(), variant_name, ": input has ", x.size(1), " channels, the layer expects ",
              options.dim());
  TORCH_CHECK(x.size(0) > 0 && x.size(2) > 0 && x.size(3) > 0, variant_name,
              ": input grid must be non-empty, got shape ", x.sizes());
}

torch::Tensor split_heads(const torch::Tensor& map, int64_t c0, int64_t channels, int64_t heads) {
  const int64_t B = map.size(0), H = map.size(2), W = map.size(3);
  const int64_t d = channels / heads;
  // (B, C, H, W) → (B, h, d, N) → (B, h, N, d)
  return map.narrow(1, c0, channels).reshape({B, heads, d, H * W}).transpose(-1, -2);
}

torch::Tensor merge_heads(const torch::Tensor& y, int64_t height, int64_t width) {
  const int64_t B = y.size(0), h = y.size(1), d = y.size(3);
  // (B, h, N, d) → (B, N, h, d) → (B, H, W, C), viewed as (B, C, H, W) in channels-last memory: the token layout
  // the RAVLT harness runs in (no copy at all for one head; one copy otherwise, as before).
  return y.permute({0, 2, 1, 3}).reshape({B, height, width, h * d}).permute({0, 3, 1, 2});
}

torch::Tensor map_to_tokens(const torch::Tensor& map) { return map.flatten(2).transpose(1, 2); }

torch::Tensor tokens_to_map(const torch::Tensor& tokens, int64_t height, int64_t width) {
  return tokens.reshape({tokens.size(0), height, width, tokens.size(2)}).permute({0, 3, 1, 2});
}

torch::Tensor token_heads(const torch::Tensor& tokens, int64_t heads) {
  return tokens.reshape({tokens.size(0), tokens.size(1), heads, tokens.size(2) / heads}).transpose(1, 2);
}

torch::Tensor merge_token_heads(const torch::Tensor& y) {
  return y.transpose(1, 2).reshape({y.size(0), y.size(2), y.size(1) * y.size(3)});
}

torch::Tensor elu_feature(const torch::Tensor& x) { return torch::elu(x) + 1.0; }

LinearAttentionResult linear_attention(const torch::Tensor& q_num, const torch::Tensor& k_num, const torch::Tensor& q_den,
                                       const torch::Tensor& k_den, const torch::Tensor& v, Normalizer normalizer,
                                       double eps) {
  const int64_t N = k_num.size(-2);
  LinearAttentionResult r;
  if (normalizer == Normalizer::mean) {
    const double s = std::pow(static_cast<double>(N), -0.5);
    r.kv = torch::matmul(k_num.transpose(-2, -1) * s, v * s);                                    // (B, h, dk, dv)
    r.z = 1.0 / (torch::matmul(q_den, k_den.mean(-2, true).transpose(-2, -1)) + eps);           // (B, h, N, 1)
  } else {
    r.kv = torch::matmul(k_num.transpose(-2, -1), v);                              // (B, h, dk, dv)
    auto den = torch::matmul(q_den, k_den.sum(-2, true).transpose(-2, -1));       // (B, h, N, 1)
    r.z = 1.0 / (normalizer == Normalizer::sum ? den + eps : den.clamp_min(eps));
  }
  r.output = torch::matmul(q_num, r.kv) * r.z;  // (B, h, N, dv)
  return r;
}

torch::Tensor implied_attention(const torch::Tensor& q_num, const torch::Tensor& k_num, const torch::Tensor& z,
                                Normalizer normalizer) {
  auto a = torch::matmul(q_num, k_num.transpose(-2, -1)) * z;  // (B, h, N, N)
  if (normalizer == Normalizer::mean) a = a / static_cast<double>(k_num.size(-2));
  return a;
}

bool probe_wanted(const AttentionContext& ctx, Probe p, int64_t tokens) {
  if (ctx.probes == nullptr || !ctx.probes->wants(p)) return false;
  return p != Probe::attention || tokens <= ctx.probes->attention_limit();
}

void emit_probe(const AttentionContext& ctx, Probe p, const torch::Tensor& value) {
  if (ctx.probes != nullptr && ctx.probes->wants(p)) ctx.probes->receive(p, value.detach());
}

bool internal_wanted(const AttentionContext& ctx, const std::string& name) {
  return ctx.probes != nullptr && ctx.probes->wants_internal(name);
}

void emit_internal(const AttentionContext& ctx, const std::string& name, const torch::Tensor& value) {
  if (ctx.probes != nullptr && ctx.probes->wants_internal(name)) ctx.probes->receive_internal(name, value.detach());
}

RopeTables context_rope(const AttentionContext& ctx, int64_t head_dim, const torch::Tensor& x) {
  const int64_t N = x.size(2) * x.size(3);
  RopeTables grid;
  if (!ctx.rope_sin.defined()) {
    grid = cached_rope_tables(head_dim, x.size(2), x.size(3), x.options());
  } else {
    TORCH_CHECK(ctx.rope_sin.dim() == 2 && ctx.rope_sin.size(0) == N && ctx.rope_sin.size(1) == head_dim &&
                    ctx.rope_cos.sizes() == ctx.rope_sin.sizes(),
                "RoPE tables must be (N, head_dim) = (", N, ", ", head_dim, "), got sin ", ctx.rope_sin.sizes(),
                " cos ", ctx.rope_cos.defined() ? ctx.rope_cos.sizes() : c10::IntArrayRef{});
    grid = {ctx.rope_sin, ctx.rope_cos};
  }
  return with_unrotated_prefix(grid, ctx.prefix_tokens());
}

RopeTables with_unrotated_prefix(const RopeTables& tables, int64_t prefix) {
  if (prefix == 0) return tables;
  const int64_t f = tables.sin.size(1);
  return {torch::cat({torch::zeros({prefix, f}, tables.sin.options()), tables.sin}),
          torch::cat({torch::ones({prefix, f}, tables.cos.options()), tables.cos})};
}

torch::Tensor context_prefix(const AttentionContext& ctx, const AttentionOptions& options, const torch::Tensor& x,
                             const char* variant_name) {
  if (!ctx.prefix.defined()) return {};
  const auto& p = ctx.prefix;
  TORCH_CHECK(p.dim() == 3 && p.size(0) == x.size(0) && p.size(2) == options.dim() && p.scalar_type() == x.scalar_type(),
              variant_name, ": prefix tokens must be (B, P, C) = (", x.size(0), ", P, ", options.dim(), ") of the input's "
              "dtype, got ", p.sizes(), " ", p.scalar_type());
  TORCH_CHECK(p.size(1) == options.prefix_tokens(), variant_name, ": the call has ", p.size(1),
              " prefix tokens, the layer was built for ", options.prefix_tokens(), " (AttentionOptions::prefix_tokens)");
  TORCH_CHECK(ctx.prefix_output != nullptr, variant_name, ": prefix tokens need the context's prefix_output (call "
              "forward_tokens)");
  return p;
}

torch::Tensor with_prefix(const torch::Tensor& prefix, const torch::Tensor& grid_tokens) {
  return prefix.defined() ? torch::cat({prefix, grid_tokens}, 1) : grid_tokens;
}

torch::Tensor prefix_reweighted_features(const torch::Tensor& rw, const torch::Tensor& plain, int64_t prefix, double w0,
                                         bool query) {
  if (prefix == 0) return rw;
  const int64_t N = rw.size(2), f = rw.size(3);
  const double s = std::sqrt(w0);
  auto pre = plain.narrow(2, 0, prefix) * s, grid = plain.narrow(2, prefix, N) * s;  // (B, h, P|N, d)
  auto grid_rows = query ? torch::cat({rw, grid, torch::zeros_like(grid)}, -1)
                         : torch::cat({rw, torch::zeros_like(grid), grid}, -1);
  auto blank = torch::zeros({pre.size(0), pre.size(1), prefix, f}, pre.options());
  auto prefix_rows = torch::cat({blank, pre, query ? pre : torch::zeros_like(pre)}, -1);
  return torch::cat({prefix_rows, grid_rows}, 2);  // (B, h, P + N, f + 2d)
}

torch::Tensor finish_tokens(const AttentionContext& ctx, const torch::Tensor& tokens, int64_t height, int64_t width) {
  const int64_t P = ctx.prefix_tokens();
  if (P == 0) return tokens_to_map(tokens, height, width);
  *ctx.prefix_output = tokens.narrow(1, 0, P);
  return tokens_to_map(tokens.narrow(1, P, height * width), height, width);
}

torch::nn::Conv2d conv1x1(int64_t in, int64_t out, bool bias) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).bias(bias));
}

torch::nn::Conv2d depthwise(int64_t channels, int64_t kernel) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, kernel).padding(kernel / 2).groups(channels));
}

const std::vector<int64_t>* find_state_entry(const StateShapes& shapes, const std::string& name, const char* variant) {
  auto it = shapes.find(name);
  if (it != shapes.end()) return &it->second;
  const std::vector<int64_t>* found = nullptr;
  std::string found_key;
  const std::string suffix = "." + name;
  for (const auto& entry : shapes) {
    const auto& key = entry.first;
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    TORCH_CHECK(found == nullptr, variant, ": the state dict has several '", name, "' entries (", found_key, ", ", key,
                "); give one layer's entries");
    found = &entry.second;
    found_key = key;
  }
  return found;
}

}  // namespace rala
