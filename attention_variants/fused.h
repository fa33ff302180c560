#pragma once
/// \file fused.h
/// Fused CPU kernels for the inference forward of the RAVLT harness and its projected attention layers: what
/// LibTorch 1.13 runs as separate memory passes (one tensor written and read back per op) done in one pass over the
/// channels-last data, on at::vec::Vectorized with at::parallel_for. Float32 arithmetic on float32 or bfloat16 storage.
///
/// | kernel                         | replaces (LibTorch expression, channels-last (B, C, H, W))                           |
/// |--------------------------------|--------------------------------------------------------------------------------------|
/// | layer_norm_channels_last       | layer_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)        (LayerNorm2d)           |
/// | residual / residual_layer_norm | y + γ ⊙ a  [and LayerNorm2d of it]                          (layer-scale residual)  |
/// | dwconv_residual_layer_norm     | y = x + dwconv(x); LayerNorm2d(y)                           (RAVLT block: pos, norm1) |
/// | gelu_dwconv_residual           | g = gelu(x); g + dwconv(g)                                  (ConvFFN middle)        |
/// | affine_                        | x ⊙ s + t [then gelu], in place                             (eval BatchNorm [+ GELU]) |
/// | rala_attention                 | RALA from the qkvo projection to the input of proj: φ, α, RoPE, kv, normaliser, LePE, gate |
/// | softmax_attention              | RoPE + scaled softmax attention + LePE + gate, to the input of proj                 |
///
/// Dispatch: `applies()` says whether a call can take the fused path — enabled, every tensor on the CPU, float32 or
/// bfloat16 (one dtype), and no autograd graph to record (grad mode off, or nothing requires grad). Otherwise the
/// callers run the LibTorch expressions (other devices, float64, training). The SIMD width is chosen at run time:
/// the kernels are compiled for AVX512, AVX2 and a portable DEFAULT, and the best one the CPU supports runs.
/// Environment: RALA_FUSED=0 turns the fused path off (the LibTorch expressions everywhere);
/// RALA_CPU_CAPABILITY=default|avx2|avx512 picks the kernel build.
///
/// Usage:
///   if (rala::fused::applies({x, w, b})) y = rala::fused::layer_norm_channels_last(x, w, b, 1e-6);

#include "attention_variants/batch_norm.h"
#include <torch/torch.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace rala::fused {

/// Whether the fused kernels are switched on (default yes; RALA_FUSED=0 or set_enabled(false) turns them off).
bool enabled();
void set_enabled(bool on);
/// The kernel build in use: "AVX512", "AVX2" or "DEFAULT".
std::string capability();
/// Builds compiled in and supported by this CPU, best last.
std::vector<std::string> available_capabilities();
/// Selects a build by name (case-insensitive); throws naming the available ones if it is not.
void set_capability(const std::string& name);

/// Whether a call on these tensors can take the fused path (see the file comment). Undefined tensors are ignored.
bool applies(std::initializer_list<torch::Tensor> tensors);
/// x is a 4-D tensor in channels-last memory (a (B, C, H, W) view of dense (B, H, W, C) storage).
bool channels_last(const torch::Tensor& x);

/// LayerNorm over the channels of a channels-last (B, C, H, W) map; w, b (C). Result channels-last.
torch::Tensor layer_norm_channels_last(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                       double eps);
/// y + γ ⊙ a; y, a channels-last (B, C, H, W), γ with C elements ((1, C, 1, 1) or (C)).
torch::Tensor residual(const torch::Tensor& y, const torch::Tensor& gamma, const torch::Tensor& a);
/// {u, LayerNorm(u)} with u = y + γ ⊙ a.
std::pair<torch::Tensor, torch::Tensor> residual_layer_norm(const torch::Tensor& y, const torch::Tensor& gamma,
                                                            const torch::Tensor& a, const torch::Tensor& w,
                                                            const torch::Tensor& b, double eps);
/// {y, LayerNorm(y)} with y = x + dwconv_k(x) + bias: depthwise k×k, stride 1, padding k/2, weight (C, 1, k, k).
/// `w`, `b` undefined: only y (second element undefined).
std::pair<torch::Tensor, torch::Tensor> dwconv_residual_layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                                                                   const torch::Tensor& bias, const torch::Tensor& w,
                                                                   const torch::Tensor& b, double eps);
/// g + dwconv_k(g) + bias with g = gelu(x) (exact erf GELU).
torch::Tensor gelu_dwconv_residual(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
/// In place: x ← x ⊙ scale + shift per channel (then exact GELU when `gelu`); scale, shift float32 (C).
void affine_(torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& shift, bool gelu);
/// Eval BatchNorm as (scale, shift) in float32, LibTorch's formula: scale = w / √(var + ε), shift = b − mean·scale.
std::pair<torch::Tensor, torch::Tensor> batch_norm_affine(const torch::nn::BatchNorm2dImpl& bn);
std::pair<torch::Tensor, torch::Tensor> batch_norm_affine(const rala::BatchNorm2dImpl& bn);  ///< the synchronised one

/// What rala_attention returns; probes are computed only when asked.
struct RalaResult {
  torch::Tensor y;       ///< (B, C, H, W) channels-last: (RoPE(φq)·kv·z + LePE(v)) ⊙ o, the input of proj
  torch::Tensor kv;      ///< (B, h, d, d) Σ_j α_j RoPE(φk_j)ᵀ v_j (always)
  torch::Tensor alpha;   ///< (B, h, N) when asked
  torch::Tensor z;       ///< (B, h, N) when asked
  torch::Tensor output;  ///< (B, h, N, d) RoPE(φq)·kv·z, before LePE and gate, when asked
};
struct RalaSwitches {
  bool alpha = true, rope = true, gated = true;
  bool want_alpha = false, want_z = false, want_output = false;
};
/// RALA (rala.h) from its projection: `all` channels-last (B, 3C|4C, H, W) holding [q | k | v | o]; sin, cos (N, d)
/// when rope; lepe_w (C, 1, k, k) and lepe_b (C) or undefined (no LePE).
RalaResult rala_attention(const torch::Tensor& all, int64_t channels, int64_t heads, const RalaSwitches& s,
                          const torch::Tensor& sin, const torch::Tensor& cos, const torch::Tensor& lepe_w,
                          const torch::Tensor& lepe_b, double eps);

/// Softmax attention with RoPE on q, k (when sin is defined), A = softmax(d^-½ q kᵀ), y = (A·v + LePE(v)) ⊙ o
/// (gated) on the same projection layout. Returns y (channels-last); *attention / *output receive A (B, h, N, N) and
/// A·v (B, h, N, d) when not null.
torch::Tensor softmax_attention(const torch::Tensor& all, int64_t channels, int64_t heads, bool gated,
                                const torch::Tensor& sin, const torch::Tensor& cos, const torch::Tensor& lepe_w,
                                const torch::Tensor& lepe_b, torch::Tensor* attention = nullptr,
                                torch::Tensor* output = nullptr);

}  // namespace rala::fused
