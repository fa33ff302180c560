// TransNormer (T: NormAttention, D: DiagAttention): golden parity with the official fairseq-evo modules (every probe
// of the five golden files), the fast paths vs naive float64 references written from the formulas (O(N²) φQφKᵀV, dense
// per-chunk attention on explicitly zero-padded rows, URPE as explicit Householder and rotation matrices), settings,
// MACs, and both variants inside a RAVLT micro model (DDTT) and at DeiT dims.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "attention_variants/transnormer.h"
#include "attention_variants/transnormer_diag.h"
#include "models/deit.h"
#include "models/presets.h"
#include "models/ravlt.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr int64_t kGoldenH = 7, kGoldenW = 9;


/// (L, B, E) sequence → (B, E, H, W) map (raster order l = row·W + col).
torch::Tensor seq_to_map(const torch::Tensor& seq, int64_t H, int64_t W) {
  return seq.permute({1, 2, 0}).reshape({seq.size(1), seq.size(2), H, W});
}
/// (B, E, H, W) → (L, B, E).
torch::Tensor map_to_seq(const torch::Tensor& map) {
  return map.reshape({map.size(0), map.size(1), -1}).permute({2, 0, 1});
}


void expect_naive(const std::string& what, const torch::Tensor& ours, const torch::Tensor& ref) {
  ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
  const double err = test::max_rel_err(ours, ref);
  std::printf("[naive]  %-55s rel %.3e\n", what.c_str(), err);
  EXPECT_LE(err, 1e-10) << what;
}

// ------------------------------------------------------------------------------------------------
// Golden parity
// ------------------------------------------------------------------------------------------------

struct NormCase {
  const char* file;
  const char* phi;
  bool urpe;
};

class TransnormerNormGolden : public ::testing::TestWithParam<NormCase> {};

