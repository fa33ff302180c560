// Gated linear attention, vision form (G): golden parity with ViG-H's GLA2D (every probe of gla2d_vig.h5), the chunked
// O(N) scans vs the token-by-token recurrence (flash-linear-attention's naive_recurrent_gla, written here in float64)
// for several chunk sizes and every setting, very negative decays, the implied attention map, settings errors, and
// the RAVLT-micro / DeiT dims.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "attention_variants/gla.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;
using torch::Tensor;

constexpr const char* kGolden = "gla2d_vig.h5";



double golden_tolerance(const Tensor& ref) { return 1e-5 * std::max(1.0, ref.abs().max().item<double>()); }

/// Records a measured deviation in the test's XML output (--gtest_output=xml) and returns it.
double recorded(const std::string& name, double deviation) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", deviation);
  ::testing::Test::RecordProperty(name, text);
  return deviation;
}

// ------------------------------------------------------------------------------------------------
// Golden parity
// ------------------------------------------------------------------------------------------------

TEST(GlaGolden, EveryProbeMatchesViGHGla2d) {
  GlaAttention attn(AttentionOptions(64, 2));
  ASSERT_EQ(attn->head_k_dim(), 16);
  ASSERT_EQ(attn->head_v_dim(), 32);
  test::load_state(*attn, kGolden);
  attn->eval();
  auto x = golden(kGolden, "input");  // (2, 64, 7, 9)
  const std::set<std::string> internals = {"q", "k", "v", "output_fwd", "output_bwd", "output_pre_norm",
                                           "local_pre_norm", "gate_logit"};
  ProbeCollector probes({Probe::kv_buffer, Probe::kv_buffer_bwd, Probe::log_decay_fwd, Probe::log_decay_bwd,
                         Probe::output, Probe::output_gated, Probe::attention},
                        4096, internals);
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 32, &probes));
  auto ref = golden(kGolden, "output");
  EXPECT_LE(recorded("output", test::max_abs_err(y, ref)), golden_tolerance(ref)) << "output";
  const std::vector<std::pair<Probe, std::string>> vocabulary = {
      {Probe::kv_buffer, "kv_state_fwd_final"}, {Probe::kv_buffer_bwd, "kv_state_bwd_final"},
      {Probe::log_decay_fwd, "log_decay_fwd"},  {Probe::log_decay_bwd, "log_decay_bwd"},
      {Probe::output, "output_heads"}};
  for (const auto& [p, name] : vocabulary) {
    auto r = golden(kGolden, "probes/" + name);
    EXPECT_LE(recorded(name, test::max_abs_err(probes.get(p), r)), golden_tolerance(r)) << name;
  }
  for (const auto& name : internals) {
    auto r = golden(kGolden, "probes/" + name);
    EXPECT_LE(recorded(name, test::max_abs_err(probes.get_internal(name), r)), golden_tolerance(r)) << name;
  }
  // The implied map reproduces the golden per-head output: A·v = o.
  auto v = golden(kGolden, "probes/v");
  auto o = golden(kGolden, "probes/output_heads");
  EXPECT_LE(recorded("attention_times_v", test::max_abs_err(probes.get(Probe::attention).matmul(v), o)),
            golden_tolerance(o));
  // output_gated is what enters o_proj: o_proj(output_gated) is the output.
  auto gated = probes.get(Probe::output_gated);  // (B, h, N, dv)
  auto y_from_gated = attn->o_proj->forward(merge_token_heads(gated)).transpose(1, 2).reshape(ref.sizes());
  EXPECT_LE(recorded("o_proj_of_output_gated", test::max_abs_err(y_from_gated, ref)), golden_tolerance(ref));
}

