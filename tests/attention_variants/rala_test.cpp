// RALA (R): golden parity with the official GateLinearAttentionNoSilu, O(N) vs the naive O(N²) formula for every
// combination of the ablation switches, probes, and the all-off reduction to vanilla linear attention.
#include <gtest/gtest.h>

#include "attention_variants/linear.h"
#include "attention_variants/rala.h"
#include "attention_variants/rope.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "rala_attention.h5";

TEST(RalaGolden, OutputAndProbesMatchOfficialCode) {
  RalaAttention attn(AttentionOptions(64, 2));
  test::load_state(*attn, kGolden);
  attn->eval();
  auto x = golden(kGolden, "input");  // (2, 64, 7, 9)
  AttentionContext ctx;
  ctx.height = 7;
  ctx.width = 9;
  ctx.rope_sin = golden(kGolden, "rope_sin");
  ctx.rope_cos = golden(kGolden, "rope_cos");
  ProbeCollector probes;
  ctx.probes = &probes;
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, ctx);
  auto ref = golden(kGolden, "output");
  EXPECT_LE(test::max_abs_err(y, ref), 1e-5 * std::max(1.0, ref.abs().max().item<double>()));
  EXPECT_LE(test::max_rel_err(probes.get(Probe::kv_buffer), golden(kGolden, "probes/kv_buffer")), 1e-5);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::alpha), golden(kGolden, "probes/alpha")), 1e-5);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::normalizer_z), golden(kGolden, "probes/normalizer_z")), 1e-5);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), golden(kGolden, "probes/output_pre_lepe")), 1e-5);
}

TEST(RalaGolden, OwnRopeTablesMatchOfficial) {
  auto t = rope_tables(32, 7, 9);
  EXPECT_LE(test::max_abs_err(t.sin, golden(kGolden, "rope_sin")), 1e-6);
  EXPECT_LE(test::max_abs_err(t.cos, golden(kGolden, "rope_cos")), 1e-6);
  // ... and without the golden tables in the context (built from the cache) the output is the same.
  RalaAttention attn(AttentionOptions(64, 2));
  test::load_state(*attn, kGolden);
  torch::NoGradGuard no_grad;
  auto x = golden(kGolden, "input");
  auto y = attn->forward(x, AttentionContext::for_input(x, 32));
  EXPECT_LE(test::max_abs_err(y, golden(kGolden, "output")), 1e-5);
}

/// The naive O(N²) RALA: A_ij = α_j (R φq_i · R φk_j) / (Σ_m α_m φq_i·φk_m + ε), α_j = softmax_j(d^-½ mean(φq)·φk_j)
/// (uniform 1/N when alpha is off), R = RoPE or identity.
test::AttentionFormula rala_formula(const AttentionBase& m, int64_t H, int64_t W) {
  const bool with_alpha = m.settings().flag("alpha"), with_rope = m.settings().flag("rope");
  return [C = m.dim(), h = m.heads(), with_alpha, with_rope, H, W](int64_t b, int64_t n, const torch::Tensor& proj) {
    const int64_t d = C / h, N = H * W;
    auto q = test::naive_elu1(test::head_tokens(proj, b, 0, C, h, n));  // (N, d)
    auto k = test::naive_elu1(test::head_tokens(proj, b, C, C, h, n));
    torch::Tensor alpha;
    if (with_alpha) {
      auto scores = torch::empty({N}, torch::kFloat64);
      auto qbar = q.mean(0);
      for (int64_t j = 0; j < N; ++j) scores[j] = (qbar * k[j]).sum() / std::sqrt(static_cast<double>(d));
      alpha = test::naive_softmax(scores);
    } else {
      alpha = torch::full({N}, 1.0 / static_cast<double>(N), torch::kFloat64);
    }
    auto qr = with_rope ? test::naive_rope(q, H, W) : q;
    auto kr = with_rope ? test::naive_rope(k, H, W) : k;
    auto A = torch::empty({N, N}, torch::kFloat64);
    auto aa = A.accessor<double, 2>();
    auto al = alpha.accessor<double, 1>();
    for (int64_t i = 0; i < N; ++i) {
      double den = 0;
      for (int64_t m = 0; m < N; ++m) den += al[m] * (q[i] * k[m]).sum().item<double>();
      for (int64_t j = 0; j < N; ++j) aa[i][j] = al[j] * (qr[i] * kr[j]).sum().item<double>() / (den + 1e-6);
    }
    return A;
  };
}

class RalaSwitches : public ::testing::TestWithParam<int> {};