TEST_P(TransnormerNormGolden, MatchesOfficialModuleAndEveryProbe) {
  const auto& c = GetParam();
  auto x_seq = golden(c.file, "input");  // (L, B, E) = (63, 2, 64)
  const int64_t L = x_seq.size(0), E = x_seq.size(2);
  ASSERT_EQ(L, kGoldenH * kGoldenW);
  TransnormerAttention attn(AttentionOptions(E, 2).set("phi", c.phi).set("urpe", c.urpe));
  test::load_state(*attn, c.file);
  ProbeCollector probes({Probe::feature_q, Probe::feature_k, Probe::kv_buffer, Probe::output}, 4096,
                        {"output_pre_norm"});
  torch::NoGradGuard no_grad;
  auto x = seq_to_map(x_seq, kGoldenH, kGoldenW);
  auto y = attn->forward(x, AttentionContext::for_input(x, E / 2, &probes));
  const std::string f = c.file;
  test::expect_golden(f + " output", map_to_seq(y), golden(c.file, "output"));
  test::expect_golden(f + " phi_q = feature_q", probes.get(Probe::feature_q), golden(c.file, "probes/phi_q"));
  test::expect_golden(f + " phi_k = feature_k", probes.get(Probe::feature_k), golden(c.file, "probes/phi_k"));
  test::expect_golden(f + " kv_buffer", probes.get(Probe::kv_buffer), golden(c.file, "probes/kv_buffer"));
  test::expect_golden(f + " output_heads = output", probes.get(Probe::output), golden(c.file, "probes/output_heads"));
  test::expect_golden(f + " output_pre_norm (internal)", probes.get_internal("output_pre_norm").permute({1, 0, 2}),
                golden(c.file, "probes/output_pre_norm"));
  // The raster order is all that matters: a 1×63 strip gives the same output as the 7×9 grid.
  auto strip = seq_to_map(x_seq, 1, L);
  EXPECT_TRUE(torch::allclose(map_to_seq(attn->forward(strip, AttentionContext::for_input(strip, E / 2))),
                              map_to_seq(y), 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Files, TransnormerNormGolden,
                         ::testing::Values(NormCase{"transnormer_norm_attention_t1.h5", "elu", false},
                                           NormCase{"transnormer_norm_attention_t2.h5", "1+elu", false},
                                           NormCase{"transnormer_norm_attention_t1_urpe.h5", "elu", true}),
                         [](const auto& info) {
                           return std::string(info.param.urpe ? "T1Urpe" : (info.param.phi[0] == 'e' ? "T1" : "T2"));
                         });

struct DiagCase {
  const char* file;
  bool softmax;
};

class TransnormerDiagGolden : public ::testing::TestWithParam<DiagCase> {};

TEST_P(TransnormerDiagGolden, MatchesOfficialModuleAndEveryProbe) {
  const auto& c = GetParam();
  auto x_seq = golden(c.file, "input");  // (63, 2, 64)
  const int64_t L = x_seq.size(0), E = x_seq.size(2);
  ASSERT_EQ(L, kGoldenH * kGoldenW);
  // The golden uses 16-token chunks (63 → 4 chunks, one zero pad row); T2 = softmax without the norm.
  auto o = AttentionOptions(E, 2).set("chunk", 16);
  if (c.softmax) o.set("kernel", "softmax").set("norm", false);
  TransnormerDiagAttention attn(o);
  test::load_state(*attn, c.file);
  ProbeCollector probes({Probe::chunk_weights}, 4096, {"output_pre_norm", "output_pre_proj"});
  torch::NoGradGuard no_grad;
  auto x = seq_to_map(x_seq, kGoldenH, kGoldenW);
  auto y = attn->forward(x, AttentionContext::for_input(x, E / 2, &probes));
  const std::string f = c.file;
  test::expect_golden(f + " output", map_to_seq(y), golden(c.file, "output"));
  const auto& weights = probes.get(Probe::chunk_weights);
  test::expect_golden(f + " chunk_weights", weights, golden(c.file, "probes/chunk_weights"));
  if (!c.softmax)
    test::expect_golden(f + " output_pre_norm (internal)", probes.get_internal("output_pre_norm").permute({1, 0, 2}),
                  golden(c.file, "probes/output_pre_norm"));
  test::expect_golden(f + " output_pre_proj (internal)", probes.get_internal("output_pre_proj").permute({1, 0, 2}),
                golden(c.file, "probes/output_pre_proj"));
  // The pad key (column 15 of the last chunk) takes softmax mass in T2, none with ReLU.
  auto pad_mass = weights.select(2, 3).narrow(2, 0, 15).select(3, 15);  // (B, h, 15) real queries → pad key
  if (c.softmax) {
    EXPECT_GT(pad_mass.min().item<double>(), 0.0);
    EXPECT_NEAR(pad_mass.mean().item<double>(), 0.0116, 1e-3);
  } else {
    EXPECT_EQ(pad_mass.abs().max().item<double>(), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Files, TransnormerDiagGolden,
                         ::testing::Values(DiagCase{"transnormer_diag_attention_t1.h5", false},
                                           DiagCase{"transnormer_diag_attention_t2.h5", true}),
                         [](const auto& info) { return std::string(info.param.softmax ? "T2" : "T1"); });

// ------------------------------------------------------------------------------------------------
// Naive float64 references
// ------------------------------------------------------------------------------------------------

/// Linear by its definition on tokens: X (N, C) → X Wᵀ + b, element by element sums via einsum.
torch::Tensor naive_linear(const torch::Tensor& X, const torch::nn::Linear& lin) {
  auto w = lin->weight.detach().to(torch::kFloat64), b = lin->bias.detach().to(torch::kFloat64);
  return torch::einsum("nc,oc->no", {X, w}) + b;
}

/// elu by its definition: x for x > 0, exp(x) − 1 otherwise.
torch::Tensor naive_elu(const torch::Tensor& x) {
  auto y = x.clone();
  auto a = y.accessor<double, 2>();
  for (int64_t i = 0; i < y.size(0); ++i)
    for (int64_t j = 0; j < y.size(1); ++j)
      if (a[i][j] <= 0) a[i][j] = std::exp(a[i][j]) - 1.0;
  return y;
}

/// URPE by its definition: row i of X (n, d) ← R(pos_i) (I − 2 v vᵀ) X_i, with R block-diagonal: for pair k
/// (channels 2k, 2k+1) the rotation [[cos a, −sin a], [sin a, cos a]], a = θ_k·pos_i; an odd last channel unrotated.
torch::Tensor naive_urpe(const torch::Tensor& X, const TransnormerUrpeImpl& urpe, const std::vector<int64_t>& pos) {
  const int64_t n = X.size(0), d = X.size(1);
  auto v = urpe.v.detach().to(torch::kFloat64);
  auto theta = urpe.theta.detach().to(torch::kFloat64).reshape({-1});
  auto householder = torch::eye(d, torch::kFloat64) - 2.0 * torch::outer(v, v);
  auto out = torch::empty_like(X);
  for (int64_t i = 0; i < n; ++i) {
    auto R = torch::eye(d, torch::kFloat64);
    auto r = R.accessor<double, 2>();
    for (int64_t k = 0; k < d / 2; ++k) {
      const double a = theta[k].item<double>() * static_cast<double>(pos[i]);
      r[2 * k][2 * k] = std::cos(a);
      r[2 * k][2 * k + 1] = -std::sin(a);
      r[2 * k + 1][2 * k] = std::sin(a);
      r[2 * k + 1][2 * k + 1] = std::cos(a);
    }
    out[i] = torch::mv(torch::mm(R, householder), X[i]);
  }
  return out;
}

/// y_i / (sqrt(mean_c y_ic²) + 1e-8) for every row.
torch::Tensor naive_rms_norm(const torch::Tensor& Y) {
  auto out = torch::empty_like(Y);
  for (int64_t i = 0; i < Y.size(0); ++i) {
    double ss = 0;
    for (int64_t c = 0; c < Y.size(1); ++c) ss += Y[i][c].item<double>() * Y[i][c].item<double>();
    out[i] = Y[i] / (std::sqrt(ss / static_cast<double>(Y.size(1))) + 1e-8);
  }
  return out;
}

/// Token matrix (N, C) of image b, float64.
torch::Tensor image_tokens(const torch::Tensor& x, int64_t b) {
  return x[b].to(torch::kFloat64).reshape({x.size(1), -1}).transpose(0, 1).contiguous();
}

struct NaiveResult {
  torch::Tensor final, output, output_gated, attention, kv, feature_q, feature_k, chunk_weights;
};

/// NormAttention in the O(N²) form: A = φ(Q)φ(K)ᵀ, Y = A V, heads concatenated, RMS norm over C, out_proj.
NaiveResult naive_norm(TransnormerAttentionImpl& m, const torch::Tensor& x) {
  const int64_t B = x.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  const bool one_plus = m.phi() == TransnormerPhi::one_plus_elu;
  std::vector<int64_t> raster(N);
  for (int64_t l = 0; l < N; ++l) raster[l] = l;
  NaiveResult r;
  r.final = torch::empty({B, C, H, W}, torch::kFloat64);
  r.output = torch::empty({B, h, N, d}, torch::kFloat64);
  r.output_gated = torch::empty({B, h, N, d}, torch::kFloat64);
  r.attention = torch::empty({B, h, N, N}, torch::kFloat64);
  r.kv = torch::zeros({B, h, d, d}, torch::kFloat64);
  r.feature_q = torch::empty({B, h, N, d}, torch::kFloat64);
  r.feature_k = torch::empty({B, h, N, d}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b) {
    auto X = image_tokens(x, b);
    auto Pq = naive_linear(X, m.q_proj), Pk = naive_linear(X, m.k_proj), Pv = naive_linear(X, m.v_proj);
    auto Y = torch::empty({N, C}, torch::kFloat64);
    for (int64_t n = 0; n < h; ++n) {
      auto Q = naive_elu(Pq.narrow(1, n * d, d).contiguous()), K = naive_elu(Pk.narrow(1, n * d, d).contiguous());
      if (one_plus) Q = Q + 1.0, K = K + 1.0;
      auto V = Pv.narrow(1, n * d, d);
      if (m.urpe_enabled()) Q = naive_urpe(Q, *m.urpe, raster), K = naive_urpe(K, *m.urpe, raster);
      auto A = torch::mm(Q, K.t());
      auto kv = torch::zeros({d, d}, torch::kFloat64);
      for (int64_t j = 0; j < N; ++j) kv += torch::outer(K[j], V[j]);
      r.kv[b][n] = kv;
      r.feature_q[b][n] = Q;
      r.feature_k[b][n] = K;
      r.attention[b][n] = A;
      r.output[b][n] = torch::mm(A, V);
      Y.narrow(1, n * d, d).copy_(r.output[b][n]);
    }
    if (m.norm_enabled()) Y = naive_rms_norm(Y);
    for (int64_t n = 0; n < h; ++n) r.output_gated[b][n] = Y.narrow(1, n * d, d);
    r.final[b] = naive_linear(Y, m.out_proj).t().reshape({C, H, W});
  }
  return r;
}

/// DiagAttention in dense per-chunk form on explicitly zero-padded rows: q ← q/√d; rows N..N'−1 of Q, K, V are zero;
/// chunk g holds rows [g·c, (g+1)·c); S = Q_g K_gᵀ; P = ReLU(S) or the row softmax of S (over all c keys, pad keys
/// included); Y_g = P V_g; the implied N×N map is P on the real rows and columns of each diagonal block.
NaiveResult naive_diag(TransnormerDiagAttentionImpl& m, const torch::Tensor& x) {
  const int64_t B = x.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  const int64_t c = m.chunk(), G = (N + c - 1) / c, Np = G * c;
  std::vector<int64_t> in_chunk(Np);
  for (int64_t l = 0; l < Np; ++l) in_chunk[l] = l % c;
  NaiveResult r;
  r.final = torch::empty({B, C, H, W}, torch::kFloat64);
  r.output = torch::empty({B, h, N, d}, torch::kFloat64);
  r.output_gated = torch::empty({B, h, N, d}, torch::kFloat64);
  r.attention = torch::zeros({B, h, N, N}, torch::kFloat64);
  r.chunk_weights = torch::empty({B, h, G, c, c}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b) {
    auto X = image_tokens(x, b);
    auto Pq = naive_linear(X, m.q_proj), Pk = naive_linear(X, m.k_proj), Pv = naive_linear(X, m.v_proj);
    auto Y = torch::empty({N, C}, torch::kFloat64);
    for (int64_t n = 0; n < h; ++n) {
      auto Q = torch::zeros({Np, d}, torch::kFloat64), K = torch::zeros({Np, d}, torch::kFloat64),
           V = torch::zeros({Np, d}, torch::kFloat64);
      Q.narrow(0, 0, N).copy_(Pq.narrow(1, n * d, d) / std::sqrt(static_cast<double>(d)));
      K.narrow(0, 0, N).copy_(Pk.narrow(1, n * d, d));
      V.narrow(0, 0, N).copy_(Pv.narrow(1, n * d, d));
      if (m.urpe_enabled()) Q = naive_urpe(Q, *m.urpe, in_chunk), K = naive_urpe(K, *m.urpe, in_chunk);
      auto Yp = torch::empty({Np, d}, torch::kFloat64);
      for (int64_t g = 0; g < G; ++g) {
        auto P = torch::empty({c, c}, torch::kFloat64);
        for (int64_t i = 0; i < c; ++i) {
          auto s = torch::empty({c}, torch::kFloat64);
          for (int64_t j = 0; j < c; ++j) s[j] = torch::dot(Q[g * c + i], K[g * c + j]);
          P[i] = m.softmax_kernel() ? test::naive_softmax(s) : s.clamp_min(0.0);
        }
        r.chunk_weights[b][n][g] = P;
        for (int64_t i = 0; i < c; ++i) {
          auto yi = torch::zeros({d}, torch::kFloat64);
          for (int64_t j = 0; j < c; ++j) yi += P[i][j] * V[g * c + j];
          Yp[g * c + i] = yi;
          for (int64_t j = 0; j < c; ++j)
            if (g * c + i < N && g * c + j < N) r.attention[b][n][g * c + i][g * c + j] = P[i][j];
        }
      }
      r.output[b][n] = Yp.narrow(0, 0, N);
      Y.narrow(1, n * d, d).copy_(r.output[b][n]);
    }
    if (m.norm_enabled()) Y = naive_rms_norm(Y);
    for (int64_t n = 0; n < h; ++n) r.output_gated[b][n] = Y.narrow(1, n * d, d);
    r.final[b] = naive_linear(Y, m.out_proj).t().reshape({C, H, W});
  }
  return r;
}

struct NormNaiveCase {
  std::vector<SettingPair> settings;
  int64_t dim, heads;
  const char* name;
};

class TransnormerNormNaive : public ::testing::TestWithParam<NormNaiveCase> {};

TEST_P(TransnormerNormNaive, FastPathEqualsQuadraticFormula) {
  const auto& c = GetParam();
  auto o = AttentionOptions(c.dim, c.heads);
  for (const auto& s : c.settings) o.set(s.first, s.second);
  TransnormerAttention attn(o);
  test::randomize(*attn, 11, 0.3);
  attn->to(torch::kFloat64);
  const int64_t H = 3, W = 5;  // non-square, N = 15
  auto x = test::random_input(2, c.dim, H, W, 12);
  ProbeCollector probes({Probe::output, Probe::output_gated, Probe::attention, Probe::kv_buffer, Probe::feature_q,
                         Probe::feature_k});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, c.dim / c.heads, &probes));
  auto ref = naive_norm(*attn, x);
  const std::string n = c.name;
  expect_naive(n + " final", y, ref.final);
  expect_naive(n + " output", probes.get(Probe::output), ref.output);
  expect_naive(n + " output_gated", probes.get(Probe::output_gated), ref.output_gated);
  expect_naive(n + " attention", probes.get(Probe::attention), ref.attention);
  expect_naive(n + " kv_buffer", probes.get(Probe::kv_buffer), ref.kv);
  expect_naive(n + " feature_q", probes.get(Probe::feature_q), ref.feature_q);
  expect_naive(n + " feature_k", probes.get(Probe::feature_k), ref.feature_k);
}

INSTANTIATE_TEST_SUITE_P(
    Settings, TransnormerNormNaive,
    ::testing::Values(NormNaiveCase{{}, 32, 2, "T1"}, NormNaiveCase{{{"phi", "1+elu"}}, 32, 2, "T2"},
                      NormNaiveCase{{{"urpe", "1"}}, 32, 2, "T1Urpe"},
                      NormNaiveCase{{{"phi", "1+elu"}, {"urpe", "1"}, {"norm", "0"}}, 32, 2, "T2UrpeNoNorm"},
                      NormNaiveCase{{{"urpe", "1"}}, 30, 2, "UrpeOddHeadDim"}),
    [](const auto& info) { return std::string(info.param.name); });

struct DiagNaiveCase {
  std::vector<SettingPair> settings;
  const char* name;
};

class TransnormerDiagNaive : public ::testing::TestWithParam<DiagNaiveCase> {};

TEST_P(TransnormerDiagNaive, FastPathEqualsDensePaddedChunks) {
  const auto& c = GetParam();
  auto o = AttentionOptions(32, 2);
  for (const auto& s : c.settings) o.set(s.first, s.second);
  TransnormerDiagAttention attn(o);
  test::randomize(*attn, 21, 0.3);
  attn->to(torch::kFloat64);
  const int64_t H = 3, W = 5;  // non-square, N = 15: not a multiple of the chunk
  auto x = test::random_input(2, 32, H, W, 22);
  ProbeCollector probes({Probe::output, Probe::output_gated, Probe::attention, Probe::chunk_weights});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = naive_diag(*attn, x);
  const std::string n = c.name;
  expect_naive(n + " final", y, ref.final);
  expect_naive(n + " output", probes.get(Probe::output), ref.output);
  expect_naive(n + " output_gated", probes.get(Probe::output_gated), ref.output_gated);
  expect_naive(n + " attention", probes.get(Probe::attention), ref.attention);
  expect_naive(n + " chunk_weights", probes.get(Probe::chunk_weights), ref.chunk_weights);
  // output = A·v over the real tokens, even where pad keys took softmax mass (their values are zero).
  auto v = torch::linear(map_to_tokens(x), attn->v_proj->weight, attn->v_proj->bias);  // (B, N, C)
  expect_naive(n + " A·v = output", torch::matmul(probes.get(Probe::attention), token_heads(v, 2)),
               probes.get(Probe::output));
}

INSTANTIATE_TEST_SUITE_P(
    Settings, TransnormerDiagNaive,
    ::testing::Values(DiagNaiveCase{{{"chunk", "4"}}, "T1Chunk4"},
                      DiagNaiveCase{{{"chunk", "4"}, {"kernel", "softmax"}, {"norm", "0"}}, "T2Chunk4"},
                      DiagNaiveCase{{{"chunk", "4"}, {"urpe", "1"}}, "T1Chunk4Urpe"},
                      DiagNaiveCase{{{"chunk", "6"}, {"kernel", "softmax"}, {"urpe", "1"}}, "SoftmaxNormUrpeChunk6"},
                      DiagNaiveCase{{}, "DefaultChunk64LongerThanN"}),
    [](const auto& info) { return std::string(info.param.name); });

// ------------------------------------------------------------------------------------------------
// Settings, parameters, MACs
// ------------------------------------------------------------------------------------------------

TEST(TransnormerSettings, DefaultsAreT1AndBadValuesGiveOneLineErrors) {
  EXPECT_EQ(TransnormerAttention(AttentionOptions(32, 2))->settings().describe(), "phi=elu urpe=0 norm=1");
  EXPECT_EQ(TransnormerDiagAttention(AttentionOptions(32, 2))->settings().describe(),
            "chunk=64 kernel=relu norm=1 urpe=0");
  auto check = [](const std::function<void()>& fn, const std::vector<std::string>& parts) {
    auto msg = test::error_message(fn);
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message: " << msg;
  };
  check([] { TransnormerDiagAttention(AttentionOptions(32, 2).set("chunk", 0)); },
        {"setting 'chunk'", "transnormer_diag", "[1, ", "got '0'"});
  check([] { TransnormerAttention(AttentionOptions(32, 2).set("phi", "relu")); },
        {"setting 'phi'", "transnormer", "elu, 1+elu", "got 'relu'"});
  check([] { TransnormerDiagAttention(AttentionOptions(32, 2).set("kernel", "gelu")); },
        {"setting 'kernel'", "transnormer_diag", "relu, softmax", "got 'gelu'"});
  check([] { TransnormerDiagAttention(AttentionOptions(32, 2).set("phi", "elu")); },
        {"unknown setting 'phi'", "transnormer_diag"});
}

TEST(TransnormerSettings, OfficialKeysAndUrpeState) {
  TransnormerAttention plain(AttentionOptions(64, 2));
  std::vector<std::string> keys;
  for (const auto& p : plain->named_parameters()) keys.push_back(p.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                                            "v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"}));
  TransnormerDiagAttention diag(AttentionOptions(64, 2).set("urpe", true));
  auto params = diag->named_parameters();
  ASSERT_NE(params.find("urpe.theta"), nullptr);
  EXPECT_EQ(params.find("urpe.v"), nullptr) << "v is fixed: a buffer, not a parameter";
  auto buffers = diag->named_buffers();
  ASSERT_NE(buffers.find("urpe.v"), nullptr);
  EXPECT_NEAR(buffers.find("urpe.v")->norm().item<double>(), 1.0, 1e-6);
  EXPECT_EQ(params.find("urpe.theta")->sizes(), (std::vector<int64_t>{1, 1, 16}));
  // θ_k = 10000^(−2k/d)
  EXPECT_NEAR((*params.find("urpe.theta"))[0][0][1].item<double>(), std::pow(10000.0, -2.0 / 32), 1e-7);
  // An official state dict with URPE entries implies urpe=1.
  StateShapes shapes{{"urpe.theta", {1, 1, 16}}, {"urpe.v", {32}}, {"q_proj.weight", {64, 64}}};
  EXPECT_EQ(TransnormerAttentionImpl::settings_from_state_shapes(shapes), (std::vector<SettingPair>{{"urpe", "1"}}));
  EXPECT_EQ(TransnormerDiagAttentionImpl::settings_from_state_shapes(shapes), (std::vector<SettingPair>{{"urpe", "1"}}));
  EXPECT_TRUE(TransnormerAttentionImpl::settings_from_state_shapes({{"q_proj.weight", {64, 64}}}).empty());
}