TEST(GlaGolden, OfficialShapesImplyTheDefaultSettings) {
  StateShapes shapes;
  for (const char* key : {"qkv_proj.weight", "gk_proj.0.weight", "o_proj.weight"})
    shapes[key] = golden(kGolden, std::string("state_dict/") + key).sizes().vec();
  auto pairs = GlaAttentionImpl::settings_from_state_shapes(shapes);
  auto attn = make_attention(Variant::gla, AttentionOptions(64, 2).settings(pairs));
  EXPECT_EQ(attn->settings().describe(), make_attention(Variant::gla, AttentionOptions(64, 2))->settings().describe());
  // A wider key projection (expand_k 0.75, rank 8) is read back from the shapes.
  shapes["qkv_proj.weight"] = {2 * 48 + 64, 64};
  shapes["gk_proj.0.weight"] = {8, 64};
  auto wide = make_attention(Variant::gla, AttentionOptions(64, 2).settings(GlaAttentionImpl::settings_from_state_shapes(shapes)));
  EXPECT_EQ(dynamic_cast<GlaAttentionImpl&>(*wide).key_dim(), 48);
  EXPECT_EQ(wide->settings().integer("gate_low_rank_dim"), 8);
}

// ------------------------------------------------------------------------------------------------
// Naive float64 reference: convs and projections by definition, naive_recurrent_gla token by token, the implied map
// from explicit products of decays.
// ------------------------------------------------------------------------------------------------

struct NaiveGla {
  Tensor y;               ///< (B, C, H, W)
  Tensor o, o_fwd, o_bwd; ///< (B, h, N, dv)
  Tensor state_fwd;       ///< S_{N−1} (B, h, dk, dv)
  Tensor state_bwd;       ///< R_0
  Tensor log_fwd;         ///< (B, h, N, dk)
  Tensor v;               ///< (B, h, N, dv)
  Tensor gated;           ///< (B, h, N, dv), what enters o_proj
  Tensor attention;       ///< (B, h, N, N) when asked
};

/// out[b, c, r, s] = Σ_{i,j} w[c, 0, i, j] x[b, c, r+i−1, s+j−1] (zero outside).
Tensor naive_depthwise3x3(const Tensor& x, const Tensor& w) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto out = torch::zeros_like(x);
  auto xa = x.accessor<double, 4>();
  auto wa = w.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < H; ++r)
        for (int64_t s = 0; s < W; ++s) {
          double acc = 0;
          for (int64_t i = 0; i < 3; ++i)
            for (int64_t j = 0; j < 3; ++j) {
              const int64_t rr = r + i - 1, ss = s + j - 1;
              if (rr >= 0 && rr < H && ss >= 0 && ss < W) acc += wa[c][0][i][j] * xa[b][c][rr][ss];
            }
          oa[b][c][r][s] = acc;
        }
  return out;
}

/// y[b, n, o] = Σ_c w[o, c] x[b, n, c] (+ bias[o]).
Tensor naive_linear(const Tensor& x, const Tensor& w, const Tensor& bias = {}) {
  auto y = torch::einsum("oc,bnc->bno", {w, x});
  return bias.defined() ? y + bias : y;
}

Tensor naive_silu(const Tensor& t) { return t / (1 + torch::exp(-t)); }

