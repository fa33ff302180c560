#pragma once
/// \file common.h
/// Mechanics shared by the variants: input checks, head split/merge, the kernel feature maps, the linear-attention
/// normaliser and KV product, and the probe hand-off. A variant file holds only what makes that variant different.

#include "attention_variants/attention.h"
#include "attention_variants/rope.h"

namespace rala {

/// Where the linear-attention ε sits: added to φq·Σφk (Katharopoulos), added to φq·mean φk (FLatten / MLLA / RALA
/// code), or as a floor max(φq·Σφk, ε) (cosFormer's clamp_min).
enum class Normalizer { sum, mean, sum_clamp };
/// "sum", "mean", "sum_clamp".
const char* normalizer_name(Normalizer n);
/// From its name; throws listing the accepted names.
Normalizer normalizer_from_name(const std::string& name);

/// Checks x is (B, C, H, W) with C == options.dim and a non-empty grid; throws naming the violated condition.
void check_attention_input(const torch::Tensor& x, const AttentionOptions& options, const char* variant_name);
/// Checks dim % heads == 0 (and dim, heads > 0); throws naming the values.
void check_head_split(int64_t dim, int64_t heads, const char* variant_name);

/// Channels [c0, c0 + C) of a (B, *, H, W) map viewed as heads: (B, h, N, d), token l = row·W + col,
/// channel c0 + n·d + i → head n, feature i (the official 'b (n d) h w -> b n (h w) d'). A strided view, no copy.
torch::Tensor split_heads(const torch::Tensor& map, int64_t c0, int64_t channels, int64_t heads);
/// (B, h, N, d) → (B, h·d, H, W), inverse of split_heads; the result is in channels-last memory (token-major).
torch::Tensor merge_heads(const torch::Tensor& y, int64_t height, int64_t width);

/// Token layouts for variants written on tokens (official code on (B, N, C)):
/// (B, C, H, W) → (B, N, C), raster order l = row·W + col; a strided view, no copy.
torch::Tensor map_to_tokens(const torch::Tensor& map);
/// (B, N, C) → (B, C, H, W); a view in channels-last memory when `tokens` is contiguous.
torch::Tensor tokens_to_map(const torch::Tensor& tokens, int64_t height, int64_t width);
/// (B, N, C) → (B, h, N, d), channel n·d + i → head n, feature i; a view.
torch::Tensor token_heads(const torch::Tensor& tokens, int64_t heads);
/// (B, h, N, d) → (B, N, h·d), inverse of token_heads.
torch::Tensor merge_token_heads(const torch::Tensor& y);

/// elu(x) + 1 (Katharopoulos feature map).
torch::Tensor elu_feature(const torch::Tensor& x);

/// Result of the O(N) linear-attention product.
struct LinearAttentionResult {
  torch::Tensor output;  ///< (B, h, N, dv) = (q_num · kv) ⊙ z
  torch::Tensor kv;      ///< (B, h, dk, dv) as multiplied
  torch::Tensor z;       ///< (B, h, N, 1) reciprocal normaliser
};

/// out_i = q_num_i · kv · z_i with
///   Normalizer::sum : kv = Σ_j k_num_jᵀ v_j,          z_i = 1 / (q_den_i · Σ_j k_den_j + ε)
///   Normalizer::mean: kv = Σ_j k_num_jᵀ v_j / N,      z_i = 1 / (q_den_i · mean_j k_den_j + ε)
///   Normalizer::sum_clamp: kv as sum,                z_i = 1 / max(q_den_i · Σ_j k_den_j, ε)
/// (mean: the vision-code convention, kv computed as (kᵀ N^-½)(v N^-½) as the official code does).
/// q_num, k_num, q_den, k_den: (B, h, N, dk); v: (B, h, N, dv).
LinearAttentionResult linear_attention(const torch::Tensor& q_num, const torch::Tensor& k_num, const torch::Tensor& q_den,
                                       const torch::Tensor& k_den, const torch::Tensor& v, Normalizer normalizer,
                                       double eps);

/// The implied attention map of a kernel variant: A_ij = (q_num_i · k_num_j) · z_i · s with s = 1/N for the mean
/// convention, so that A·v equals the linear-attention output. (B, h, N, N).
torch::Tensor implied_attention(const torch::Tensor& q_num, const torch::Tensor& k_num, const torch::Tensor& z,
                                Normalizer normalizer);

/// Whether ctx has a sink that wants p (and, for the attention map, N within its limit).
bool probe_wanted(const AttentionContext& ctx, Probe p, int64_t tokens = 0);
/// Hands value to ctx's sink if it wants p. No work when nothing listens.
void emit_probe(const AttentionContext& ctx, Probe p, const torch::Tensor& value);
/// Whether ctx has a sink that wants the variant's own internal `name` (see ProbeSink::wants_internal).
bool internal_wanted(const AttentionContext& ctx, const std::string& name);
/// Hands a variant's own internal to ctx's sink if it wants `name`.
void emit_internal(const AttentionContext& ctx, const std::string& name, const torch::Tensor& value);

/// The context's RoPE tables, checked to be (N, head_dim) for x's grid; built from the cache when the context has none.
/// With prefix tokens in the context: (P + N, head_dim), the prefix rows un-rotated (sin 0, cos 1) ahead of the grid's.
RopeTables context_rope(const AttentionContext& ctx, int64_t head_dim, const torch::Tensor& x);
/// Grid tables (N, f) with `prefix` un-rotated rows (sin 0, cos 1) put in front: (prefix + N, f).
RopeTables with_unrotated_prefix(const RopeTables& tables, int64_t prefix);

/// Prefix tokens (attention.h): the context's prefix (B, P, C) checked against the layer (P = its prefix_tokens, C =
/// its width) and the grid input x (batch, dtype); undefined when the call has none.
torch::Tensor context_prefix(const AttentionContext& ctx, const AttentionOptions& options, const torch::Tensor& x,
                             const char* variant_name);
/// (B, P, C') prefix and (B, N, C') grid tokens → (B, P + N, C'); the grid tokens alone when `prefix` is undefined.
torch::Tensor with_prefix(const torch::Tensor& prefix, const torch::Tensor& grid_tokens);
/// Features of a positionally re-weighted kernel (cosFormer, Vicinity) with position-free prefix tokens: locality
/// applies between grid tokens only; every pair with a prefix token gets the weight of zero distance w0:
///   grid queries [rw(q), √w0·q, 0]    prefix queries [0, √w0·q, √w0·q]
///   grid keys    [rw(k), 0, √w0·k]    prefix keys    [0, √w0·k, 0]
/// so that q̃_i·k̃_j = rw(q_i)·rw(k_j) between grid tokens and w0·(q_i·k_j) when either is a prefix token.
/// rw (B, h, N, f) the grid's re-weighted features; plain (B, h, P + N, d) the features before re-weighting, prefix
/// first → (B, h, P + N, f + 2d). `rw` itself when prefix = 0.
torch::Tensor prefix_reweighted_features(const torch::Tensor& rw, const torch::Tensor& plain, int64_t prefix, double w0,
                                         bool query);
/// A layer's output tokens (B, P + N, C), prefix first: hands the first P rows to ctx.prefix_output (P =
/// ctx.prefix_tokens()) and returns the grid rows as (B, C, H, W).
torch::Tensor finish_tokens(const AttentionContext& ctx, const torch::Tensor& tokens, int64_t height, int64_t width);

/// 1×1 convolution (a Linear over channels) with `out` outputs; the layout the official RAVLT code uses.
torch::nn::Conv2d conv1x1(int64_t in, int64_t out, bool bias = true);
/// k×k depthwise convolution with padding k/2.
torch::nn::Conv2d depthwise(int64_t channels, int64_t kernel);

/// The entry `name` of a state dict's shapes: the exact key, else the one key ending in ".name" (a module prefix);
/// null if none. Several candidates are an error naming `variant` and the keys.
const std::vector<int64_t>* find_state_entry(const StateShapes& shapes, const std::string& name, const char* variant);

}  // namespace rala