TEST(TransnormerSettings, UrpeThetaGetsGradients) {
  for (bool diag : {false, true}) {
    auto o = AttentionOptions(32, 2).set("urpe", true).set("chunk", 8);
    std::shared_ptr<AttentionBase> attn;
    if (diag)
      attn = TransnormerDiagAttention(o).ptr();
    else
      attn = TransnormerAttention(AttentionOptions(32, 2).set("urpe", true)).ptr();
    test::randomize(*attn, 3, 0.2);
    auto x = test::random_input(2, 32, 3, 5, 4, torch::kFloat32);
    auto y = attn->forward(x, AttentionContext::for_input(x, 16));
    (y * y).sum().backward();
    for (const auto& p : attn->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key() << (diag ? " (diag)" : " (norm)");
    }
  }
}

TEST(TransnormerMacs, AnalyticCounts) {
  // 7×9, C = 64, h = 2 (d = 32)
  auto norm = TransnormerAttention(AttentionOptions(64, 2))->macs(7, 9);
  EXPECT_EQ(norm.projections, 4 * 64 * 64 * 63);
  EXPECT_EQ(norm.matmuls, 2 * 63 * 32 * 64);
  // chunk 16: 63 tokens → 64 padded; q kᵀ and P v: 2·64·16·64
  auto diag = TransnormerDiagAttention(AttentionOptions(64, 2).set("chunk", 16))->macs(7, 9);
  EXPECT_EQ(diag.projections, 4 * 64 * 64 * 63);
  EXPECT_EQ(diag.matmuls, 2 * 64 * 16 * 64);
  // default chunk 64 on a 56×56 grid: 3136 = 49 chunks, no padding
  EXPECT_EQ(TransnormerDiagAttention(AttentionOptions(64, 2))->macs(56, 56).matmuls, 2 * 3136 * 64 * 64);
}

