#pragma once
/// \file attention.h
/// The one interface every token mixer implements, the probe vocabulary, and the options shared by the variants.
///
/// Usage:
///   auto attn = rala::make_attention(rala::Variant::rala, rala::AttentionOptions(64, 2));
///   auto y = attn->forward(x, rala::AttentionContext::for_input(x, 64 / 2));   // x, y: (B, 64, H, W)

#include <torch/torch.h>

#include <array>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "attention_variants/settings.h"

namespace rala {

// ------------------------------------------------------------------------------------------------
// Probes
// ------------------------------------------------------------------------------------------------

/// Named internals an attention layer hands to a probe sink. One spelling everywhere (code, CLI, HDF5).
///   kv_buffer     (B, h, dk, d)  the per-head state the queries read: Σ_j φ̃(k_j)ᵀ v_j exactly as the variant multiplies
///                                it (RALA: Σ_j α_j RoPE(φ(k_j))ᵀ v_j; mean-normalised variants include their 1/N;
///                                cosFormer: dk = 2d (1-D) or 4d (2-D) re-weighted features; GLA: the final state of
///                                the forward scan)
///   output        (B, h, N, d)   attention output per head, before LePE/DWC and before the gate
///   output_gated  (B, h, N, d)   the same after the positional term (LePE/DWC) and the output gate o (if any)
///   alpha         (B, h, N)      RALA's token weights α_j (sum to 1 over j)
///   attention     (B, h, N, N)   the attention map A with output = A·v: softmax map, or for kernel variants the implied
///                                normalised φ(Q)φ(K)ᵀ map; only when the sink asks and N ≤ sink.attention_limit()
///   normalizer_z  (B, h, N)      kernel variants: the per-query reciprocal normaliser z_i
///   kv_buffer_bwd (B, h, dk, d)  a second state the queries read (GLA: the final state R_0 of the backward scan)
///   kv_buffer_unweighted (B, h, dk, d)  RALA: the buffer without α on the same keys, Σ_j RoPE(φk_j)ᵀ v_j / N
///   feature_q, feature_k (B, h, N, f)  the kernel features φ(q), φ(k) as the variant multiplies them (Hedgehog's
///                                learned maps, TransNormer's φ, ...)
///   chunk_weights (B, h, n_chunks, c, c)  TransNormer-diag: the block-diagonal weights of each chunk
///   log_decay_fwd, log_decay_bwd (B, h, N, dk)  GLA: per-token log decays of the forward / backward scan
enum class Probe : int {
  kv_buffer = 0,
  output,
  output_gated,
  alpha,
  attention,
  normalizer_z,
  kv_buffer_bwd,
  kv_buffer_unweighted,
  feature_q,
  feature_k,
  chunk_weights,
  log_decay_fwd,
  log_decay_bwd
};
/// A probe's name and whether its value is a stack of per-head matrices (B, h, m, n) that the rank analysis can rank.
struct ProbeInfo {
  Probe probe;
  const char* name;
  bool rankable;
};
constexpr int kNumProbes = 13;
constexpr std::array<ProbeInfo, kNumProbes> kProbes = {{
    {Probe::kv_buffer, "kv_buffer", true},
    {Probe::output, "output", true},
    {Probe::output_gated, "output_gated", true},
    {Probe::alpha, "alpha", false},
    {Probe::attention, "attention", true},
    {Probe::normalizer_z, "normalizer_z", false},
    {Probe::kv_buffer_bwd, "kv_buffer_bwd", true},
    {Probe::kv_buffer_unweighted, "kv_buffer_unweighted", true},
    {Probe::feature_q, "feature_q", true},
    {Probe::feature_k, "feature_k", true},
    {Probe::chunk_weights, "chunk_weights", false},
    {Probe::log_decay_fwd, "log_decay_fwd", false},
    {Probe::log_decay_bwd, "log_decay_bwd", false},
}};
namespace detail {
constexpr bool probes_consistent() {
  for (int i = 0; i < kNumProbes; ++i)
    if (static_cast<int>(kProbes[i].probe) != i) return false;
  return static_cast<int>(Probe::log_decay_bwd) + 1 == kNumProbes;
}
}  // namespace detail
static_assert(detail::probes_consistent(), "kProbes must list every Probe, in enum order");

/// Name of a probe ("kv_buffer", ...).
const char* probe_name(Probe p);
/// Whether the probe is a (B, h, m, n) stack of per-head matrices (what the rank analysis ranks).
bool probe_rankable(Probe p);
/// Probe from its name; throws c10::Error naming the unknown name and listing the valid ones.
Probe probe_from_name(const std::string& name);

/// Receives named internals of an attention layer. Variants ask `wants()` before computing anything extra, so a layer
/// with no sink (or a sink that wants nothing) does no probe work at all.
/// Besides the shared vocabulary, a variant may hand over its own internals under the names its official code (and
/// golden file) uses ("agent_attn", "se_weight", ...): `wants_internal` / `receive_internal`, same rules.
class ProbeSink {
 public:
  virtual ~ProbeSink() = default;
  /// Whether this sink wants probe p. Must be cheap.
  virtual bool wants(Probe p) const = 0;
  /// Called with a tensor that is only valid for reading; keep a copy (`.detach().clone()`) if you need it later.
  virtual void receive(Probe p, const torch::Tensor& value) = 0;
  /// Whether this sink wants a variant's own internal `name`. Must be cheap.
  virtual bool wants_internal(const std::string& name) const { return false; }
  /// Receives a variant's own internal (same validity rule as receive()).
  virtual void receive_internal(const std::string& name, const torch::Tensor& value) {}
  /// Largest token count N for which the (B, h, N, N) attention map is materialised.
  virtual int64_t attention_limit() const { return 4096; }
  /// Called by the model harness before the layer runs, with the layer's token grid and its prefix tokens (the
  /// probes then cover prefix_tokens + height·width tokens, the prefix first).
  virtual void on_layer(int64_t height, int64_t width, int64_t prefix_tokens) {}
};

/// A sink that keeps a detached copy of every probe it wants (all but `attention` by default), and of the variant
/// internals named in `internals`.
class ProbeCollector : public ProbeSink {
 public:
  ProbeCollector();
  explicit ProbeCollector(std::set<Probe> wanted, int64_t attention_limit = 4096,
                          std::set<std::string> internals = {});
  bool wants(Probe p) const override { return wanted_.count(p) > 0; }
  void receive(Probe p, const torch::Tensor& value) override;
  bool wants_internal(const std::string& name) const override { return internals_.count(name) > 0; }
  void receive_internal(const std::string& name, const torch::Tensor& value) override;
  int64_t attention_limit() const override { return attention_limit_; }
  /// Whether a value for p was received.
  bool has(Probe p) const { return values_.count(p) > 0; }
  /// The value received for p; throws if none was.
  const torch::Tensor& get(Probe p) const;
  /// Whether / which value a variant handed over under `name`; get_internal throws if none was.
  bool has_internal(const std::string& name) const { return internal_values_.count(name) > 0; }
  const torch::Tensor& get_internal(const std::string& name) const;
  void clear() {
    values_.clear();
    internal_values_.clear();
  }

