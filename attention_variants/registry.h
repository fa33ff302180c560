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

enum class Variant : int {
  softmax = 0,
  linear,
  focused,
  cosformer,
  rala,
  transnormer,
  transnormer_diag,
  vicinity,
  hedgehog,
  gla,
  chela,
  fixation,
  mlla,
  pola,
  inline_attention,
  agent,
  mala,
  litemla,
};

struct VariantInfo {
  Variant variant;
  char letter;              ///< pattern letter
  const char* name;         ///< CLI / HDF5 name
  const char* title;        ///< human-readable
  const char* source;       ///< where the semantics were read from
  bool kernel;              ///< cost linear in N (kernel / linear-attention variants, chunked and agent forms)
  bool reconstructed;       ///< no official code exists: built from the paper, our choices documented
  bool buffer;              ///< reduces keys and values to a state the queries read (emits the kv_buffer probe)
};

constexpr std::array<VariantInfo, 18> kVariants = {{
    {Variant::softmax, 'S', "softmax", "softmax attention (RAVLT stages 3-4: RoPE, LePE, gate)",
     "qhfan/RALA classfication/RALA.py VanillaSelfAttention", false, false, false},
    {Variant::linear, 'L', "linear", "vanilla linear attention (Katharopoulos et al. 2020, elu+1)",
     "idiap/fast-transformers linear_attention.py", true, false, true},
    {Variant::focused, 'F', "focused", "focused linear attention (FLatten, ICCV 2023)",
     "LeapLabTHU/FLatten-Transformer models/flatten_swin.py FocusedLinearAttention", true, false, true},
    {Variant::cosformer, 'C', "cosformer", "cosFormer (ICLR 2022), cos re-weighted ReLU kernel",
     "OpenNLPLab/cosFormer cosformer.py CosformerAttention", true, false, true},
    {Variant::rala, 'R', "rala", "rank-augmented linear attention (RALA, CVPR 2025)",
     "qhfan/RALA classfication/RALA.py GateLinearAttentionNoSilu", true, false, true},
    {Variant::transnormer, 'T', "transnormer", "TransNormer NormAttention (EMNLP 2022): φ(Q)(φ(K)ᵀV), no denominator, SimpleRMSNorm",
     "OpenNLPLab/fairseq-evo fairseq/modules/x_attention/norm_linear_attention.py NormLinearAttention", true, false, true},
    {Variant::transnormer_diag, 'D', "transnormer_diag", "TransNormer DiagAttention (EMNLP 2022): block-diagonal attention on 1-D raster chunks",
     "OpenNLPLab/fairseq-evo fairseq/modules/x_attention/norm_local_attention.py NormLocalAttention", true, false, false},
    {Variant::vicinity, 'V', "vicinity", "Vicinity Attention (VVT, TPAMI 2023): 2-D cos re-weighted ReLU kernel, SE connection",
     "OpenNLPLab/Vicinity-Vision-Transformer classification/vvt.py VicinityVisionAttention", true, false, true},
    {Variant::hedgehog, 'H', "hedgehog", "Hedgehog (ICLR 2024): learned softmax-mimicking feature maps per head",
     "HazyResearch/lolcats src/model/feature_map.py + linear_attention.py (softmax_dim, untied_head_einsum)", true, false, true},
    {Variant::gla, 'G', "gla", "Gated linear attention, vision form (ViG-H GLA2D): bidirectional gated raster scans",
     "hustvl/ViG classification/models/vig_h.py GLA2D", true, false, true},
    {Variant::chela, 'K', "chela", "CHELA (ICML 2024), vision reconstruction: short-long convolutions + linear attention in MEGA's gated block",
     "no official code: reconstructed from the paper and facebookresearch/mega MovingAverageGatedAttention", true, true, true},
    {Variant::fixation, 'X', "fixation", "Feature Fixation (Linear Video Transformer), vision reconstruction: re-weighted q, k channels",
     "no official code: reconstructed from the paper (arXiv 2210.08164)", true, true, true},
    {Variant::mlla, 'M', "mlla", "MLLA linear attention (NeurIPS 2024): v = x, RoPE over the full C, LePE 3×3",
     "LeapLabTHU/MLLA models/mlla.py LinearAttention", true, false, true},
    {Variant::pola, 'P', "pola", "PolaFormer (ICLR 2025): polarity-aware linear attention",
     "ZacharyMeng/PolaFormer models/pola_pvt.py PolaLinearAttention", true, false, true},
    {Variant::inline_attention, 'I', "inline", "InLine attention (NeurIPS 2024): injective identity kernel, dynamic 3×3 residual",
     "LeapLabTHU/InLine models/inline_pvt.py InLineAttention", true, false, true},
    {Variant::agent, 'A', "agent", "Agent attention (ECCV 2024): pooled agent tokens, two softmax stages, DWC",
     "LeapLabTHU/Agent-Attention agent_transformer/models/agent_pvt.py AgentAttention", true, false, true},
    {Variant::mala, 'Y', "mala", "MALA (ICCV 2025): magnitude-aware linear attention on RALA's skeleton",
     "qhfan/MALA classfication_release/model.py AddLinearAttention", true, false, true},
    {Variant::litemla, 'E', "litemla", "EfficientViT LiteMLA (ICCV 2023): ReLU linear attention, multi-scale aggregation",
     "mit-han-lab/efficientvit efficientvit/models/nn/ops.py LiteMLA", true, false, true},
}};

namespace detail {
constexpr bool registry_consistent() {
  for (size_t i = 0; i < kVariants.size(); ++i) {
    if (static_cast<size_t>(kVariants[i].variant) != i) return false;
    for (size_t j = 0; j < i; ++j)
      if (kVariants[j].letter == kVariants[i].letter) return false;
  }
  return static_cast<size_t>(Variant::litemla) + 1 == kVariants.size();
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
/// Settings implied by the shapes of an official state dict (key → shape): learned tables sized by N or the grid, e.g.
/// FLatten's positional_encoding (1, N, C) → position_tokens=N. Empty for most variants. (`rala layer` uses it.)
std::vector<SettingPair> settings_from_state_shapes(Variant v, const StateShapes& shapes);
/// An official module's state dict in the layer's own keys (see AttentionBase::state_from_official).
TensorMap state_from_official(Variant v, const TensorMap& state);
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
