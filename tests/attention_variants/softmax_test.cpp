// Softmax attention (S): golden parity with RAVLT's VanillaSelfAttention, naive O(N²) formula, switches.
#include <gtest/gtest.h>

#include "attention_variants/softmax.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "softmax_rope_attention.h5";

TEST(SoftmaxGolden, OutputMatchesOfficialVanillaSelfAttention) {
  auto x = golden(kGolden, "input");
  const int64_t C = x.size(1);
  SoftmaxAttention attn(AttentionOptions(C, 2));
  test::load_state(*attn, kGolden);
  AttentionContext ctx = AttentionContext::for_input(x, C / 2);
  ctx.rope_sin = golden(kGolden, "rope_sin");
  ctx.rope_cos = golden(kGolden, "rope_cos");
  torch::NoGradGuard no_grad;
  auto ref = golden(kGolden, "output");
  EXPECT_LE(test::max_abs_err(attn->forward(x, ctx), ref), 1e-5 * std::max(1.0, ref.abs().max().item<double>()));
}

/// A_ij = softmax_j(d^-½ Rq_i · Rk_j), R = RoPE or identity.
test::AttentionFormula softmax_formula(const AttentionBase& m, int64_t H, int64_t W) {
  return [C = m.dim(), h = m.heads(), with_rope = m.settings().flag("rope"), H, W](int64_t b, int64_t n,
                                                                                  const torch::Tensor& proj) {
    const int64_t d = C / h, N = H * W;
    auto q = test::head_tokens(proj, b, 0, C, h, n), k = test::head_tokens(proj, b, C, C, h, n);
    if (with_rope) {
      q = test::naive_rope(q, H, W);
      k = test::naive_rope(k, H, W);
    }
    auto A = torch::empty({N, N}, torch::kFloat64);
    for (int64_t i = 0; i < N; ++i) {
      auto s = torch::empty({N}, torch::kFloat64);
      for (int64_t j = 0; j < N; ++j) s[j] = (q[i] * k[j]).sum() / std::sqrt(static_cast<double>(d));
      A[i] = test::naive_softmax(s);
    }
    return A;
  };
}

class SoftmaxSwitches : public ::testing::TestWithParam<int> {};

TEST_P(SoftmaxSwitches, EqualsNaiveFormula) {
  const int bits = GetParam();
  auto o = AttentionOptions(32, 2).set("gate", (bits & 1) != 0).set("rope", (bits & 2) != 0).set("lepe", (bits & 4) != 0);
  SoftmaxAttention attn(o);
  test::randomize(*attn, 21 + bits);
  attn->to(torch::kFloat64);
  const int64_t H = 4, W = 7;
  auto x = test::random_input(2, 32, H, W, 4);
  ProbeCollector probes({Probe::output, Probe::output_gated, Probe::attention});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = test::naive_attention(*attn, x, softmax_formula(*attn, H, W));
  EXPECT_LE(test::max_rel_err(y, ref.final), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.output), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::attention), ref.attention), 1e-10);
  auto rows = probes.get(Probe::attention).sum(-1);
  EXPECT_LE((rows - 1).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(probes.get(Probe::output_gated).sizes(), probes.get(Probe::output).sizes());
}

INSTANTIATE_TEST_SUITE_P(Combinations, SoftmaxSwitches, ::testing::Range(0, 8), [](const auto& info) {
  const int b = info.param;
  return std::string(b & 1 ? "Gate" : "NoGate") + (b & 2 ? "Rope" : "NoRope") + (b & 4 ? "Lepe" : "NoLepe");
});

TEST(SoftmaxProbes, AttentionMapOnlyWithinTheSinksLimit) {
  SoftmaxAttention attn(AttentionOptions(32, 2));
  auto x = test::random_input(1, 32, 6, 6, 1, torch::kFloat32);
  ProbeCollector small({Probe::attention}, /*attention_limit=*/35);
  ProbeCollector large({Probe::attention}, /*attention_limit=*/36);
  torch::NoGradGuard no_grad;
  attn->forward(x, AttentionContext::for_input(x, 16, &small));
  attn->forward(x, AttentionContext::for_input(x, 16, &large));
  EXPECT_FALSE(small.has(Probe::attention));
  ASSERT_TRUE(large.has(Probe::attention));
  EXPECT_EQ(large.get(Probe::attention).sizes(), (std::vector<int64_t>{1, 2, 36, 36}));
}

}  // namespace
}  // namespace rala

namespace rala {
namespace {

// Prefix tokens (DeiT's cls) with every switch on: the cls token is a query and a key of the softmax over all 1 + N
// tokens, un-rotated by RoPE (RoPE-ViT's rule), without LePE, gated like every token. Against the formula written out.
TEST(SoftmaxPrefix, TheClsTokenIsUnrotatedWithoutLepeAndGated) {
  SoftmaxAttention attn(AttentionOptions(32, 2).prefix_tokens(1).vit_layout(true));  // gate, rope, lepe on
  test::randomize(*attn, 31);
  attn->to(torch::kFloat64);
  const int64_t H = 4, W = 7, N = H * W, T = 1 + N, C = 32, d = 16;
  auto tokens = test::random_input(2, T, C, 1, 8).squeeze(-1);
  AttentionContext ctx;
  ctx.height = H;
  ctx.width = W;
  torch::NoGradGuard no_grad;
  auto y = attn->forward_tokens(tokens, ctx);
  auto proj = torch::linear(tokens, attn->qkv_weight(), attn->qkv_bias());  // (2, T, 4C): [q | k | v | o]
  auto ref = torch::empty_like(tokens);
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<torch::Tensor> heads;
    for (int64_t n = 0; n < 2; ++n) {
      auto part = [&](int64_t block) { return proj[b].narrow(1, block * C + n * d, d); };  // (T, d)
      auto rotate = [&](const torch::Tensor& t) {  // the grid rows by their position, the cls row as it is
        return torch::cat({t.narrow(0, 0, 1), test::naive_rope(t.narrow(0, 1, N), H, W)});
      };
      auto q = rotate(part(0)), k = rotate(part(1)), v = part(2);
      auto A = torch::empty({T, T}, torch::kFloat64);
      for (int64_t i = 0; i < T; ++i) A[i] = test::naive_softmax(torch::matmul(k, q[i]) / std::sqrt(double(d)));
      heads.push_back(torch::matmul(A, v));
    }
    auto out = torch::cat(heads, 1);  // (T, C)
    auto v_map = proj[b].narrow(1, 2 * C, C).narrow(0, 1, N).t().reshape({1, C, H, W});
    auto lepe = torch::conv2d(v_map, attn->lepe()->weight, attn->lepe()->bias, 1, 2, 1, C).reshape({C, N}).t();
    out = torch::cat({out.narrow(0, 0, 1), out.narrow(0, 1, N) + lepe}) * proj[b].narrow(1, 3 * C, C);
    ref[b] = torch::linear(out, attn->proj_weight(), attn->proj_bias());
  }
  EXPECT_LE(test::max_rel_err(y, ref), 1e-10);
}

}  // namespace
}  // namespace rala
