#include "attention_variants/attention.h"

#include <sstream>

#include "attention_variants/common.h"
#include "attention_variants/rope.h"

namespace rala {

const char* normalizer_name(Normalizer n) {
  switch (n) {
    case Normalizer::sum: return "sum";
    case Normalizer::mean: return "mean";
    case Normalizer::sum_clamp: return "sum_clamp";
  }
  return "?";
}

const char* probe_name(Probe p) { return kProbeNames.at(static_cast<size_t>(p)); }

Probe probe_from_name(const std::string& name) {
  std::string valid;
  for (int i = 0; i < kNumProbes; ++i) {
    if (name == kProbeNames[i]) return static_cast<Probe>(i);
    valid += (i ? ", " : "") + std::string(kProbeNames[i]);
  }
  TORCH_CHECK(false, "unknown probe '", name, "' (expected one of: ", valid, ")");
}

ProbeCollector::ProbeCollector()
    : ProbeCollector({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::alpha, Probe::normalizer_z}) {}

ProbeCollector::ProbeCollector(std::set<Probe> wanted, int64_t attention_limit)
    : wanted_(std::move(wanted)), attention_limit_(attention_limit) {}

void ProbeCollector::receive(Probe p, const torch::Tensor& value) { values_[p] = value.detach().clone(); }

const torch::Tensor& ProbeCollector::get(Probe p) const {
  auto it = values_.find(p);
  TORCH_CHECK(it != values_.end(), "probe '", probe_name(p), "' was not received");
  return it->second;
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

namespace {

bool parse_bool(const std::string& key, const std::string& value) {
  if (value == "1" || value == "true" || value == "on" || value == "yes") return true;
  if (value == "0" || value == "false" || value == "off" || value == "no") return false;
  TORCH_CHECK(false, "attention option '", key, "' expects a boolean (1/0, true/false, on/off), got '", value, "'");
}

int64_t parse_int(const std::string& key, const std::string& value, int64_t min_value) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(used == value.size() && !value.empty(), "attention option '", key, "' expects an integer, got '", value,
              "'");
  TORCH_CHECK(v >= min_value, "attention option '", key, "' must be >= ", min_value, ", got ", v);
  return v;
}

}  // namespace

void apply_option(AttentionOptions& o, const std::string& setting) {
  auto eq = setting.find('=');
  TORCH_CHECK(eq != std::string::npos && eq > 0, "attention option '", setting, "' must have the form key=value");
  std::string key = setting.substr(0, eq), value = setting.substr(eq + 1);
  if (key == "alpha") {
    o.alpha(parse_bool(key, value));
  } else if (key == "gate") {
    o.gate(parse_bool(key, value));
  } else if (key == "rope") {
    o.rope(parse_bool(key, value));
  } else if (key == "lepe") {
    o.lepe(parse_bool(key, value));
  } else if (key == "normalizer") {
    if (value == "sum") o.normalizer(Normalizer::sum);
    else if (value == "mean") o.normalizer(Normalizer::mean);
    else if (value == "sum_clamp") o.normalizer(Normalizer::sum_clamp);
    else TORCH_CHECK(false, "attention option 'normalizer' expects sum, mean or sum_clamp, got '", value, "'");
  } else if (key == "focusing_factor") {
    o.focusing_factor(parse_int(key, value, 1));
  } else if (key == "dwc_kernel") {
    auto k = parse_int(key, value, 1);
    TORCH_CHECK(k % 2 == 1, "attention option 'dwc_kernel' must be odd, got ", k);
    o.dwc_kernel(k);
  } else if (key == "position_tokens") {
    o.position_tokens(parse_int(key, value, 0));
  } else if (key == "cosformer_index") {
    TORCH_CHECK(value == "separable_2d" || value == "raster_1d",
                "attention option 'cosformer_index' expects separable_2d or raster_1d, got '", value, "'");
    o.cosformer_index(value == "separable_2d" ? CosformerIndex::separable_2d : CosformerIndex::raster_1d);
  } else {
    TORCH_CHECK(false, "unknown attention option '", key,
                "' (expected one of: alpha, gate, rope, lepe, normalizer, focusing_factor, dwc_kernel, "
                "position_tokens, cosformer_index)");
  }
}

std::string describe_options(const AttentionOptions& o) {
  std::ostringstream s;
  s << "alpha=" << o.alpha() << " gate=" << o.gate() << " rope=" << o.rope() << " lepe=" << o.lepe()
    << " normalizer=" << normalizer_name(o.normalizer())
    << " focusing_factor=" << o.focusing_factor() << " dwc_kernel=" << o.dwc_kernel()
    << " position_tokens=" << o.position_tokens()
    << " cosformer_index=" << (o.cosformer_index() == CosformerIndex::separable_2d ? "separable_2d" : "raster_1d");
  return s.str();
}

AttentionBase::AttentionBase(AttentionOptions options) : options_(std::move(options)) {}

}  // namespace rala
