// cosFormer (C): golden parity with cosFormer's own module in the 1-D raster index mode, and the O(N) path vs the
// naive O(N²) cos-re-weighted formula in both index modes.
#include <gtest/gtest.h>

#include <cmath>

#include "attention_variants/cosformer.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "cosformer_attention_1d.h5";

TEST(CosformerGolden, RasterModeMatchesCosformerModule) {
  auto x_seq = golden(kGolden, "input");  // (L, B, E) = (63, 2, 64)
  const int64_t L = x_seq.size(0), B = x_seq.size(1), E = x_seq.size(2);
  CosformerAttention attn(AttentionOptions(E, 2).set("cosformer_index", "raster_1d"));
  {
    torch::NoGradGuard no_grad;
    auto w = torch::cat({golden(kGolden, "state_dict/q_proj.weight"), golden(kGolden, "state_dict/k_proj.weight"),
                         golden(kGolden, "state_dict/v_proj.weight")});
    auto b = torch::cat({golden(kGolden, "state_dict/q_proj.bias"), golden(kGolden, "state_dict/k_proj.bias"),
                         golden(kGolden, "state_dict/v_proj.bias")});
    attn->qkv_projection()->weight.copy_(w.reshape({3 * E, E, 1, 1}));
    attn->qkv_projection()->bias.copy_(b);
    attn->proj()->weight.copy_(golden(kGolden, "state_dict/out_proj.weight").reshape({E, E, 1, 1}));
    attn->proj()->bias.copy_(golden(kGolden, "state_dict/out_proj.bias"));
  }
  auto ref = golden(kGolden, "output");
  torch::NoGradGuard no_grad;
  // The raster order is the same for any grid with H·W = L: a 1×63 strip and a 7×9 grid give the same result.
  for (auto hw : {std::pair<int64_t, int64_t>{1, 63}, {7, 9}}) {
    auto x = x_seq.permute({1, 2, 0}).reshape({B, E, hw.first, hw.second});
    auto y = attn->forward(x, AttentionContext::for_input(x, E / 2)).reshape({B, E, L}).permute({2, 0, 1});
    EXPECT_LE(test::max_abs_err(y, ref), 1e-5 * std::max(1.0, ref.abs().max().item<double>())) << hw.first;
  }
}

/// Left product by definition: A_ij = w_ij (q_i·k_j) / max(Σ_m w_im (q_i·k_m), ε), q, k = ReLU(·),
///   raster_1d:    w_ij = cos(π/2·(i − j)/N), 1-based raster index
///   separable_2d: w_ij = cos(π/2·(r_i − r_j)/H) + cos(π/2·(c_i − c_j)/W), 0-based rows and columns
test::AttentionFormula cosformer_formula(const CosformerAttentionImpl& m, int64_t H, int64_t W) {
  return [C = m.dim(), h = m.heads(), index = m.index(), H, W](int64_t b, int64_t n, const torch::Tensor& proj) {
    const int64_t N = H * W;
    auto q = torch::relu(test::head_tokens(proj, b, 0, C, h, n)), k = torch::relu(test::head_tokens(proj, b, C, C, h, n));
    auto weight = [&](int64_t i, int64_t j) {
      if (index == CosformerIndex::raster_1d) return std::cos(M_PI / 2 * static_cast<double>(i - j) / N);
      return std::cos(M_PI / 2 * static_cast<double>(i / W - j / W) / H) +
             std::cos(M_PI / 2 * static_cast<double>(i % W - j % W) / W);
    };
    auto A = torch::empty({N, N}, torch::kFloat64);
    auto aa = A.accessor<double, 2>();
    for (int64_t i = 0; i < N; ++i) {
      double den = 0;
      for (int64_t m = 0; m < N; ++m) den += weight(i, m) * (q[i] * k[m]).sum().item<double>();
      for (int64_t j = 0; j < N; ++j) aa[i][j] = weight(i, j) * (q[i] * k[j]).sum().item<double>() / std::max(den, 1e-6);
    }
    return A;
  };
}

class CosformerModes : public ::testing::TestWithParam<CosformerIndex> {};