NaiveGla naive_gla(GlaAttentionImpl& m, const Tensor& x, bool with_attention) {
  torch::NoGradGuard no_grad;
  auto P = [&](const char* name) { return test::param(m, name).to(torch::kFloat64); };
  auto x64 = x.to(torch::kFloat64);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), N = H * W;
  const int64_t h = m.heads(), K = m.key_dim(), V = m.value_dim(), dk = K / h, dv = V / h;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dk));

  auto xs = naive_depthwise3x3(x64, P("in_proj.0.weight"));
  if (m.use_act_in_conv()) xs = naive_silu(xs);
  auto xt = xs.reshape({B, C, N}).transpose(1, 2);  // (B, N, C)
  auto qkv = naive_linear(xt, P("qkv_proj.weight"));
  auto gk = naive_linear(naive_linear(xt, P("gk_proj.0.weight")), P("gk_proj.1.weight"), P("gk_proj.1.bias"));
  auto logsigmoid = torch::minimum(gk, torch::zeros_like(gk)) - torch::log1p(torch::exp(-gk.abs()));
  auto log_decay = logsigmoid / static_cast<double>(m.gate_normalizer());  // (B, N, 2K)

  NaiveGla r;
  r.o_fwd = torch::zeros({B, h, N, dv}, torch::kFloat64);
  r.o_bwd = torch::zeros({B, h, N, dv}, torch::kFloat64);
  r.state_fwd = torch::zeros({B, h, dk, dv}, torch::kFloat64);
  r.state_bwd = torch::zeros({B, h, dk, dv}, torch::kFloat64);
  r.log_fwd = torch::zeros({B, h, N, dk}, torch::kFloat64);
  r.v = torch::zeros({B, h, N, dv}, torch::kFloat64);
  if (with_attention) r.attention = torch::zeros({B, h, N, N}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < h; ++n) {
      auto q = qkv[b].narrow(1, n * dk, dk) * scale;  // (N, dk)
      auto k = qkv[b].narrow(1, K + n * dk, dk);
      auto v = qkv[b].narrow(1, 2 * K + n * dv, dv);
      auto alpha = log_decay[b].narrow(1, n * dk, dk).exp();  // (N, dk)
      auto beta = log_decay[b].narrow(1, K + n * dk, dk).exp();
      r.log_fwd[b][n].copy_(log_decay[b].narrow(1, n * dk, dk));
      r.v[b][n].copy_(v);
      // naive_recurrent_gla, forward and reverse: h ← h·g_i + k_iᵀ v_i, o_i = q_i h
      auto S = torch::zeros({dk, dv}, torch::kFloat64);
      for (int64_t l = 0; l < N; ++l) {
        S = S * alpha[l].unsqueeze(1) + k[l].unsqueeze(1) * v[l].unsqueeze(0);
        r.o_fwd[b][n][l].copy_((q[l].unsqueeze(1) * S).sum(0));
      }
      r.state_fwd[b][n].copy_(S);
      auto R = torch::zeros({dk, dv}, torch::kFloat64);
      for (int64_t l = N - 1; l >= 0; --l) {
        R = R * beta[l].unsqueeze(1) + k[l].unsqueeze(1) * v[l].unsqueeze(0);
        r.o_bwd[b][n][l].copy_((q[l].unsqueeze(1) * R).sum(0));
      }
      r.state_bwd[b][n].copy_(R);
      if (with_attention) {
        // A_ij = ½ Σ_c q_ic k_jc (Π_{j<m≤i} α_mc for j ≤ i  +  Π_{i≤m<j} β_mc for j ≥ i)
        auto qa = q.accessor<double, 2>(), ka = k.accessor<double, 2>();
        auto aa = alpha.accessor<double, 2>(), ba = beta.accessor<double, 2>();
        auto A = r.attention[b][n];
        auto Aa = A.accessor<double, 2>();
        std::vector<double> prod(dk);
        for (int64_t j = 0; j < N; ++j) {
          std::fill(prod.begin(), prod.end(), 1.0);
          for (int64_t i = j; i < N; ++i) {
            double s = 0;
            for (int64_t c = 0; c < dk; ++c) {
              if (i > j) prod[c] *= aa[i][c];
              s += qa[i][c] * ka[j][c] * prod[c];
            }
            Aa[i][j] += 0.5 * s;
          }
          std::fill(prod.begin(), prod.end(), 1.0);
          for (int64_t i = j; i >= 0; --i) {
            double s = 0;
            for (int64_t c = 0; c < dk; ++c) {
              if (i < j) prod[c] *= ba[i][c];
              s += qa[i][c] * ka[j][c] * prod[c];
            }
            Aa[i][j] += 0.5 * s;
          }
        }
      }
    }
  r.o = (r.o_fwd + r.o_bwd) / 2;
  auto rms = [&](const Tensor& t, const Tensor& w) { return t / torch::sqrt((t * t).mean(-1, true) + m.norm_eps()) * w; };
  auto gate = 1 / (1 + torch::exp(-naive_linear(xt, P("g_proj.weight"), P("g_proj.bias"))));  // (B, N, V)
  auto g4 = gate.reshape({B, N, h, dv});
  auto mixed = rms(r.o.transpose(1, 2), P("g_norm.weight")) * g4 + rms(xt.reshape({B, N, h, dv}), P("l_norm.weight")) * (1 - g4);
  if (m.use_out_act()) mixed = naive_silu(mixed);
  r.gated = mixed.transpose(1, 2);                                  // (B, h, N, dv)
  auto y = naive_linear(mixed.reshape({B, N, V}), P("o_proj.weight"));  // (B, N, C)
  r.y = y.transpose(1, 2).reshape({B, C, H, W});
  return r;
}

