#include "attention_variants/attention.h"

#include <cstdio>

#include "attention_variants/common.h"
#include "attention_variants/registry.h"
#include "attention_variants/rope.h"

namespace rala {

const char* probe_name(Probe p) { return kProbes.at(static_cast<size_t>(p)).name; }

bool probe_rankable(Probe p) { return kProbes.at(static_cast<size_t>(p)).rankable; }

Probe probe_from_name(const std::string& name) {
  std::string valid;
  for (const auto& info : kProbes) {
    if (name == info.name) return info.probe;
    valid += (valid.empty() ? "" : ", ") + std::string(info.name);
  }
  TORCH_CHECK(false, "unknown probe '", name, "' (expected one of: ", valid, ")");
}

ProbeCollector::ProbeCollector()
    : ProbeCollector({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::alpha, Probe::normalizer_z}) {}

ProbeCollector::ProbeCollector(std::set<Probe> wanted, int64_t attention_limit, std::set<std::string> internals)
    : wanted_(std::move(wanted)), attention_limit_(attention_limit), internals_(std::move(internals)) {}

void ProbeCollector::receive(Probe p, const torch::Tensor& value) { values_[p] = value.detach().clone(); }

void ProbeCollector::receive_internal(const std::string& name, const torch::Tensor& value) {
  internal_values_[name] = value.detach().clone();
}

const torch::Tensor& ProbeCollector::get_internal(const std::string& name) const {
  auto it = internal_values_.find(name);
  TORCH_CHECK(it != internal_values_.end(), "internal '", name, "' was not received");
  return it->second;
}

const torch::Tensor& ProbeCollector::get(Probe p) const {
  auto it = values_.find(p);
  TORCH_CHECK(it != values_.end(), "probe '", probe_name(p), "' was not received");
  return it->second;
}

const char* prefix_mode_name(PrefixMode m) { return m == PrefixMode::joint ? "joint" : "pooled"; }

torch::Tensor AttentionBase::forward_tokens(const torch::Tensor& tokens, const AttentionContext& ctx) {
  const char* name = variant_info(variant_).name;
  const int64_t H = ctx.height, W = ctx.width, P = options_.prefix_tokens();
  TORCH_CHECK(tokens.defined() && tokens.dim() == 3, name, ": tokens must be (B, P + H·W, C), got ",
              tokens.defined() ? tokens.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(H > 0 && W > 0, name, ": the context's grid must be non-empty, got ", H, "x", W);
  TORCH_CHECK(tokens.size(1) == P + H * W, name, ": tokens must be ", P, " prefix + ", H, "x", W, " grid = ",
              P + H * W, ", got ", tokens.size(1), " (shape ", tokens.sizes(), ")");
  auto grid = tokens_to_map(tokens.narrow(1, P, H * W), H, W);  // (B, C, H, W), a view
  AttentionContext c = ctx;
  c.prefix = torch::Tensor();
  c.prefix_output = nullptr;
  if (P == 0) return map_to_tokens(forward(grid, c));
  if (prefix_mode() == PrefixMode::pooled) {  // the documented fallback: the mean of the grid outputs
    auto y = map_to_tokens(forward(grid, c));  // (B, N, C)
    return torch::cat({y.mean(1, true).expand({-1, P, -1}), y}, 1);
  }
  torch::Tensor prefix_out;
  c.prefix = tokens.narrow(1, 0, P);
  c.prefix_output = &prefix_out;
  auto y = map_to_tokens(forward(grid, c));
  TORCH_CHECK(prefix_out.defined() && prefix_out.size(1) == P, name, ": the prefix tokens got no output");
  return torch::cat({prefix_out, y}, 1);
}

AttentionContext AttentionContext::for_input(const torch::Tensor& x, int64_t head_dim, ProbeSink* probes) {
  TORCH_CHECK(x.dim() == 4, "attention input must be (B, C, H, W), got a ", x.dim(), "-D tensor ", x.sizes());
  AttentionContext ctx;
  ctx.height = x.size(2);
  ctx.width = x.size(3);
  ctx.probes = probes;
  if (head_dim % 4 == 0 && ctx.height > 0 && ctx.width > 0) {
    auto tables = cached_rope_tables(head_dim, ctx.height, ctx.width, x.options().requires_grad(false));
    ctx.rope_sin = tables.sin;
    ctx.rope_cos = tables.cos;
  }
  return ctx;
}

AttentionOptions& AttentionOptions::set(const std::string& key, const std::string& value) {
  settings_.emplace_back(key, value);
  return *this;
}

AttentionOptions& AttentionOptions::set(const std::string& key, double value) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  return set(key, std::string(buf));
}

AttentionBase::AttentionBase(AttentionOptions options, Variant variant)
    : options_(std::move(options)), variant_(variant), settings_(variant_info(variant).name, &settings_schema(variant)) {
  settings_.apply(options_.settings());
}

}  // namespace rala
