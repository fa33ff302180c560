#pragma once
/// \file registry.h
/// The variant registry: an enum, a name table checked against it at compile time, and one factory.
/// Patterns name one variant per stage, by letter (`RRSS`, the official RAVLT) or by name, comma-separated
/// (`transnormer_diag,transnormer_diag,transnormer,transnormer`); letters and names can be mixed in the comma form.
///
/// Usage:
///   auto v = rala::variant_from_name("rala");                 // or "R"
///   auto attn = rala::make_attention(v, rala::AttentionOptions(64, 2).set("alpha", false));
///   auto stages = rala::parse_pattern("RRSS", 4);             // {rala, rala, softmax, softmax}
///   auto per_stage = rala::distribute_settings(stages, {"rala.alpha=0", "gate=0"});

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "attention_variants/attention.h"

namespace rala {

enum class Variant : int { softmax = 0, linear, focused, cosformer, rala };

struct VariantInfo {
  Variant variant;
  char letter;              ///< pattern letter
  const char* name;         ///< CLI / HDF5 name
  const char* title;        ///< human-readable
  const char* source;       ///< where the semantics were read from
  bool kernel;              ///< O(N) kernel (linear-attention) variant
};

constexpr std::array<VariantInfo, 5> kVariants = {{
    {Variant::softmax, 'S', "softmax", "softmax attention (RAVLT stages 3-4: RoPE, LePE, gate)",
     "qhfan/RALA classfication/RALA.py VanillaSelfAttention", false},
    {Variant::linear, 'L', "linear", "vanilla linear attention (Katharopoulos et al. 2020, elu+1)",
     "idiap/fast-transformers linear_attention.py", true},
    {Variant::focused, 'F', "focused", "focused linear attention (FLatten, ICCV 2023)",
     "LeapLabTHU/FLatten-Transformer models/flatten_swin.py FocusedLinearAttention", true},
    {Variant::cosformer, 'C', "cosformer", "cosFormer (ICLR 2022), cos re-weighted ReLU kernel",
     "OpenNLPLab/cosFormer cosformer.py CosformerAttention", true},
    {Variant::rala, 'R', "rala", "rank-augmented linear attention (RALA, CVPR 2025)",
     "qhfan/RALA classfication/RALA.py GateLinearAttentionNoSilu", true},
}};

namespace detail {
constexpr bool registry_consistent() {
  for (size_t i = 0; i < kVariants.size(); ++i) {
    if (static_cast<size_t>(kVariants[i].variant) != i) return false;
    for (size_t j = 0; j < i; ++j)
      if (kVariants[j].letter == kVariants[i].letter) return false;
  }
  return static_cast<size_t>(Variant::rala) + 1 == kVariants.size();
}
}  // namespace detail
static_assert(detail::registry_consistent(), "kVariants must list every Variant, in enum order, with unique letters");

const VariantInfo& variant_info(Variant v);
/// By name ("rala") or letter ("R"), case-insensitive; throws listing the known variants.
Variant variant_from_name(const std::string& name);
/// By pattern letter; throws listing the known letters.
Variant variant_from_letter(char letter);
/// "RRSS" (letters) or "rala,rala,softmax,softmax" (names or letters, comma-separated) → one variant per stage; a single
/// name ("hedgehog") is one entry. Throws if the number of entries is not `stages` or an entry is unknown.
std::vector<Variant> parse_pattern(const std::string& pattern, size_t stages);
/// The pattern in letters ("RRSS").
std::string pattern_letters(const std::vector<Variant>& stages);

/// The settings a variant owns (keys, kinds, defaults, accepted values).
const SettingsSchema& settings_schema(Variant v);
/// Builds a variant with the given options (validates its settings).
std::shared_ptr<AttentionBase> make_attention(Variant v, const AttentionOptions& options);

/// Per-stage settings for a pattern. Each user setting is "key=value" or "scope.key=value" (scope = a variant name or
/// letter): an unscoped key goes to every stage whose variant has that setting, a scoped one to that variant's stages
/// only. Every value is validated against the receiving variant's schema. Throws one line when a setting reaches no
/// stage (naming the variants that have it) or a value is invalid. `harness_defaults` (same syntax) are applied first,
/// only where the variant has the key, and never throw for a key a stage lacks.
std::vector<std::vector<SettingPair>> distribute_settings(const std::vector<Variant>& stages,
                                                          const std::vector<std::string>& settings,
                                                          const std::vector<std::string>& harness_defaults = {});

}  // namespace rala