TEST_P(RalaSwitches, LinearPathEqualsNaiveQuadraticFormula) {
  const int bits = GetParam();
  const bool with_alpha = bits & 1, with_rope = bits & 4;
  auto o = AttentionOptions(32, 2)
               .set("alpha", with_alpha)
               .set("gate", (bits & 2) != 0)
               .set("rope", with_rope)
               .set("lepe", (bits & 8) != 0);
  RalaAttention attn(o);
  test::randomize(*attn, 7 + bits);
  attn->to(torch::kFloat64);
  const int64_t H = 5, W = 6;
  auto x = test::random_input(2, 32, H, W, 11);
  ProbeCollector probes({Probe::output, Probe::attention, Probe::alpha, Probe::normalizer_z});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = test::naive_attention(*attn, x, rala_formula(*attn, H, W));
  EXPECT_LE(test::max_rel_err(y, ref.final), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.output), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::attention), ref.attention), 1e-10);
  EXPECT_EQ(probes.has(Probe::alpha), with_alpha);
  if (!with_rope) {  // without RoPE the map is a normalised average: Σ_j A_ij = 1 − ε·z_i exactly
    auto rows = probes.get(Probe::attention).sum(-1);
    EXPECT_LE((rows - (1 - 1e-6 * probes.get(Probe::normalizer_z))).abs().max().item<double>(), 1e-12);
    EXPECT_LE((rows - 1).abs().max().item<double>(), 1e-4);
    EXPECT_GE(probes.get(Probe::attention).min().item<double>(), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(AllCombinations, RalaSwitches, ::testing::Range(0, 16), [](const auto& info) {
  const int b = info.param;
  return std::string(b & 1 ? "Alpha" : "NoAlpha") + (b & 2 ? "Gate" : "NoGate") + (b & 4 ? "Rope" : "NoRope") +
         (b & 8 ? "Lepe" : "NoLepe");
});

TEST(RalaAblation, AllOffIsVanillaLinearAttentionWithSameProjections) {
  auto off = AttentionOptions(32, 2).set("alpha", false).set("gate", false).set("rope", false).set("lepe", false);
  RalaAttention r(off);
  test::randomize(*r, 3);
  // The mean-normalised linear attention (ε on φq·mean φk, as the vision code places it).
  LinearAttention l(AttentionOptions(32, 2).set("normalizer", "mean"));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : l->named_parameters()) p.value().copy_(test::param(*r, p.key()));
  }
  ASSERT_EQ(r->parameters().size(), l->parameters().size());
  torch::NoGradGuard no_grad;
  auto x = test::random_input(2, 32, 4, 7, 5, torch::kFloat32);
  auto ctx = AttentionContext::for_input(x, 16);
  EXPECT_TRUE(torch::equal(r->forward(x, ctx), l->forward(x, ctx)));
}

TEST(RalaAblation, GateOffDropsTheOProjection) {
  RalaAttention gated(AttentionOptions(64, 2));
  RalaAttention ungated(AttentionOptions(64, 2).set("gate", false));
  EXPECT_EQ(test::param(*gated, "qkvo.weight").size(0), 256);
  EXPECT_EQ(test::param(*ungated, "qkv.weight").size(0), 192);
  RalaAttention no_lepe(AttentionOptions(64, 2).set("lepe", false));
  EXPECT_EQ(no_lepe->named_parameters().find("lepe.weight"), nullptr);
}

TEST(RalaProbes, UnweightedBufferIsTheSameKeysWithoutAlpha) {
  // kv_buffer_unweighted = Σ_j RoPE(φk_j)ᵀ v_j / N on the layer's own keys, computed here from the definition; and
  // with α off it equals kv_buffer (α uniform = 1/N).
  RalaAttention attn(AttentionOptions(32, 2));
  test::randomize(*attn, 31);
  attn->to(torch::kFloat64);
  const int64_t H = 5, W = 6, N = H * W, C = 32, h = 2, d = 16;
  auto x = test::random_input(2, C, H, W, 12);
  ProbeCollector probes({Probe::kv_buffer, Probe::kv_buffer_unweighted});
  torch::NoGradGuard no_grad;
  attn->forward(x, AttentionContext::for_input(x, d, &probes));
  auto proj = test::naive_conv1x1(x, attn->qkv_projection()->weight.detach(), attn->qkv_projection()->bias.detach());
  auto got = probes.get(Probe::kv_buffer_unweighted);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, h, d, d}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t n = 0; n < h; ++n) {
      auto k = test::naive_rope(test::naive_elu1(test::head_tokens(proj, b, C, C, h, n)), H, W);  // (N, d)
      auto v = test::head_tokens(proj, b, 2 * C, C, h, n);
      auto ref = torch::zeros({d, d}, torch::kFloat64);
      for (int64_t j = 0; j < N; ++j) ref += torch::outer(k[j], v[j]) / static_cast<double>(N);
      EXPECT_LE(test::max_rel_err(got[b][n], ref), 1e-12) << b << " " << n;
    }
  // α changes the buffer: the weighted and unweighted buffers differ.
  EXPECT_GT(test::max_rel_err(probes.get(Probe::kv_buffer), got), 1e-3);
  RalaAttention plain(AttentionOptions(32, 2).set("alpha", false));
  test::randomize(*plain, 31);
  plain->to(torch::kFloat64);
  ProbeCollector p2({Probe::kv_buffer, Probe::kv_buffer_unweighted});
  plain->forward(x, AttentionContext::for_input(x, d, &p2));
  EXPECT_TRUE(torch::equal(p2.get(Probe::kv_buffer), p2.get(Probe::kv_buffer_unweighted)));
}

}  // namespace
}  // namespace rala