TEST_P(CosformerModes, LinearPathEqualsNaiveQuadraticFormula) {
  auto o = AttentionOptions(32, 2).set("cosformer_index", GetParam() == CosformerIndex::raster_1d ? "raster_1d" : "separable_2d");
  CosformerAttention attn(o);
  test::randomize(*attn, 5);
  attn->to(torch::kFloat64);
  const int64_t H = 4, W = 6;
  auto x = test::random_input(2, 32, H, W, 6);
  ProbeCollector probes({Probe::output, Probe::attention, Probe::kv_buffer});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = test::naive_attention(*attn, x, cosformer_formula(*attn, H, W));
  EXPECT_LE(test::max_rel_err(y, ref.final), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.output), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::attention), ref.attention), 1e-10);
  auto rows = probes.get(Probe::attention).sum(-1);
  EXPECT_LE((rows - 1).abs().max().item<double>(), 1e-9);
  const int64_t features = GetParam() == CosformerIndex::raster_1d ? 32 : 64;  // 2d or 4d
  EXPECT_EQ(probes.get(Probe::kv_buffer).sizes(), (std::vector<int64_t>{2, 2, features, 16}));
}

INSTANTIATE_TEST_SUITE_P(Both, CosformerModes,
                         ::testing::Values(CosformerIndex::separable_2d, CosformerIndex::raster_1d),
                         [](const auto& info) {
                           return std::string(info.param == CosformerIndex::raster_1d ? "Raster1d" : "Separable2d");
                         });

}  // namespace
}  // namespace rala

namespace rala {
namespace {

// Prefix tokens (DeiT's cls): the re-weighting is the grid's; every pair with the cls token has the weight of zero
// distance (2 in separable_2d, 1 in raster_1d). The implied (1 + N)² map against that formula, by definition.
TEST_P(CosformerModes, TheClsTokenPairsHaveTheZeroDistanceWeight) {
  const bool one_d = GetParam() == CosformerIndex::raster_1d;
  CosformerAttention attn(AttentionOptions(32, 2).set("cosformer_index", one_d ? "raster_1d" : "separable_2d")
                              .prefix_tokens(1).vit_layout(true));
  test::randomize(*attn, 8);
  attn->to(torch::kFloat64);
  const int64_t H = 3, W = 5, N = H * W, T = 1 + N;
  auto tokens = test::random_input(2, T, 32, 1, 3).squeeze(-1);  // (2, 16, 32)
  ProbeCollector probes({Probe::attention, Probe::kv_buffer});
  AttentionContext ctx;
  ctx.height = H;
  ctx.width = W;
  ctx.probes = &probes;
  torch::NoGradGuard no_grad;
  attn->forward_tokens(tokens, ctx);
  auto proj = torch::linear(tokens, attn->qkv_weight(), attn->qkv_bias());  // (2, T, 96)
  auto weight = [&](int64_t i, int64_t j) {  // token 0 is the cls token, token 1 + l the grid's l
    if (i == 0 || j == 0) return one_d ? 1.0 : 2.0;
    const int64_t a = i - 1, b = j - 1;
    if (one_d) return std::cos(M_PI / 2 * static_cast<double>(a - b) / N);
    return std::cos(M_PI / 2 * static_cast<double>(a / W - b / W) / H) +
           std::cos(M_PI / 2 * static_cast<double>(a % W - b % W) / W);
  };
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t n = 0; n < 2; ++n) {
      auto q = torch::relu(proj[b].narrow(1, 16 * n, 16)), k = torch::relu(proj[b].narrow(1, 32 + 16 * n, 16));
      auto A = torch::empty({T, T}, torch::kFloat64);
      for (int64_t i = 0; i < T; ++i) {
        double den = 0;
        for (int64_t m = 0; m < T; ++m) den += weight(i, m) * (q[i] * k[m]).sum().item<double>();
        for (int64_t j = 0; j < T; ++j) A[i][j] = weight(i, j) * (q[i] * k[j]).sum().item<double>() / den;
      }
      EXPECT_LE(test::max_rel_err(probes.get(Probe::attention)[b][n], A), 1e-10) << b << " " << n;
    }
  // The features carry 2d more channels for the position-free pairs.
  EXPECT_EQ(probes.get(Probe::kv_buffer).size(2), (one_d ? 2 : 4) * 16 + 2 * 16);
}

}  // namespace
}  // namespace rala
