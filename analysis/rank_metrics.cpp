#include "analysis/rank_metrics.h"

#include <algorithm>
#include <cmath>

namespace rala {

double dtype_eps(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return std::ldexp(1.0, -23);
    case torch::kFloat64: return std::ldexp(1.0, -52);
    case torch::kBFloat16: return std::ldexp(1.0, -7);
    case torch::kFloat16: return std::ldexp(1.0, -10);
    default: TORCH_CHECK(false, "dtype_eps: ", dtype, " is not a floating dtype");
  }
}

RankMetrics rank_metrics(const std::vector<double>& sv, int64_t rows, int64_t cols, double eps,
                         std::optional<double> relative_tolerance) {
  TORCH_CHECK(rows > 0 && cols > 0, "rank_metrics: matrix shape must be positive, got ", rows, "x", cols);
  TORCH_CHECK(static_cast<int64_t>(sv.size()) <= std::min(rows, cols), "rank_metrics: ", sv.size(),
              " singular values for a ", rows, "x", cols, " matrix");
  TORCH_CHECK(std::is_sorted(sv.rbegin(), sv.rend()), "rank_metrics: singular values must be in descending order");
  RankMetrics m;
  if (sv.empty() || !(sv.front() > 0)) return m;
  const double smax = sv.front();
  m.tolerance = smax * static_cast<double>(std::max(rows, cols)) * eps;
  double sum = 0, sum2 = 0;
  for (double s : sv) {
    m.numerical_rank += s > m.tolerance;
    sum += s;
    sum2 += s * s;
  }
  if (relative_tolerance) {
    m.relative_rank = 0;
    for (double s : sv) m.relative_rank += s > smax * *relative_tolerance;
  }
  double entropy = 0;
  for (double s : sv) {
    const double p = s / sum;
    if (p > 0) entropy -= p * std::log(p);
  }
  m.effective_rank = std::exp(entropy);
  m.stable_rank = sum2 / (smax * smax);
  double acc = 0;
  for (size_t i = 0; i < sv.size(); ++i) {
    acc += sv[i] * sv[i];
    if (m.energy_rank_90 == 0 && acc >= 0.90 * sum2) m.energy_rank_90 = static_cast<int64_t>(i + 1);
    if (m.energy_rank_99 == 0 && acc >= 0.99 * sum2) m.energy_rank_99 = static_cast<int64_t>(i + 1);
  }
  return m;
}

}  // namespace rala