struct ReferenceCase {
  std::string label;
  std::vector<SettingPair> settings;
};

void PrintTo(const ReferenceCase& c, std::ostream* os) { *os << c.label; }

class GlaReference : public ::testing::TestWithParam<ReferenceCase> {};

TEST_P(GlaReference, ChunkedScansEqualTheTokenByTokenRecurrence) {
  auto options = AttentionOptions(32, 2).settings(GetParam().settings);
  GlaAttention attn(options);
  test::randomize(*attn, 11);
  attn->to(torch::kFloat64);
  const int64_t H = 5, W = 7, N = H * W;  // N = 35: non-square, prime-ish chunk boundaries
  auto x = test::random_input(2, 32, H, W, 12);
  ProbeCollector probes({Probe::kv_buffer, Probe::kv_buffer_bwd, Probe::log_decay_fwd, Probe::output,
                         Probe::output_gated, Probe::attention},
                        4096, {"output_fwd", "output_bwd"});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = naive_gla(*attn, x, /*with_attention=*/true);
  EXPECT_LE(recorded("y", test::max_rel_err(y, ref.y)), 1e-10);
  EXPECT_LE(recorded("output", test::max_rel_err(probes.get(Probe::output), ref.o)), 1e-10);
  EXPECT_LE(recorded("output_fwd", test::max_rel_err(probes.get_internal("output_fwd"), ref.o_fwd)), 1e-10);
  EXPECT_LE(recorded("output_bwd", test::max_rel_err(probes.get_internal("output_bwd"), ref.o_bwd)), 1e-10);
  EXPECT_LE(recorded("kv_buffer", test::max_rel_err(probes.get(Probe::kv_buffer), ref.state_fwd)), 1e-10);
  EXPECT_LE(recorded("kv_buffer_bwd", test::max_rel_err(probes.get(Probe::kv_buffer_bwd), ref.state_bwd)), 1e-10);
  EXPECT_LE(recorded("log_decay_fwd", test::max_rel_err(probes.get(Probe::log_decay_fwd), ref.log_fwd)), 1e-10);
  EXPECT_LE(recorded("output_gated", test::max_rel_err(probes.get(Probe::output_gated), ref.gated)), 1e-10);
  const auto& A = probes.get(Probe::attention);
  ASSERT_EQ(A.sizes(), (std::vector<int64_t>{2, 2, N, N}));
  EXPECT_LE(recorded("A", test::max_rel_err(A, ref.attention)), 1e-10);
  // The implied map times v is the output.
  EXPECT_LE(recorded("A_times_v", test::max_rel_err(A.matmul(ref.v), probes.get(Probe::output))), 1e-10);
}

INSTANTIATE_TEST_SUITE_P(
    Chunks, GlaReference,
    ::testing::Values(ReferenceCase{"Default16DoesNotDivide35", {}},
                      ReferenceCase{"Chunk1", {{"scan_chunk", "1"}}},
                      ReferenceCase{"Chunk64LargerThanN", {{"scan_chunk", "64"}}},
                      ReferenceCase{"Chunk7Divides35", {{"scan_chunk", "7"}}},
                      ReferenceCase{"Chunk35EqualsN", {{"scan_chunk", "35"}}},
                      ReferenceCase{"EveryOtherSetting",
                                    {{"scan_chunk", "6"},
                                     {"use_act_in_conv", "1"},
                                     {"use_out_act", "1"},
                                     {"expand_k", "0.25"},
                                     {"gate_low_rank_dim", "5"},
                                     {"gate_logit_normalizer", "3"},
                                     {"rms_norm_eps", "0.001"}}}),
    [](const auto& info) { return info.param.label; });

