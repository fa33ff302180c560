// Focused linear attention (F): golden parity with FLatten's FocusedLinearAttention (8×8 window, absolute PE), and
// the O(N) path vs the naive O(N²) formula.
#include <gtest/gtest.h>

#include "attention_variants/focused.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "focused_linear_attention.h5";

TEST(FocusedGolden, OutputMatchesFLattenModule) {
  auto x_tokens = golden(kGolden, "input");  // (B, N, C) = (2, 64, 64), 8×8 raster
  const int64_t B = x_tokens.size(0), N = x_tokens.size(1), C = x_tokens.size(2);
  FocusedAttention attn(
      AttentionOptions(C, 2).set("position_tokens", N).set("focusing_factor", 3).set("dwc_kernel", 5));
  test::load_state(*attn, kGolden);
  auto x = x_tokens.transpose(1, 2).reshape({B, C, 8, 8});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, C / 2)).flatten(2).transpose(1, 2);  // (B, N, C)
  auto ref = golden(kGolden, "output");
  EXPECT_LE(test::max_abs_err(y, ref), 1e-5 * std::max(1.0, ref.abs().max().item<double>()));
}

/// Full-C features of image b, by definition: (ReLU(x [+ PE]) + 1e-6)/softplus(s), then f_p(x) = ‖x‖·x^p/‖x^p‖.
torch::Tensor focused_features(const torch::Tensor& raw /* (N, C) */, const torch::Tensor& scale,
                               const torch::Tensor& pe, int64_t p) {
  auto x = raw.clone();
  if (pe.defined()) x = x + pe.to(torch::kFloat64).reshape({raw.size(0), raw.size(1)});
  auto s = scale.to(torch::kFloat64).reshape({-1});
  auto xa = x.accessor<double, 2>();
  auto sa = s.accessor<double, 1>();
  for (int64_t i = 0; i < x.size(0); ++i) {
    double n2 = 0, np2 = 0;
    for (int64_t c = 0; c < x.size(1); ++c) {
      const double softplus = std::log1p(std::exp(sa[c]));
      xa[i][c] = (std::max(xa[i][c], 0.0) + 1e-6) / softplus;
      n2 += xa[i][c] * xa[i][c];
      np2 += std::pow(xa[i][c], 2.0 * p);
    }
    for (int64_t c = 0; c < x.size(1); ++c) xa[i][c] = std::pow(xa[i][c], p) / std::sqrt(np2) * std::sqrt(n2);
  }
  return x;
}

TEST(FocusedNaive, LinearPathEqualsNaiveQuadraticFormula) {
  const int64_t C = 32, h = 2, d = 16, H = 5, W = 4, N = H * W;
  auto o = AttentionOptions(C, h).set("position_tokens", N);
  FocusedAttention attn(o);
  test::randomize(*attn, 17);
  attn->to(torch::kFloat64);
  auto x = test::random_input(2, C, H, W, 3);
  auto formula = [&](int64_t b, int64_t n, const torch::Tensor& proj) {
    auto q = focused_features(proj[b].narrow(0, 0, C).t(), attn->scale.detach(), {}, 3).narrow(1, n * d, d);
    auto k = focused_features(proj[b].narrow(0, C, C).t(), attn->scale.detach(), attn->positional_encoding.detach(), 3)
                 .narrow(1, n * d, d);
    auto A = torch::empty({N, N}, torch::kFloat64);
    auto aa = A.accessor<double, 2>();
    for (int64_t i = 0; i < N; ++i) {
      double den = 0;
      for (int64_t m = 0; m < N; ++m) den += (q[i] * k[m]).sum().item<double>() / N;
      for (int64_t j = 0; j < N; ++j) aa[i][j] = (q[i] * k[j]).sum().item<double>() / N / (den + 1e-6);
    }
    return A;
  };
  auto dwc = [&](const torch::Tensor& proj) {  // each head's v through the shared d-channel depthwise conv
    auto v = proj.narrow(1, 2 * C, C).reshape({2, C, H, W});
    std::vector<torch::Tensor> heads;
    for (int64_t n = 0; n < h; ++n)
      heads.push_back(torch::conv2d(v.narrow(1, n * d, d), attn->dwc->weight.detach(), attn->dwc->bias.detach(), 1, 2,
                                    1, d));
    return torch::cat(heads, 1);
  };
  ProbeCollector probes({Probe::output, Probe::attention, Probe::normalizer_z});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, d, &probes));
  auto ref = test::naive_attention(*attn, x, formula, dwc);
  EXPECT_LE(test::max_rel_err(y, ref.final), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.output), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::attention), ref.attention), 1e-10);
  // Rows sum to 1 but for the ε in the denominator: Σ_j A_ij = den_i/(den_i + ε) = 1 − ε·z_i exactly.
  auto rows = probes.get(Probe::attention).sum(-1);
  EXPECT_LE((rows - (1 - 1e-6 * probes.get(Probe::normalizer_z))).abs().max().item<double>(), 1e-12);
}

TEST(FocusedErrors, PositionalEncodingMustMatchTokenCount) {
  FocusedAttention attn(AttentionOptions(32, 2).set("position_tokens", 16));
  auto x = test::random_input(1, 32, 5, 5, 1, torch::kFloat32);
  try {
    attn->forward(x, AttentionContext::for_input(x, 16));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("16 tokens, the input has 25"), std::string::npos)
        << e.what_without_backtrace();
  }
}

}  // namespace
}  // namespace rala
