#pragma once
/// \file fused_kernels.h
/// Internal: the raw kernels behind fused.h. fused_kernels.cpp is compiled once per CPU capability (DEFAULT, and on
/// x86-64 AVX2 and AVX512, each in its own namespace with its own -m flags, as ATen's own kernels are); fused.cpp
/// picks one table at run time. Every kernel computes in float32 and reads/writes float32 or bfloat16 storage; every
/// tensor is a dense row-major block described by the pointers and sizes here (the callers check layouts).

#include <cstdint>

namespace rala::fused::detail {

enum class DType : int { f32 = 0, bf16 = 1 };

/// Per row r of C channels: u = y + γ ⊙ a (u = y when a is null); writes u to y_out (if set) and LN(u)·w + b to n
/// (if set). All rows contiguous with C elements; gamma, ln_w, ln_b: (C).
struct RowsArgs {
  DType dt;
  int64_t rows, C;
  const void* y;
  const void* gamma;
  const void* a;
  void* y_out;
  const void* ln_w;
  const void* ln_b;
  float eps;
  void* n;
};

/// Depthwise k×k convolution (stride 1, zero padding k/2) on (B, H, W, C) with a residual:
///   g = act(x);  y = g + bias + Σ_taps w ⊙ g(shifted);  n = LN(y)·ln_w + ln_b (when n is set).
/// act = identity or exact GELU. weight (C, 1, k, k) as stored by a Conv2d, bias (C) or null.
struct DwArgs {
  DType dt;
  int64_t B, H, W, C, k;
  const void* x;
  const void* weight;
  const void* bias;
  bool gelu_input;
  void* y;
  const void* ln_w;
  const void* ln_b;
  float eps;
  void* n;
};

/// In place on rows of C: x ← act(x ⊙ scale + shift) (eval BatchNorm + optional GELU), scale/shift float (C).
struct AffineArgs {
  DType dt;
  int64_t rows, C;
  void* x;
  const float* scale;
  const float* shift;
  bool gelu;
};

/// RALA on the channels-last projection `all` (B, H, W, ld): q at channel 0, k at C, v at 2C, o at 3C (gated).
/// Head n owns channels [n·d, (n+1)·d) of each. Float32 work buffers are the caller's.
struct RalaArgs {
  DType dt;
  int64_t B, H, W, C, heads, d, ld;
  const void* all;
  bool alpha, rope, gated, lepe;
  const void* sin;  ///< (N, d) when rope
  const void* cos;
  const void* lepe_w;  ///< (C, 1, k, k)
  const void* lepe_b;  ///< (C) or null
  int64_t lepe_k;
  float scale;  ///< d^-½ (α logits)
  float eps;
  int64_t chunk;  ///< tokens per work item of the reductions (fixed by the caller: results do not depend on threads)
  int64_t chunks;
  // prepare: writes these
  float* part;    ///< (B·h, chunks, d + 2) per-chunk partial sums
  float* qmean;   ///< (B·h, d) mean φq
  float* alpha_out;  ///< (B·h, N) α (logits while preparing)
  void* kr;       ///< (B·h, N, d) α_j · RoPE(φk_j), storage dtype (the kv product is a GEMM on it)
  float* kmean;   ///< (B·h, d) Σ_j α_j φk_j
  // finish: reads kv, writes y (and z, output when set)
  const float* kv;  ///< (B·h, d, d) Σ_j α_j RoPE(φk_j)ᵀ v_j
  void* y;          ///< (B, H, W, C): ((RoPE(φq)·kv)·z + LePE(v)) ⊙ o
  float* z_out;     ///< (B·h, N) or null
  void* out_pre;    ///< (B, h, N, d) (RoPE(φq)·kv)·z or null (probe `output`)
};

/// Softmax-attention pieces. rope_scale: dst (B, h, N, d) contiguous = RoPE(src)·scale (or src·scale without RoPE),
/// src channels [c0, c0 + C) of `all` (B, H, W, ld). gate_finish: y = (num + LePE(v)) ⊙ o with num (B, h, N, d)
/// contiguous and v, o in `all` as for RALA.
struct RopeArgs {
  DType dt;
  int64_t B, N, C, heads, d, ld, c0;
  const void* all;
  const void* sin;
  const void* cos;
  bool rope;
  float scale;
  void* dst;
};

struct GateArgs {
  DType dt;
  int64_t B, H, W, C, heads, d, ld;
  const void* all;
  bool gated, lepe;
  const void* lepe_w;
  const void* lepe_b;
  int64_t lepe_k;
  const void* num;  ///< (B, h, N, d)
  void* y;          ///< (B, H, W, C)
};

struct KernelTable {
  const char* name;
  void (*rows)(const RowsArgs&);
  void (*dwconv)(const DwArgs&);
  void (*affine)(const AffineArgs&);
  void (*rala_prepare)(const RalaArgs&);
  void (*rala_finish)(const RalaArgs&);
  void (*rope_scale)(const RopeArgs&);
  void (*gate_finish)(const GateArgs&);
};

// One table per compiled capability (fused_kernels.cpp in the namespace of its capability).
namespace DEFAULT {
const KernelTable& kernel_table();
}
namespace AVX2 {
const KernelTable& kernel_table();
}
namespace AVX512 {
const KernelTable& kernel_table();
}

}  // namespace rala::fused::detail