// ------------------------------------------------------------------------------------------------
// In models
// ------------------------------------------------------------------------------------------------

TEST(TransnormerModels, RavltMicroRunsWithDiagEarlyAndNormLate) {
  for (const std::vector<std::string>& settings :
       {std::vector<std::string>{}, std::vector<std::string>{"urpe=1", "phi=1+elu", "kernel=softmax",
                                                             "transnormer_diag.norm=0"}}) {
    Ravlt model(ravlt_micro().attn_pattern("DDTT").attn_settings(settings));
    model->eval();
    torch::NoGradGuard no_grad;
    for (auto hw : {std::pair<int64_t, int64_t>{64, 64}, {64, 96}}) {
      auto y = model->forward(torch::randn({2, 3, hw.first, hw.second}));
      EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 10}));
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
    }
  }
}

TEST(TransnormerModels, DeitDimsOnSquareAndNonSquareGrids) {
  for (auto v : {Variant::transnormer, Variant::transnormer_diag}) {
    auto attn = make_attention(v, AttentionOptions(192, 3));
    torch::NoGradGuard no_grad;
    for (auto hw : {std::pair<int64_t, int64_t>{14, 14}, {10, 16}}) {
      auto x = torch::randn({2, 192, hw.first, hw.second});
      ProbeCollector probes({Probe::output, Probe::output_gated, Probe::attention});
      auto y = attn->forward(x, AttentionContext::for_input(x, 64, &probes));
      EXPECT_EQ(y.sizes(), x.sizes());
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
      const int64_t N = hw.first * hw.second;
      EXPECT_EQ(probes.get(Probe::attention).sizes(), (std::vector<int64_t>{2, 3, N, N}));
    }
    Deit model(deit_tiny().depth(1).num_classes(5).attn_pattern(variant_info(v).name));
    model->eval();
    EXPECT_EQ(model->forward(torch::randn({1, 3, 224, 224})).sizes(), (std::vector<int64_t>{1, 5}));
    EXPECT_EQ(model->forward(torch::randn({1, 3, 160, 256})).sizes(), (std::vector<int64_t>{1, 5}));
  }
}

}  // namespace
}  // namespace rala