// ------------------------------------------------------------------------------------------------
// Very negative decays, analytic cases
// ------------------------------------------------------------------------------------------------

/// A layer whose decay logits are ≈ −80 (log α ≈ −5 per token and key channel). With 64-token chunks the cumulative
/// log decay within a chunk reaches ≈ −320: e^{−b} alone would overflow float32 (e^{88.7}).
GlaAttention very_negative_gates(torch::Dtype dtype) {
  GlaAttention attn(AttentionOptions(32, 2).set("scan_chunk", 64));
  test::randomize(*attn, 21);
  {
    torch::NoGradGuard no_grad;
    attn->gk_proj[1]->as<torch::nn::Linear>()->weight.mul_(0.01);
    attn->gk_proj[1]->as<torch::nn::Linear>()->bias.fill_(-80.0);
  }
  attn->to(dtype);
  return attn;
}

TEST(GlaStress, VeryNegativeGateLogitsStayFiniteAndMatchTheRecurrence) {
  const int64_t H = 9, W = 10;  // N = 90: a full chunk of 64 and a padded one
  auto attn = very_negative_gates(torch::kFloat64);
  auto x = test::random_input(2, 32, H, W, 22);
  ProbeCollector probes({Probe::log_decay_fwd, Probe::log_decay_bwd, Probe::output, Probe::kv_buffer});
  NaiveGla ref;
  {
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
    EXPECT_NEAR(probes.get(Probe::log_decay_fwd).mean().item<double>(), -5.0, 0.05);
    EXPECT_LE(probes.get(Probe::log_decay_bwd).max().item<double>(), -4.5);
    ASSERT_TRUE(torch::isfinite(y).all().item<bool>());
    ref = naive_gla(*attn, x, /*with_attention=*/false);
    EXPECT_LE(recorded("y", test::max_rel_err(y, ref.y)), 1e-10);
    EXPECT_LE(recorded("output", test::max_rel_err(probes.get(Probe::output), ref.o)), 1e-10);
    EXPECT_LE(recorded("kv_buffer", test::max_rel_err(probes.get(Probe::kv_buffer), ref.state_fwd)), 1e-10);
  }
  // float32 forward and backward: finite, and the forward agrees with the float64 recurrence.
  attn->to(torch::kFloat32);
  auto x32 = x.to(torch::kFloat32).requires_grad_(true);
  auto y32 = attn->forward(x32, AttentionContext::for_input(x32, 16));
  ASSERT_TRUE(torch::isfinite(y32).all().item<bool>());
  EXPECT_LE(recorded("y_float32", test::max_rel_err(y32.detach(), ref.y)), 1e-5);
  (y32 * y32).sum().backward();
  EXPECT_TRUE(torch::isfinite(x32.grad()).all().item<bool>());
  for (const auto& p : attn->named_parameters())
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
}

TEST(GlaScan, DecayToZeroLeavesOnlyTheCurrentToken) {
  // log α = −1000 per token: S_l = k_lᵀ v_l exactly in floating point, so o_l = (q_l·k_l) v_l; the chunk's
  // cumulative log decay reaches −64000 without an inf or nan anywhere (forward and backward).
  auto q = torch::randn({2, 3, 100, 8}, torch::kFloat32).requires_grad_(true);
  auto k = torch::randn({2, 3, 100, 8}, torch::kFloat32);
  auto v = torch::randn({2, 3, 100, 5}, torch::kFloat32);
  auto g = torch::full({2, 3, 100, 8}, -1000.0f).requires_grad_(true);
  auto r = gla_chunked_scan(q, k, v, g, 64);
  auto expected = (q * k).sum(-1, true) * v;
  EXPECT_LE(test::max_abs_err(r.output, expected), 1e-5);
  EXPECT_LE(test::max_abs_err(r.state, k.select(2, 99).unsqueeze(-1) * v.select(2, 99).unsqueeze(-2)), 1e-6);
  r.output.sum().backward();
  EXPECT_TRUE(torch::isfinite(q.grad()).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(g.grad()).all().item<bool>());
}