 private:
  std::set<Probe> wanted_;
  int64_t attention_limit_;
  std::set<std::string> internals_;
  std::map<Probe, torch::Tensor> values_;
  std::map<std::string, torch::Tensor> internal_values_;
};

// ------------------------------------------------------------------------------------------------
// Context and options
// ------------------------------------------------------------------------------------------------

// ------------------------------------------------------------------------------------------------
// Prefix tokens
// ------------------------------------------------------------------------------------------------
// A plain ViT (the DeiT harness) puts P tokens that belong to no grid position ahead of the H×W patch grid: DeiT's cls
// token (P = 1). A layer built with AttentionOptions::prefix_tokens(P) takes them through forward_tokens():
//   tokens (B, P + H·W, C), the prefix first, then the grid in raster order → (B, P + H·W, C).
// How a variant mixes them (PrefixMode):
//   joint  — the prefix tokens are tokens of the mixer like any other, as the official DeiT ports of InLine
//            (models/inline_deit.py) and Agent attention (agent_transformer/models/agent_deit.py) do it: every global
//            reduction (softmax over keys, Σ_j φ(k_j)ᵀ v_j, means, α, SE weights, …) runs over all P + N tokens, and
//            the prefix tokens attend and are attended; terms bound to the grid (LePE, DWC, RoPE, the convolutions,
//            positional tables, scan order) act on the grid tokens only — RoPE leaves the prefix un-rotated as
//            RoPE-ViT (naver-ai/rope-vit) does. Every probe then covers all P + N tokens, prefix first (`attention`
//            is the (P + N)² map). Each variant's header says what its prefix tokens do.
//   pooled — the fallback for a variant that cannot take a prefix token: the mixer runs on the grid alone and each
//            prefix token's output is the mean of the grid outputs (it still reads the image through attention);
//            probes cover the grid only. No variant of the registry needs it.
// Inside a variant's forward(x, ctx) the prefix tokens arrive as ctx.prefix and their output leaves through
// ctx.prefix_output (common.h: context_prefix, with_prefix, finish_tokens); forward_tokens sets both.

/// How a variant treats prefix tokens (see above).
enum class PrefixMode { joint, pooled };
/// "joint", "pooled".
const char* prefix_mode_name(PrefixMode m);

/// Per-call context: the token grid, the stage's 2-D RoPE tables (N, d), an optional probe sink, and the call's prefix
/// tokens (set by AttentionBase::forward_tokens).
struct AttentionContext {
  int64_t height = 0;
  int64_t width = 0;
  torch::Tensor rope_sin;  ///< (N, d), rows in raster order (token l = row·W + col); undefined → built on demand
  torch::Tensor rope_cos;  ///< (N, d)
  ProbeSink* probes = nullptr;
  /// Prefix tokens (B, P, C) of this call (DeiT's cls token), undefined when none. Set by forward_tokens.
  torch::Tensor prefix;
  /// Where a variant in PrefixMode::joint puts the prefix tokens' output (B, P, C). Set by forward_tokens.
  torch::Tensor* prefix_output = nullptr;

