#pragma once
/// \file rope.h
/// RAVLT's 2-D rotary position embedding (official `RoPE` module and `theta_shift`).
///
///   angle = 1 / 10000^linspace(0, 1, d/4), each entry repeated twice  → length d/2
///   sin, cos (N, d) = cat([f(row·angle), f(col·angle)]) for f ∈ {sin, cos}; rows, columns 0-based, raster order
///   theta_shift(x) = x·cos + rotate_every_two(x)·sin,  rotate_every_two(x0,x1,x2,x3,…) = (−x1,x0,−x3,x2,…)
///
/// Usage:
///   auto t = rala::rope_tables(64, 7, 9);          // t.sin, t.cos: (63, 64)
///   auto q_rot = rala::theta_shift(q, t.sin, t.cos);

#include <torch/torch.h>

namespace rala {

struct RopeTables {
  torch::Tensor sin;  ///< (N, d)
  torch::Tensor cos;  ///< (N, d)
};

/// The official `angle` buffer for head width d: (d/2,). Requires d % 4 == 0.
torch::Tensor rope_angle(int64_t head_dim, const torch::TensorOptions& options = torch::kFloat32);
/// Tables for an H×W grid, computed in float64 and cast to `options`' dtype.
RopeTables rope_tables(int64_t head_dim, int64_t height, int64_t width,
                       const torch::TensorOptions& options = torch::kFloat32);
/// Tables from a cache keyed by (d, H, W, dtype, device): built once per grid size, shared by every layer (thread-safe).
RopeTables cached_rope_tables(int64_t head_dim, int64_t height, int64_t width,
                              const torch::TensorOptions& options = torch::kFloat32);
/// (…, d) → (…, d): (x0, x1, x2, x3, …) → (−x1, x0, −x3, x2, …).
torch::Tensor rotate_every_two(const torch::Tensor& x);
/// x·cos + rotate_every_two(x)·sin; x (B, h, N, d), tables (N, d).
torch::Tensor theta_shift(const torch::Tensor& x, const torch::Tensor& sin, const torch::Tensor& cos);

}  // namespace rala