TEST(GlaScan, NoDecayIsCausalLinearAttention) {
  // log α = 0: o_l = q_l Σ_{j≤l} k_jᵀ v_j (causal linear attention without normaliser), for any chunk size.
  auto q = torch::randn({1, 2, 37, 4}, torch::kFloat64), k = torch::randn({1, 2, 37, 4}, torch::kFloat64);
  auto v = torch::randn({1, 2, 37, 3}, torch::kFloat64);
  auto causal = torch::ones({37, 37}, torch::kFloat64).tril();
  auto expected = (q.matmul(k.transpose(-1, -2)) * causal).matmul(v);
  for (int64_t chunk : {1, 5, 37, 100}) {
    auto r = gla_chunked_scan(q, k, v, torch::zeros_like(q), chunk);
    EXPECT_LE(test::max_rel_err(r.output, expected), 1e-12) << chunk;
    EXPECT_LE(test::max_rel_err(r.state, k.transpose(-1, -2).matmul(v)), 1e-12) << chunk;
  }
}

// ------------------------------------------------------------------------------------------------
// Settings, dims, MACs
// ------------------------------------------------------------------------------------------------

TEST(GlaSettings, BadSettingsGiveOneLineErrors) {
  EXPECT_ERROR_MENTIONS(GlaAttention(AttentionOptions(32, 2).set("expand_v", 0.5)),
                        "gla: expand_v=0.5 gives V = 16 value channels; GLA2D's local branch needs V = C = 32");
  EXPECT_ERROR_MENTIONS(GlaAttention(AttentionOptions(32, 2).set("expand_k", 0.03125)),
                        "gla: expand_k=0.03125 gives K = 1 key channels, which must be a positive multiple of heads (2)");
  EXPECT_ERROR_MENTIONS(GlaAttention(AttentionOptions(48, 4).set("expand_k", 0.125)),
                        "gives K = 6 key channels, which must be a positive multiple of heads (4)");
  EXPECT_ERROR_MENTIONS(GlaAttention(AttentionOptions(32, 2).set("scan_chunk", 0)),
                        "setting 'scan_chunk' of attention variant gla expects an integer in [1, ");
  EXPECT_ERROR_MENTIONS(GlaAttention(AttentionOptions(32, 2).set("gate_logit_normalizer", 0)),
                        "setting 'gate_logit_normalizer' of attention variant gla expects an integer");
  EXPECT_ERROR_MENTIONS(GlaAttention(AttentionOptions(32, 2).set("rms_norm_eps", 0.0)),
                        "setting 'rms_norm_eps' of attention variant gla expects a finite number in [1e-12, 1]");
  EXPECT_ERROR_MENTIONS(GlaAttention(AttentionOptions(32, 2).set("use_out_act", "maybe")),
                        "setting 'use_out_act' of attention variant gla expects a boolean");
  EXPECT_ERROR_MENTIONS(gla_chunked_scan(torch::zeros({1, 1, 4, 2}), torch::zeros({1, 1, 4, 2}),
                                         torch::zeros({1, 1, 4, 3}), torch::zeros({1, 1, 4, 2}), 0),
                        "gla: scan_chunk must be >= 1, got 0");
}