  /// Number of prefix tokens P of this call (0 when none).
  int64_t prefix_tokens() const { return prefix.defined() ? prefix.size(1) : 0; }
  /// Context for x (B, C, H, W) with RoPE tables for head width `head_dim` (cached per grid size).
  static AttentionContext for_input(const torch::Tensor& x, int64_t head_dim, ProbeSink* probes = nullptr);
};

/// Options of one attention layer: its width, its heads, and `key=value` settings that the variant validates against
/// its own schema when it is built (attention_variants/settings.h; `rala info` lists every variant's settings).
///   rala::AttentionOptions(64, 2).set("alpha", false)            // RALA without α
///   rala::AttentionOptions(64, 2).set("chunk", 16)               // TransNormer-diag with 16-token chunks
struct AttentionOptions {
  AttentionOptions(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {}
  /// Channels C (= heads · head_dim).
  TORCH_ARG(int64_t, dim);
  /// Number of heads h.
  TORCH_ARG(int64_t, heads);
  /// Settings in the order given; later ones win.
  TORCH_ARG(std::vector<SettingPair>, settings) = {};
  /// Prefix tokens P every forward_tokens call carries (DeiT: 1, the cls token; see "Prefix tokens" above). Counted
  /// in macs(); Agent attention registers its cls biases (ac_bias, ca_bias) for them.
  TORCH_ARG(int64_t, prefix_tokens) = 0;
  /// The plain-ViT parameter layout of the DeiT harness and of the official DeiT ports: Linear projections (weight
  /// (out, C)) where the RAVLT layout has 1×1 convs ((out, C, 1, 1)) — `qkv`/`qkvo` and `proj` of S, L, F, C, R, H, X,
  /// Y — and Agent's and InLine's one `qkv` (3C, C) instead of `q` + `kv`. Same function, other keys and shapes.
  TORCH_ARG(bool, vit_layout) = false;

 public:
  /// Appends one setting (validated when the variant is built).
  AttentionOptions& set(const std::string& key, const std::string& value);
  AttentionOptions& set(const std::string& key, const char* value) { return set(key, std::string(value)); }
  AttentionOptions& set(const std::string& key, bool value) { return set(key, std::string(value ? "1" : "0")); }
  AttentionOptions& set(const std::string& key, int value) { return set(key, std::to_string(value)); }
  AttentionOptions& set(const std::string& key, int64_t value) { return set(key, std::to_string(value)); }
  AttentionOptions& set(const std::string& key, double value);
};

enum class Variant : int;

/// Parameter / buffer name → shape, as read from a state dict.
using StateShapes = std::map<std::string, std::vector<int64_t>>;
/// Parameter / buffer name → tensor.
using TensorMap = std::map<std::string, torch::Tensor>;

/// Analytic multiply-accumulate count of one forward of a layer on an H×W grid, per image.
struct AttentionMacs {
  int64_t projections = 0;  ///< convolutions / linear maps (q, k, v, o, proj, LePE, DWC) — what fvcore counts
  int64_t matmuls = 0;      ///< the token-mixing products (QKᵀ and AV, or kv and q·kv, α, normaliser)
};

/// Common base of every token mixer. Input and output are (B, C, H, W).
class AttentionBase : public torch::nn::Module {
 public:
  /// x: (B, C, H, W) with H·W = N; returns (B, C, H, W).
  virtual torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) = 0;
  /// The token form for harnesses with prefix tokens (see "Prefix tokens" above): tokens (B, P + H·W, C) with
  /// P = options().prefix_tokens(), the grid H×W = ctx.height × ctx.width in raster order → (B, P + H·W, C).
  /// ctx.prefix / prefix_output are set here (any given are replaced).
  ///   auto y = attn->forward_tokens(tokens, ctx);   // ctx.height, ctx.width: the patch grid
  torch::Tensor forward_tokens(const torch::Tensor& tokens, const AttentionContext& ctx);
  /// How forward_tokens treats the prefix tokens: PrefixMode::joint for a variant whose forward reads ctx.prefix.
  virtual PrefixMode prefix_mode() const { return PrefixMode::pooled; }
  Variant variant() const { return variant_; }
  /// Whether forward() reads ctx.rope_sin / rope_cos.
  virtual bool uses_rope() const { return false; }
  /// MACs of one image on an H×W grid (analytic, per-module formulas), the options' prefix tokens included.
  virtual AttentionMacs macs(int64_t height, int64_t width) const = 0;
  const AttentionOptions& options() const { return options_; }
  /// The layer's effective settings (the variant's defaults with options().settings() applied).
  const Settings& settings() const { return settings_; }
  int64_t dim() const { return options_.dim(); }
  int64_t heads() const { return options_.heads(); }
  /// Settings implied by an official state dict's shapes (learned tables sized by N or the grid); a variant with such
  /// tables hides this with its own static of the same name. See registry.h settings_from_state_shapes.
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes) { return {}; }
  /// An official module's state dict in this layer's own keys, for variants whose official code lays its projections
  /// out differently (cosFormer's q_proj/k_proj/v_proj/out_proj → qkv/proj); identity for most. A variant that needs
  /// it hides this with its own static of the same name.
  static TensorMap state_from_official(const TensorMap& state) { return state; }

 protected:
  /// Validates options.settings() against the variant's schema (throws one line naming the setting and the variant).
  AttentionBase(AttentionOptions options, Variant variant);
  AttentionOptions options_;
  Variant variant_;
  Settings settings_;
};

}  // namespace rala
