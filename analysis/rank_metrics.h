#pragma once
/// \file rank_metrics.h
/// Rank measures of one spectrum (singular values σ_1 ≥ … ≥ σ_k of an m×n matrix):
///   numerical_rank   #{σ_i > σ_1·max(m, n)·eps}, eps of the probe's own dtype — numpy.linalg.matrix_rank's default
///   relative_rank    #{σ_i > σ_1·rel_tol} for a user tolerance (−1 when none is given)
///   effective_rank   exp(H(p)), p_i = σ_i/Σσ, H = −Σ p_i ln p_i (Roy & Vetterli 2007); 0 for a zero matrix
///   stable_rank      ‖A‖_F²/σ_1² = Σσ_i²/σ_1²
///   energy_rank_90/99  the least r with Σ_{i≤r} σ_i² ≥ 0.90 (0.99)·Σσ_i²
///
/// Usage:
///   auto m = rala::rank_metrics(spectrum.values, rows, cols, rala::dtype_eps(torch::kFloat32));

#include <torch/torch.h>

#include <optional>
#include <vector>

namespace rala {

struct RankMetrics {
  int64_t numerical_rank = 0;
  int64_t relative_rank = -1;
  double effective_rank = 0;
  double stable_rank = 0;
  int64_t energy_rank_90 = 0;
  int64_t energy_rank_99 = 0;
  double tolerance = 0;  ///< the absolute threshold of numerical_rank
};

/// Machine epsilon of a floating dtype (float32: 2^-23, float64: 2^-52, bfloat16: 2^-7, half: 2^-10).
double dtype_eps(torch::ScalarType dtype);

/// Metrics of a complete, descending spectrum of an m×n matrix whose entries had machine epsilon `eps`.
RankMetrics rank_metrics(const std::vector<double>& singular_values, int64_t rows, int64_t cols, double eps,
                         std::optional<double> relative_tolerance = std::nullopt);

}  // namespace rala