TEST(GlaSettings, OfficialKeysAndShapes) {
  GlaAttention attn(AttentionOptions(64, 2));
  std::map<std::string, std::vector<int64_t>> expected = {
      {"in_proj.0.weight", {64, 1, 3, 3}}, {"qkv_proj.weight", {128, 64}}, {"gk_proj.0.weight", {16, 64}},
      {"gk_proj.1.weight", {64, 16}},      {"gk_proj.1.bias", {64}},        {"g_proj.weight", {64, 64}},
      {"g_proj.bias", {64}},               {"g_norm.weight", {32}},         {"l_norm.weight", {32}},
      {"o_proj.weight", {64, 64}}};
  auto params = attn->named_parameters();
  EXPECT_EQ(params.size(), expected.size());
  for (const auto& [key, shape] : expected) {
    ASSERT_NE(params.find(key), nullptr) << key;
    EXPECT_EQ(params[key].sizes().vec(), shape) << key;
  }
  EXPECT_EQ(attn->named_buffers().size(), 0u);
  // Effective ViG-H init: zero gate biases (α = exp(−ln 2/16) at init), unit norm weights.
  EXPECT_EQ(params["gk_proj.1.bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(params["g_norm.weight"].min().item<double>(), 1.0);
}

/// Runs the layer in float32 and checks it against the float64 recurrence.
void check_dims(int64_t C, int64_t heads, int64_t H, int64_t W, int64_t expected_dk) {
  GlaAttention attn(AttentionOptions(C, heads));
  ASSERT_EQ(attn->head_k_dim(), expected_dk) << C << "/" << heads;
  test::randomize(*attn, 31, 0.2);
  auto x = test::random_input(1, C, H, W, 32, torch::kFloat32);
  ProbeCollector probes({Probe::kv_buffer, Probe::output});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, C / heads, &probes));
  ASSERT_EQ(y.sizes(), x.sizes());
  ASSERT_TRUE(torch::isfinite(y).all().item<bool>());
  EXPECT_EQ(probes.get(Probe::kv_buffer).sizes(), (std::vector<int64_t>{1, heads, expected_dk, C / heads}));
  attn->to(torch::kFloat64);
  auto y64 = attn->forward(x.to(torch::kFloat64), AttentionContext::for_input(x, C / heads));
  auto ref = naive_gla(*attn, x, /*with_attention=*/false);
  EXPECT_LE(recorded("y64_" + std::to_string(C) + "_" + std::to_string(H) + "x" + std::to_string(W),
                     test::max_rel_err(y64, ref.y)), 1e-10) << C << "/" << heads << " " << H << "x" << W;
  EXPECT_LE(recorded("y32_" + std::to_string(C) + "_" + std::to_string(H) + "x" + std::to_string(W),
                     test::max_rel_err(y, ref.y)),
            1e-4)
      << "float32 " << C << "/" << heads << " " << H << "x" << W;
}

TEST(GlaDims, RavltMicroStages) {
  // RAVLT micro: embed dims 16, 32, 64, 128 with heads 1, 2, 4, 4 → d_k 8, 8, 8, 16.
  check_dims(16, 1, 16, 24, 8);
  check_dims(32, 2, 8, 12, 8);
  check_dims(64, 4, 4, 6, 8);
  check_dims(128, 4, 2, 3, 16);
}

TEST(GlaDims, DeitTinyPatchGrids) {
  check_dims(192, 3, 14, 14, 32);
  check_dims(192, 3, 10, 16, 32);
}