namespace rala {
namespace {

// Prefix tokens (DeiT's cls) in DiagAttention: a global token. Each grid query reads its chunk (the zero pad keys of
// the last chunk included, as the official code) plus the cls key in one normalisation; the cls query reads all
// 1 + N real tokens. Written out token by token, T1 (ReLU, SimpleRMSNorm) and T2 (softmax, no norm).
TEST(TransnormerDiagPrefix, TheClsTokenIsAGlobalToken) {
  for (bool t2 : {false, true}) {
    SCOPED_TRACE(t2 ? "T2" : "T1");
    std::vector<SettingPair> s = {{"chunk", "5"}};
    if (t2) s.insert(s.end(), {{"kernel", "softmax"}, {"norm", "0"}});
    TransnormerDiagAttention attn(AttentionOptions(32, 2).settings(s).prefix_tokens(1));
    test::randomize(*attn, 41);
    attn->to(torch::kFloat64);
    const int64_t H = 3, W = 4, N = H * W, T = 1 + N, C = 32, d = 16, c = 5;
    auto tokens = test::random_input(2, T, C, 1, 9).squeeze(-1);
    AttentionContext ctx;
    ctx.height = H;
    ctx.width = W;
    ProbeCollector probes({Probe::attention});
    ctx.probes = &probes;
    torch::NoGradGuard no_grad;
    auto y = attn->forward_tokens(tokens, ctx);
    auto q = attn->q_proj->forward(tokens) / std::sqrt(double(d)), k = attn->k_proj->forward(tokens);
    auto v = attn->v_proj->forward(tokens);  // (2, T, C)
    auto ref = torch::zeros_like(tokens);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t n = 0; n < 2; ++n) {
        auto qh = q[b].narrow(1, n * d, d), kh = k[b].narrow(1, n * d, d), vh = v[b].narrow(1, n * d, d);
        for (int64_t i = 0; i < T; ++i) {
          std::vector<int64_t> keys;  // real keys read by token i; `pads` zero keys more in its chunk
          int64_t pads = 0;
          if (i == 0) {
            for (int64_t j = 0; j < T; ++j) keys.push_back(j);
          } else {
            const int64_t g = (i - 1) / c;
            for (int64_t l = g * c; l < (g + 1) * c; ++l) l < N ? keys.push_back(1 + l) : void(++pads);
            keys.push_back(0);
          }
          auto logits = torch::zeros({static_cast<int64_t>(keys.size()) + pads}, torch::kFloat64);
          for (size_t m = 0; m < keys.size(); ++m) logits[m] = (qh[i] * kh[keys[m]]).sum();
          auto w = t2 ? test::naive_softmax(logits) : torch::relu(logits);
          for (size_t m = 0; m < keys.size(); ++m) ref[b][i].narrow(0, n * d, d) += w[m] * vh[keys[m]];
        }
      }
    if (!t2) ref = simple_rms_norm(ref);
    ref = attn->out_proj->forward(ref);
    EXPECT_LE(test::max_rel_err(y, ref), 1e-10);
    EXPECT_EQ(probes.get(Probe::attention).sizes(), (std::vector<int64_t>{2, 2, T, T}));
  }
}

}  // namespace
}  // namespace rala
