#pragma once
/// \file registry.h
/// The variant registry: an enum, a name table checked against it at compile time, and one factory.
/// Pattern letters (one per stage): S softmax, L linear, F focused, C cosFormer, R RALA. `RRSS` is the official RAVLT.
///
/// Usage:
///   auto v = rala::variant_from_name("rala");                 // or "R"
///   auto attn = rala::make_attention(v, rala::AttentionOptions(64, 2).alpha(false));
///   auto stages = rala::parse_pattern("RRSS", 4);             // {rala, rala, softmax, softmax}

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
/// "RRSS" → one variant per stage; throws if the length is not `stages` or a letter is unknown.
std::vector<Variant> parse_pattern(const std::string& pattern, size_t stages);
/// Builds a variant with the given options (validates them).
std::shared_ptr<AttentionBase> make_attention(Variant v, const AttentionOptions& options);

}  // namespace rala