TEST(GlaDims, Bfloat16ScansInFloat32) {
  GlaAttention attn(AttentionOptions(32, 2));
  test::randomize(*attn, 41, 0.2);
  auto x = test::random_input(2, 32, 6, 7, 42, torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto y32 = attn->forward(x, AttentionContext::for_input(x, 16));
  attn->to(torch::kBFloat16);
  auto xb = x.to(torch::kBFloat16);
  auto yb = attn->forward(xb, AttentionContext::for_input(xb, 16));
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  EXPECT_LE(recorded("bf16_vs_f32", test::max_rel_err(yb, y32)), 5e-2);
}

TEST(GlaMacs, ProjectionsAndScans) {
  GlaAttention attn(AttentionOptions(64, 2));
  auto m = attn->macs(7, 9);
  // per token: DWConv 9·64, qkv 64·128, gk 64·16 + 16·64, g 64·64, o 64·64
  EXPECT_EQ(m.projections, 63 * (576 + 8192 + 1024 + 1024 + 4096 + 4096));
  // T = 16, N = 63 padded to 64: 2 directions · 2 heads · 64 · (16·(16 + 32) + 2·16·32)
  EXPECT_EQ(m.matmuls, 2 * 2 * 64 * (16 * 48 + 1024));
  // 56×56 = 3136 = 196 chunks of 16; a chunk larger than N shrinks to N.
  EXPECT_EQ(attn->macs(56, 56).matmuls, 2 * 2 * 3136 * (16 * 48 + 1024));
  GlaAttention one_chunk(AttentionOptions(64, 2).set("scan_chunk", 64));
  EXPECT_EQ(one_chunk->macs(7, 9).matmuls, 2 * 2 * 63 * (63 * 48 + 1024));
}

// ------------------------------------------------------------------------------------------------
// Speed (not a pass/fail test): ./rala_tests_attention_variants --gtest_also_run_disabled_tests
//   --gtest_filter='GlaSpeed.*'
// ------------------------------------------------------------------------------------------------

/// naive_recurrent_gla's loop on tensors (both directions), for timing.
Tensor recurrent_scans(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g) {
  const int64_t N = q.size(2);
  auto S = torch::zeros({q.size(0), q.size(1), q.size(3), v.size(3)}, q.options());
  auto R = S.clone();
  auto o = torch::empty_like(v), ob = torch::empty_like(v);
  auto decay = g.exp();
  for (int64_t l = 0; l < N; ++l) {
    S = S * decay.select(2, l).unsqueeze(-1) + k.select(2, l).unsqueeze(-1) * v.select(2, l).unsqueeze(-2);
    o.select(2, l).copy_(q.select(2, l).unsqueeze(-2).matmul(S).squeeze(-2));
    const int64_t m = N - 1 - l;
    R = R * decay.select(2, m).unsqueeze(-1) + k.select(2, m).unsqueeze(-1) * v.select(2, m).unsqueeze(-2);
    ob.select(2, m).copy_(q.select(2, m).unsqueeze(-2).matmul(R).squeeze(-2));
  }
  return (o + ob) / 2;
}

TEST(GlaSpeed, DISABLED_ChunkedVsRecurrentAtN3136) {
  torch::NoGradGuard no_grad;
  const int64_t B = 1, h = 2, N = 3136, dk = 16, dv = 32;
  auto q = torch::randn({B, h, N, dk}), k = torch::randn({B, h, N, dk}), v = torch::randn({B, h, N, dv});
  auto g = torch::log_sigmoid(torch::randn({B, h, N, dk})) / 16;
  auto time = [](const std::function<void()>& fn) {
    fn();
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  auto both = [&](int64_t chunk) {
    auto q2 = torch::cat({q, q.flip(2)}), k2 = torch::cat({k, k.flip(2)}), v2 = torch::cat({v, v.flip(2)});
    auto r = gla_chunked_scan(q2, k2, v2, torch::cat({g, g.flip(2)}), chunk).output;
    return (r.narrow(0, 0, B) + r.narrow(0, B, B).flip(2)) / 2;
  };
  const double rec = time([&] { recurrent_scans(q, k, v, g); });
  std::printf("N=%lld h=%lld dk=%lld dv=%lld threads=%d  recurrent (token loop): %.2f ms\n", (long long)N,
              (long long)h, (long long)dk, (long long)dv, at::get_num_threads(), rec * 1e3);
  for (int64_t chunk : {8, 16, 32, 64}) {
    const double t = time([&] { both(chunk); });
    std::printf("  chunked T=%lld: %.2f ms (%.1fx faster); max |chunked - recurrent| = %.2e\n", (long long)chunk,
                t * 1e3, rec / t, (both(chunk) - recurrent_scans(q, k, v, g)).abs().max().item<double>());
  }
  // Whole layers at RAVLT-T stage 1 (C = 64, one head: d_k 32, d_v 64), 56×56, batch 1, vs RALA in the same run.
  auto x = torch::randn({1, 64, 56, 56});
  auto rala = make_attention(Variant::rala, AttentionOptions(64, 1));
  auto ctx = AttentionContext::for_input(x, 64);
  const double t_rala = time([&] { rala->forward(x, ctx); });
  std::printf("layer C=64 h=1 56x56: rala %.2f ms\n", t_rala * 1e3);
  for (int64_t chunk : {8, 16, 32}) {
    GlaAttention gla(AttentionOptions(64, 1).set("scan_chunk", chunk));
    const double t = time([&] { gla->forward(x, ctx); });
    std::printf("  gla T=%lld: %.2f ms (%.2fx rala)\n", (long long)chunk, t * 1e3, t / t_rala);
  }
}

}  // namespace
}  // namespace rala
