#include "attention_variants/registry.h"
#include "attention_variants/text.h"

#include <algorithm>
#include <cctype>

#include "attention_variants/agent.h"
#include "attention_variants/chela.h"
#include "attention_variants/cosformer.h"
#include "attention_variants/fixation.h"
#include "attention_variants/focused.h"
#include "attention_variants/gla.h"
#include "attention_variants/hedgehog.h"
#include "attention_variants/inline.h"
#include "attention_variants/linear.h"
#include "attention_variants/litemla.h"
#include "attention_variants/mala.h"
#include "attention_variants/mlla.h"
#include "attention_variants/pola.h"
#include "attention_variants/rala.h"
#include "attention_variants/softmax.h"
#include "attention_variants/transnormer.h"
#include "attention_variants/transnormer_diag.h"
#include "attention_variants/vicinity.h"

namespace rala {

const VariantInfo& variant_info(Variant v) { return kVariants.at(static_cast<size_t>(v)); }

namespace {

std::string known_variants() {
  std::string s;
  for (const auto& info : kVariants) s += (s.empty() ? "" : ", ") + std::string(info.name) + " (" + info.letter + ")";
  return s;
}

std::string lower(const std::string& s) {
  std::string out;
  for (char c : s) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// A variant by exact name (case-insensitive) or single letter; false when neither.
bool find_variant(const std::string& text, Variant* out) {
  const auto l = lower(text);
  for (const auto& info : kVariants) {
    if (l == info.name || (l.size() == 1 && std::toupper(static_cast<unsigned char>(l[0])) == info.letter)) {
      *out = info.variant;
      return true;
    }
  }
  return false;
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

}  // namespace

Variant variant_from_name(const std::string& name) {
  Variant v;
  TORCH_CHECK(find_variant(name, &v), "unknown attention variant '", one_line(name), "' (expected one of: ", known_variants(),
              ")");
  return v;
}

Variant variant_from_letter(char letter) {
  for (const auto& info : kVariants)
    if (std::toupper(static_cast<unsigned char>(letter)) == info.letter) return info.variant;
  TORCH_CHECK(false, "unknown attention pattern letter '", one_line(std::string(1, letter)), "' (expected one of: ",
              known_variants(), ")");
}

std::vector<Variant> parse_pattern(const std::string& pattern, size_t stages) {
  std::vector<Variant> out;
  Variant whole;
  if (pattern.find(',') != std::string::npos) {
    size_t start = 0;
    while (true) {
      const auto comma = pattern.find(',', start);
      const auto entry = trim(pattern.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      TORCH_CHECK(!entry.empty(), "attention pattern '", one_line(pattern), "' has an empty entry");
      Variant v;
      TORCH_CHECK(find_variant(entry, &v), "attention pattern '", one_line(pattern), "': unknown variant '", one_line(entry),
                  "' (expected one of: ", known_variants(), ")");
      out.push_back(v);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else if (pattern.size() > 1 && find_variant(pattern, &whole)) {
    out.push_back(whole);
  } else {
    for (char c : pattern) out.push_back(variant_from_letter(c));
  }
  TORCH_CHECK(out.size() == stages, "attention pattern '", one_line(pattern), "' has ", out.size(), " entries, the model has ",
              stages, " stages");
  return out;
}

std::string pattern_letters(const std::vector<Variant>& stages) {
  std::string s;
  for (auto v : stages) s += variant_info(v).letter;
  return s;
}

const SettingsSchema& settings_schema(Variant v) {
  switch (v) {
    case Variant::softmax: return SoftmaxAttentionImpl::schema();
    case Variant::linear: return LinearAttentionImpl::schema();
    case Variant::focused: return FocusedAttentionImpl::schema();
    case Variant::cosformer: return CosformerAttentionImpl::schema();
    case Variant::rala: return RalaAttentionImpl::schema();
    case Variant::transnormer: return TransnormerAttentionImpl::schema();
    case Variant::transnormer_diag: return TransnormerDiagAttentionImpl::schema();
    case Variant::vicinity: return VicinityAttentionImpl::schema();
    case Variant::hedgehog: return HedgehogAttentionImpl::schema();
    case Variant::gla: return GlaAttentionImpl::schema();
    case Variant::chela: return ChelaAttentionImpl::schema();
    case Variant::fixation: return FixationAttentionImpl::schema();
    case Variant::mlla: return MllaAttentionImpl::schema();
    case Variant::pola: return PolaAttentionImpl::schema();
    case Variant::inline_attention: return InlineAttentionImpl::schema();
    case Variant::agent: return AgentAttentionImpl::schema();
    case Variant::mala: return MalaAttentionImpl::schema();
    case Variant::litemla: return LitemlaAttentionImpl::schema();
  }
  TORCH_CHECK(false, "unknown attention variant id ", static_cast<int>(v));
}

std::vector<SettingPair> settings_from_state_shapes(Variant v, const StateShapes& shapes) {
  switch (v) {
    case Variant::softmax: return SoftmaxAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::linear: return LinearAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::focused: return FocusedAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::cosformer: return CosformerAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::rala: return RalaAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::transnormer: return TransnormerAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::transnormer_diag: return TransnormerDiagAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::vicinity: return VicinityAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::hedgehog: return HedgehogAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::gla: return GlaAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::chela: return ChelaAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::fixation: return FixationAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::mlla: return MllaAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::pola: return PolaAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::inline_attention: return InlineAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::agent: return AgentAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::mala: return MalaAttentionImpl::settings_from_state_shapes(shapes);
    case Variant::litemla: return LitemlaAttentionImpl::settings_from_state_shapes(shapes);
  }
  TORCH_CHECK(false, "unknown attention variant id ", static_cast<int>(v));
}

TensorMap state_from_official(Variant v, const TensorMap& state) {
  switch (v) {
    case Variant::softmax: return SoftmaxAttentionImpl::state_from_official(state);
    case Variant::linear: return LinearAttentionImpl::state_from_official(state);
    case Variant::focused: return FocusedAttentionImpl::state_from_official(state);
    case Variant::cosformer: return CosformerAttentionImpl::state_from_official(state);
    case Variant::rala: return RalaAttentionImpl::state_from_official(state);
    case Variant::transnormer: return TransnormerAttentionImpl::state_from_official(state);
    case Variant::transnormer_diag: return TransnormerDiagAttentionImpl::state_from_official(state);
    case Variant::vicinity: return VicinityAttentionImpl::state_from_official(state);
    case Variant::hedgehog: return HedgehogAttentionImpl::state_from_official(state);
    case Variant::gla: return GlaAttentionImpl::state_from_official(state);
    case Variant::chela: return ChelaAttentionImpl::state_from_official(state);
    case Variant::fixation: return FixationAttentionImpl::state_from_official(state);
    case Variant::mlla: return MllaAttentionImpl::state_from_official(state);
    case Variant::pola: return PolaAttentionImpl::state_from_official(state);
    case Variant::inline_attention: return InlineAttentionImpl::state_from_official(state);
    case Variant::agent: return AgentAttentionImpl::state_from_official(state);
    case Variant::mala: return MalaAttentionImpl::state_from_official(state);
    case Variant::litemla: return LitemlaAttentionImpl::state_from_official(state);
  }
  TORCH_CHECK(false, "unknown attention variant id ", static_cast<int>(v));
}

std::shared_ptr<AttentionBase> make_attention(Variant v, const AttentionOptions& options) {
  switch (v) {
    case Variant::softmax: return SoftmaxAttention(options).ptr();
    case Variant::linear: return LinearAttention(options).ptr();
    case Variant::focused: return FocusedAttention(options).ptr();
    case Variant::cosformer: return CosformerAttention(options).ptr();
    case Variant::rala: return RalaAttention(options).ptr();
    case Variant::transnormer: return TransnormerAttention(options).ptr();
    case Variant::transnormer_diag: return TransnormerDiagAttention(options).ptr();
    case Variant::vicinity: return VicinityAttention(options).ptr();
    case Variant::hedgehog: return HedgehogAttention(options).ptr();
    case Variant::gla: return GlaAttention(options).ptr();
    case Variant::chela: return ChelaAttention(options).ptr();
    case Variant::fixation: return FixationAttention(options).ptr();
    case Variant::mlla: return MllaAttention(options).ptr();
    case Variant::pola: return PolaAttention(options).ptr();
    case Variant::inline_attention: return InlineAttention(options).ptr();
    case Variant::agent: return AgentAttention(options).ptr();
    case Variant::mala: return MalaAttention(options).ptr();
    case Variant::litemla: return LitemlaAttention(options).ptr();
  }
  TORCH_CHECK(false, "unknown attention variant id ", static_cast<int>(v));
}

namespace {

/// A "scope.key=value" setting split into its parts; scope empty when unscoped.
struct ScopedSetting {
  bool scoped = false;
  Variant scope{};
  std::string key, value, text;
};

ScopedSetting parse_scoped(const std::string& text) {
  ScopedSetting s;
  s.text = text;
  auto pair = split_setting(text);
  s.value = pair.second;
  const auto dot = pair.first.find('.');
  if (dot == std::string::npos) {
    s.key = pair.first;
  } else {
    const auto scope = pair.first.substr(0, dot);
    TORCH_CHECK(find_variant(scope, &s.scope), "attention setting '", one_line(text), "': unknown variant '", one_line(scope),
                "' before the '.' (expected one of: ", known_variants(), ")");
    s.scoped = true;
    s.key = pair.first.substr(dot + 1);
  }
  TORCH_CHECK(!s.key.empty(), "attention setting '", one_line(text), "' has no key");
  return s;
}

bool variant_has(Variant v, const std::string& key) {
  for (const auto& spec : settings_schema(v))
    if (spec.key == key) return true;
  return false;
}

}  // namespace

std::vector<std::vector<SettingPair>> distribute_settings(const std::vector<Variant>& stages,
                                                          const std::vector<std::string>& settings,
                                                          const std::vector<std::string>& harness_defaults) {
  std::vector<std::vector<SettingPair>> out(stages.size());
  std::vector<Settings> check;
  for (auto v : stages) check.emplace_back(variant_info(v).name, &settings_schema(v));
  auto deliver = [&](const ScopedSetting& s, bool is_default) {
    bool reached = false;
    for (size_t i = 0; i < stages.size(); ++i) {
      if ((s.scoped && stages[i] != s.scope) || !variant_has(stages[i], s.key)) continue;
      check[i].set(s.key, s.value);  // validates; throws naming the setting, the variant and what is accepted
      out[i].emplace_back(s.key, s.value);
      reached = true;
    }
    if (reached || is_default) return;
    if (s.scoped) {
      const bool in_pattern = std::find(stages.begin(), stages.end(), s.scope) != stages.end();
      const char* name = variant_info(s.scope).name;
      TORCH_CHECK(in_pattern, "attention setting '", one_line(s.text), "': the pattern '", pattern_letters(stages),
                  "' has no ", name, " layer");
      TORCH_CHECK(false, "unknown setting '", one_line(s.key), "' for attention variant ", name, " (", name,
                  " has: ", schema_keys(settings_schema(s.scope)), ")");
    }
    std::string having;
    for (const auto& info : kVariants)
      if (variant_has(info.variant, s.key)) having += (having.empty() ? "" : ", ") + std::string(info.name);
    TORCH_CHECK(!having.empty(), "unknown attention setting '", one_line(s.key), "' (no variant has it; see `rala info` for "
                "every variant's settings)");
    TORCH_CHECK(false, "attention setting '", one_line(s.text), "' applies to no layer of pattern '", pattern_letters(stages),
                "': '", s.key, "' is a setting of ", having);
  };
  for (const auto& d : harness_defaults) deliver(parse_scoped(d), true);
  for (const auto& s : settings) deliver(parse_scoped(s), false);
  return out;
}

}  // namespace rala
