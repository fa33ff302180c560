// Agent attention (A): golden parity with the official PVT AgentAttention (8×8, 9 agents, every probe), the fast path
// vs a naive float64 reference written from the formulas (independent adaptive-pool bins, table resampling, softmax
// stages, depthwise conv by definition) on non-square grids, settings, MACs and the harness dimensions.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "analysis/h5_store.h"
#include "attention_variants/agent.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "agent_attention.h5";



TEST(AgentGolden, OutputAndEveryProbeMatchOfficialCode) {
  auto x_tokens = golden(kGolden, "input");  // (B, N, C) = (2, 64, 64), 8×8 raster
  const int64_t B = x_tokens.size(0), C = x_tokens.size(2), H = 8, W = 8;
  AgentAttention attn(AttentionOptions(C, 2));  // the defaults are the golden's configuration
  test::load_state(*attn, kGolden);
  attn->eval();
  auto x = x_tokens.transpose(1, 2).reshape({B, C, H, W});
  const std::vector<std::string> internals{"agent_tokens", "position_bias", "agent_attn", "agent_v",       "agent_bias",
                                           "q_attn",       "output_heads",  "dwc_v",      "output_pre_proj"};
  ProbeCollector probes({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention}, 4096,
                        {internals.begin(), internals.end()});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, C / 2, &probes)).flatten(2).transpose(1, 2);
  test::expect_golden("output", y, golden(kGolden, "output"));
  for (const auto& name : internals) test::expect_golden(name, probes.get_internal(name), golden(kGolden, "probes/" + name));
  test::expect_golden("kv_buffer", probes.get(Probe::kv_buffer), golden(kGolden, "probes/kv_buffer"));
  test::expect_golden("output (output_heads)", probes.get(Probe::output), golden(kGolden, "probes/output_heads"));
  // output_gated = o + dwc(v) per head: the golden output_pre_proj (B, N, C) split into heads.
  auto pre = golden(kGolden, "probes/output_pre_proj");
  test::expect_golden("output_gated (output_pre_proj)", probes.get(Probe::output_gated),
                pre.reshape({B, H * W, 2, C / 2}).transpose(1, 2));
  // The implied map: q_attn · agent_attn of the golden; A·v reproduces the golden output_heads.
  auto map = torch::matmul(golden(kGolden, "probes/q_attn"), golden(kGolden, "probes/agent_attn"));
  test::expect_golden("attention (q_attn·agent_attn)", probes.get(Probe::attention), map);
  auto v = attn->kv->forward(x_tokens).narrow(2, C, C).reshape({B, H * W, 2, C / 2}).transpose(1, 2);
  test::expect_golden("attention·v", torch::matmul(probes.get(Probe::attention), v), golden(kGolden, "probes/output_heads"));
}

TEST(AgentGolden, SettingsFromTheStateDictShapes) {
  h5::File f(test::data_path(kGolden), h5::Mode::read);
  StateShapes shapes;
  for (const auto& key : f.list("state_dict")) shapes[key] = f.shape("state_dict/" + key);
  EXPECT_EQ(settings_from_state_shapes(Variant::agent, shapes),
            (std::vector<SettingPair>{{"agent_num", "9"}, {"bias_grid", "8"}, {"dwc_kernel", "3"}, {"qkv_bias", "1"}}));
  // Round trip through a module with every setting changed.
  AgentAttention other(AttentionOptions(48, 3)
                           .set("agent_num", 16)
                           .set("bias_grid", 14)
                           .set("dwc_kernel", 5)
                           .set("qkv_bias", false));
  StateShapes own;
  for (const auto& p : other->named_parameters()) own[p.key()] = p.value().sizes().vec();
  EXPECT_EQ(settings_from_state_shapes(Variant::agent, own),
            (std::vector<SettingPair>{{"agent_num", "16"}, {"bias_grid", "14"}, {"dwc_kernel", "5"}, {"qkv_bias", "0"}}));
  EXPECT_EQ(own.at("ah_bias"), (std::vector<int64_t>{1, 3, 16, 14, 1}));
  EXPECT_EQ(own.at("wa_bias"), (std::vector<int64_t>{1, 3, 1, 14, 16}));
  EXPECT_EQ(own.at("an_bias"), (std::vector<int64_t>{3, 16, 7, 7}));
  EXPECT_EQ(own.at("dwc.weight"), (std::vector<int64_t>{48, 1, 5, 5}));
  EXPECT_EQ(own.count("q.bias") + own.count("kv.bias"), 0u);
  EXPECT_EQ(own.count("proj.bias"), 1u);
}

// ------------------------------------------------------------------------------------------------
// Naive float64 reference
// ------------------------------------------------------------------------------------------------

/// The (out × in) matrix of 1-D linear interpolation with align_corners=False, from its definition: output sample i
/// sits at source coordinate (i + ½)·in/out − ½, clamped below at 0; it mixes the two neighbouring inputs (the upper
/// one clamped to the last) with weights 1 − λ and λ.
torch::Tensor interpolation_matrix(int64_t in, int64_t out) {
  auto m = torch::zeros({out, in}, torch::kFloat64);
  auto a = m.accessor<double, 2>();
  for (int64_t i = 0; i < out; ++i) {
    const double src = std::max((i + 0.5) * static_cast<double>(in) / static_cast<double>(out) - 0.5, 0.0);
    const auto i0 = static_cast<int64_t>(std::floor(src));
    const int64_t i1 = std::min(i0 + 1, in - 1);
    const double lambda = src - static_cast<double>(i0);
    a[i][i0] += 1.0 - lambda;
    a[i][i1] += lambda;
  }
  return m;
}

/// Start and end (exclusive) of adaptive-average-pool bin i of `out` bins over `in` cells: [⌊i·in/out⌋, ⌈(i+1)·in/out⌉).
std::pair<int64_t, int64_t> pool_bin(int64_t i, int64_t in, int64_t out) {
  return {(i * in) / out, ((i + 1) * in + out - 1) / out};
}

/// y (B, N, O) = x (B, N, I) Wᵀ + b by definition.
torch::Tensor naive_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t B = x.size(0), N = x.size(1), I = x.size(2), O = w.size(0);
  auto y = torch::zeros({B, N, O}, torch::kFloat64);
  auto bias = b.defined() ? b.contiguous() : torch::zeros({O}, torch::kFloat64);
  auto xa = x.accessor<double, 3>();
  auto wa = w.accessor<double, 2>();
  auto ba = bias.accessor<double, 1>();
  auto ya = y.accessor<double, 3>();
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o) {
        double s = ba[o];
        for (int64_t i = 0; i < I; ++i) s += wa[o][i] * xa[bb][n][i];
        ya[bb][n][o] = s;
      }
  return y;
}

struct AgentNaive {
  torch::Tensor final;          ///< (B, C, H, W)
  torch::Tensor agent_tokens;   ///< (B, h, n_a, d)
  torch::Tensor position_bias;  ///< (1, h, n_a, N)
  torch::Tensor agent_bias;     ///< (1, h, N, n_a)
  torch::Tensor agent_v;        ///< (B, h, n_a, d)
  torch::Tensor output;         ///< (B, h, N, d)
  torch::Tensor output_gated;   ///< (B, h, N, d)
  torch::Tensor attention;      ///< (B, h, N, N)
};

AgentNaive naive_agent(AgentAttentionImpl& m, const torch::Tensor& x /* (B, C, H, W) float64 */) {
  const int64_t B = x.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  const int64_t n_a = m.agent_num(), P = m.pool_size(), G = m.bias_grid();
  const double s = 1.0 / std::sqrt(static_cast<double>(d));
  auto detach = [](const torch::Tensor& t) { return t.defined() ? t.detach().to(torch::kFloat64) : t; };
  auto xt = x.flatten(2).transpose(1, 2).contiguous();  // (B, N, C), token l = row·W + col
  auto q = naive_linear(xt, detach(m.q->weight), detach(m.q->bias));
  auto kvp = naive_linear(xt, detach(m.kv->weight), detach(m.kv->bias));
  auto qa = q.accessor<double, 3>();
  auto kva = kvp.accessor<double, 3>();
  AgentNaive r;

  // Agents: the mean of q over the bins of an independent adaptive-pool bin computation.
  r.agent_tokens = torch::zeros({B, h, n_a, d}, torch::kFloat64);
  auto at = r.agent_tokens.accessor<double, 4>();
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t pi = 0; pi < P; ++pi)
      for (int64_t pj = 0; pj < P; ++pj) {
        const auto rows = pool_bin(pi, H, P), cols = pool_bin(pj, W, P);
        const double count = static_cast<double>((rows.second - rows.first) * (cols.second - cols.first));
        for (int64_t c = 0; c < C; ++c) {
          double sum = 0;
          for (int64_t rr = rows.first; rr < rows.second; ++rr)
            for (int64_t cc = cols.first; cc < cols.second; ++cc) sum += qa[bb][rr * W + cc][c];
          at[bb][c / d][pi * P + pj][c % d] = sum / count;
        }
      }

  // Biases: the 7×7 tables bilinearly (a separable product of 1-D interpolations), the axis tables linearly.
  auto MH7 = interpolation_matrix(7, H), MW7 = interpolation_matrix(7, W);
  auto MHG = interpolation_matrix(G, H), MWG = interpolation_matrix(G, W);
  auto an = detach(m.an_bias), na = detach(m.na_bias);
  auto ah = detach(m.ah_bias), aw = detach(m.aw_bias), ha = detach(m.ha_bias), wa = detach(m.wa_bias);
  r.position_bias = torch::zeros({1, h, n_a, N}, torch::kFloat64);
  r.agent_bias = torch::zeros({1, h, N, n_a}, torch::kFloat64);
  auto pb = r.position_bias.accessor<double, 4>();
  auto ab = r.agent_bias.accessor<double, 4>();
  auto mh7 = MH7.accessor<double, 2>(), mw7 = MW7.accessor<double, 2>();
  auto mhg = MHG.accessor<double, 2>(), mwg = MWG.accessor<double, 2>();
  auto ana = an.accessor<double, 4>(), naa = na.accessor<double, 4>();
  auto aha = ah.accessor<double, 5>(), awa = aw.accessor<double, 5>();
  auto haa = ha.accessor<double, 5>(), waa = wa.accessor<double, 5>();
  for (int64_t n = 0; n < h; ++n)
    for (int64_t a = 0; a < n_a; ++a)
      for (int64_t rr = 0; rr < H; ++rr)
        for (int64_t cc = 0; cc < W; ++cc) {
          double t1 = 0, t2 = 0;
          for (int64_t u = 0; u < 7; ++u)
            for (int64_t w = 0; w < 7; ++w) {
              t1 += mh7[rr][u] * mw7[cc][w] * ana[n][a][u][w];
              t2 += mh7[rr][u] * mw7[cc][w] * naa[n][a][u][w];
            }
          double row1 = 0, col1 = 0, row2 = 0, col2 = 0;
          for (int64_t g = 0; g < G; ++g) {
            row1 += mhg[rr][g] * aha[0][n][a][g][0];
            col1 += mwg[cc][g] * awa[0][n][a][0][g];
            row2 += mhg[rr][g] * haa[0][n][g][0][a];
            col2 += mwg[cc][g] * waa[0][n][0][g][a];
          }
          pb[0][n][a][rr * W + cc] = t1 + row1 + col1;
          ab[0][n][rr * W + cc][a] = t2 + row2 + col2;
        }

  // The two softmax stages, row by row.
  r.agent_v = torch::zeros({B, h, n_a, d}, torch::kFloat64);
  r.output = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.attention = torch::zeros({B, h, N, N}, torch::kFloat64);
  auto av = r.agent_v.accessor<double, 4>();
  auto ov = r.output.accessor<double, 4>();
  auto am = r.attention.accessor<double, 4>();
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t n = 0; n < h; ++n) {
      auto p1 = torch::zeros({n_a, N}, torch::kFloat64);
      for (int64_t a = 0; a < n_a; ++a) {
        auto logits = torch::zeros({N}, torch::kFloat64);
        auto la = logits.accessor<double, 1>();
        for (int64_t j = 0; j < N; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += s * at[bb][n][a][i] * kva[bb][j][n * d + i];
          la[j] = dot + pb[0][n][a][j];
        }
        p1[a] = test::naive_softmax(logits);
      }
      auto p1a = p1.accessor<double, 2>();
      for (int64_t a = 0; a < n_a; ++a)
        for (int64_t i = 0; i < d; ++i) {
          double sum = 0;
          for (int64_t j = 0; j < N; ++j) sum += p1a[a][j] * kva[bb][j][C + n * d + i];
          av[bb][n][a][i] = sum;
        }
      for (int64_t l = 0; l < N; ++l) {
        auto logits = torch::zeros({n_a}, torch::kFloat64);
        auto la = logits.accessor<double, 1>();
        for (int64_t a = 0; a < n_a; ++a) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += s * qa[bb][l][n * d + i] * at[bb][n][a][i];
          la[a] = dot + ab[0][n][l][a];
        }
        auto p2 = test::naive_softmax(logits);
        auto p2a = p2.accessor<double, 1>();
        for (int64_t i = 0; i < d; ++i) {
          double sum = 0;
          for (int64_t a = 0; a < n_a; ++a) sum += p2a[a] * av[bb][n][a][i];
          ov[bb][n][l][i] = sum;
        }
        for (int64_t j = 0; j < N; ++j) {
          double sum = 0;
          for (int64_t a = 0; a < n_a; ++a) sum += p2a[a] * p1a[a][j];
          am[bb][n][l][j] = sum;
        }
      }
    }

  // dwc(v) by definition (zero padding k/2), added per channel; then proj.
  auto wd = detach(m.dwc->weight), bd = detach(m.dwc->bias);
  auto wda = wd.accessor<double, 4>();
  auto bda = bd.accessor<double, 1>();
  const int64_t k = wd.size(2), pad = k / 2;
  auto y = torch::zeros({B, N, C}, torch::kFloat64);
  auto ya = y.accessor<double, 3>();
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t rr = 0; rr < H; ++rr)
        for (int64_t cc = 0; cc < W; ++cc) {
          double sum = bda[c];
          for (int64_t u = 0; u < k; ++u)
            for (int64_t w = 0; w < k; ++w) {
              const int64_t sr = rr + u - pad, sc = cc + w - pad;
              if (sr >= 0 && sr < H && sc >= 0 && sc < W) sum += wda[c][0][u][w] * kva[bb][sr * W + sc][C + c];
            }
          ya[bb][rr * W + cc][c] = sum + ov[bb][c / d][rr * W + cc][c % d];
        }
  r.output_gated = y.reshape({B, N, h, d}).transpose(1, 2);
  auto out = naive_linear(y, detach(m.proj->weight), detach(m.proj->bias));  // (B, N, C)
  r.final = out.transpose(1, 2).reshape({B, C, H, W});
  return r;
}

struct NaiveCase {
  std::vector<SettingPair> settings;
  int64_t height, width;
};

class AgentNaiveTest : public ::testing::TestWithParam<NaiveCase> {};

TEST_P(AgentNaiveTest, FastPathEqualsNaiveFormulas) {
  const auto& c = GetParam();
  AttentionOptions o(32, 2);
  for (const auto& s : c.settings) o.set(s.first, s.second);
  AgentAttention attn(o);
  test::randomize(*attn, 11);
  attn->to(torch::kFloat64);
  auto x = test::random_input(2, 32, c.height, c.width, 5);
  ProbeCollector probes({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention}, 4096,
                        {"agent_tokens", "position_bias", "agent_bias"});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = naive_agent(*attn, x);
  const std::string tag = attn->settings().describe() + " on " + std::to_string(c.height) + "x" + std::to_string(c.width);
  auto check = [&](const char* name, const torch::Tensor& got, const torch::Tensor& want) {
    ASSERT_EQ(got.sizes(), want.sizes()) << name;
    const double e = test::max_rel_err(got, want);
    std::cout << "[agent naive] " << tag << " " << name << ": rel " << e << "\n";
    EXPECT_LE(e, 1e-10) << name << " " << tag;
  };
  check("final", y, ref.final);
  check("agent_tokens", probes.get_internal("agent_tokens"), ref.agent_tokens);
  check("position_bias", probes.get_internal("position_bias"), ref.position_bias);
  check("agent_bias", probes.get_internal("agent_bias"), ref.agent_bias);
  check("kv_buffer", probes.get(Probe::kv_buffer), ref.agent_v);
  check("output", probes.get(Probe::output), ref.output);
  check("output_gated", probes.get(Probe::output_gated), ref.output_gated);
  check("attention", probes.get(Probe::attention), ref.attention);
  // Both stages are softmaxes: the implied map is row-stochastic.
  EXPECT_LE((probes.get(Probe::attention).sum(-1) - 1).abs().max().item<double>(), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(
    Grids, AgentNaiveTest,
    ::testing::Values(
        // 9 agents on 5×7 (bins 5→3: [0,2) [1,4) [3,5); 7→3: [0,3) [2,5) [4,7)), tables for 6×6 shrunk/stretched.
        NaiveCase{{{"bias_grid", "6"}}, 5, 7},
        // Every setting off its default: 16 agents, 5×5 DWC, no q/kv bias, 4×4 tables stretched to 6×5.
        NaiveCase{{{"agent_num", "16"}, {"dwc_kernel", "5"}, {"qkv_bias", "0"}, {"bias_grid", "4"}}, 6, 5},
        // The official grid (no resampling) and a grid smaller than the agents (P = 3 > H = 2).
        NaiveCase{{}, 8, 8}, NaiveCase{{}, 2, 5}, NaiveCase{{{"agent_num", "1"}}, 3, 4}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(AgentGrid, OfficialGridUsesTheTablesUnresampled) {
  AgentAttention attn(AttentionOptions(32, 2).set("bias_grid", 7));
  test::randomize(*attn, 3);
  torch::NoGradGuard no_grad;
  auto b = attn->biases(7, 7);
  // On the tables' own grid nothing is interpolated: bit-equal to the raw sums.
  auto raw1 = attn->an_bias.reshape({1, 2, 9, 49}) + (attn->ah_bias + attn->aw_bias).reshape({1, 2, 9, 49});
  auto raw2 = attn->na_bias.reshape({1, 2, 9, 49}).permute({0, 1, 3, 2}) +
              (attn->ha_bias + attn->wa_bias).reshape({1, 2, 49, 9});
  EXPECT_TRUE(torch::equal(b.first, raw1));
  EXPECT_TRUE(torch::equal(b.second, raw2));
}

TEST(AgentGrid, AgentsOnAGridSmallerThanThePoolRepeatRows) {
  // H = 2, P = 3: PyTorch's bins are rows {0}, {0, 1}, {1}; W = 3: one column each.
  AgentAttention attn(AttentionOptions(16, 1));
  test::randomize(*attn, 5);
  auto x = test::random_input(1, 16, 2, 3, 9, torch::kFloat32);
  ProbeCollector probes({}, 4096, {"agent_tokens"});
  torch::NoGradGuard no_grad;
  attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto q = attn->q->forward(x.flatten(2).transpose(1, 2))[0];  // (6, 16)
  auto agents = probes.get_internal("agent_tokens")[0][0];      // (9, 16)
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_LE((agents[c] - q[c]).abs().max().item<double>(), 1e-6);
    EXPECT_LE((agents[3 + c] - (q[c] + q[3 + c]) / 2).abs().max().item<double>(), 1e-6);
    EXPECT_LE((agents[6 + c] - q[3 + c]).abs().max().item<double>(), 1e-6);
  }
}

TEST(AgentSettings, BadValuesGiveOneLineErrors) {
  auto msg = test::error_message([] { AgentAttention(AttentionOptions(32, 2).set("agent_num", 10)); });
  EXPECT_NE(msg.find("setting 'agent_num' must be a perfect square (P×P pooled agents), got 10"), std::string::npos)
      << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  msg = test::error_message([] { AgentAttention(AttentionOptions(32, 2).set("agent_num", 0)); });
  EXPECT_NE(msg.find("setting 'agent_num' of attention variant agent expects an integer in [1, 4096], got '0'"),
            std::string::npos)
      << msg;
  msg = test::error_message([] { AgentAttention(AttentionOptions(32, 2).set("dwc_kernel", 4)); });
  EXPECT_NE(msg.find("setting 'dwc_kernel' of attention variant agent expects an odd integer in [1, 31], got '4'"),
            std::string::npos)
      << msg;
  msg = test::error_message([] { AgentAttention(AttentionOptions(32, 2).set("bias_grid", "8x8")); });
  EXPECT_NE(msg.find("setting 'bias_grid' of attention variant agent expects an integer in [1, 4096], got '8x8'"),
            std::string::npos)
      << msg;
  msg = test::error_message([] { AgentAttention(AttentionOptions(32, 2).set("qkv_bias", "maybe")); });
  EXPECT_NE(msg.find("setting 'qkv_bias' of attention variant agent expects a boolean"), std::string::npos) << msg;
  EXPECT_EQ(AgentAttention(AttentionOptions(32, 2))->settings().describe(),
            "agent_num=9 bias_grid=8 dwc_kernel=3 qkv_bias=1");
}

TEST(AgentMacs, AnalyticCount) {
  AgentAttention attn(AttentionOptions(64, 2));
  const auto m = attn->macs(8, 8);
  EXPECT_EQ(m.projections, 4 * 64 * 64 * 64 + 9 * 64 * 64);  // q, kv, proj + 3×3 dwc
  EXPECT_EQ(m.matmuls, 4 * 9 * 64 * 64);                    // two products per softmax stage
  AgentAttention big(AttentionOptions(64, 2).set("agent_num", 49).set("dwc_kernel", 5));
  EXPECT_EQ(big->macs(7, 9).matmuls, 4 * 49 * 63 * 64);
  EXPECT_EQ(big->macs(7, 9).projections, 4 * 63 * 64 * 64 + 25 * 64 * 63);
}

TEST(AgentDims, DefaultSettingsRunAtRavltMicroAndDeitDims) {
  struct Dims {
    int64_t C, heads, H, W;
  };
  for (const auto& s : std::vector<Dims>{{16, 1, 16, 24}, {32, 2, 8, 12}, {64, 4, 4, 6}, {128, 4, 2, 3},
                                         {192, 3, 14, 14}, {192, 3, 10, 16}, {32, 2, 1, 1}}) {
    AgentAttention attn(AttentionOptions(s.C, s.heads));
    auto x = test::random_input(2, s.C, s.H, s.W, 1, torch::kFloat32);
    ProbeCollector probes({Probe::kv_buffer, Probe::output});
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, s.C / s.heads, &probes));
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << s.C << " " << s.H << "x" << s.W;
    EXPECT_EQ(probes.get(Probe::kv_buffer).sizes(), (std::vector<int64_t>{2, s.heads, 9, s.C / s.heads}));
    EXPECT_EQ(probes.get(Probe::output).sizes(), (std::vector<int64_t>{2, s.heads, s.H * s.W, s.C / s.heads}));
  }
}

}  // namespace
}  // namespace rala

namespace rala {
namespace {

// The official DeiT port (agent_transformer/models/agent_deit.py AgentAttention; tests/data/make_deit_port_goldens.py):
// the cls token is a key of the agent attention (ac_bias) and a query of the agents (ca_bias), the agents pool the
// grid's q only, the DWC adds to the grid only; one qkv Linear.
TEST(AgentDeitGolden, TheClsTokenEntersAsTheOfficialDeitPort) {
  const char* file = "agent_deit_attention.h5";
  auto tokens = golden(file, "input");  // (2, 1 + 64, 64): cls first, then the 8×8 grid
  AgentAttention attn(AttentionOptions(64, 2).prefix_tokens(1).vit_layout(true));  // agent_num 9, window 8
  test::load_state(*attn, file);  // qkv, proj, dwc, the six tables, ac_bias (1,2,9,1), ca_bias (1,2,1,9): all of them
  attn->eval();
  AttentionContext ctx;
  ctx.height = ctx.width = 8;
  ProbeCollector probes({Probe::attention, Probe::output});
  ctx.probes = &probes;
  torch::NoGradGuard no_grad;
  test::expect_golden("DeiT port output", attn->forward_tokens(tokens, ctx), golden(file, "output"));
  // The implied (1 + N)² map reproduces the per-head output: A·v = output.
  auto v = attn->qkv->forward(tokens).narrow(2, 128, 64).reshape({2, 65, 2, 32}).transpose(1, 2);
  EXPECT_LE(test::max_rel_err(torch::matmul(probes.get(Probe::attention), v), probes.get(Probe::output)), 1e-5);
  EXPECT_EQ(AgentAttentionImpl::settings_from_state_shapes({{"qkv.weight", {192, 64}}, {"qkv.bias", {192}}}),
            (std::vector<SettingPair>{{"qkv_bias", "1"}}));
}

TEST(AgentMacs, ThePrefixTokensAreCounted) {
  AgentAttention attn(AttentionOptions(64, 2).prefix_tokens(1));
  const auto m = attn->macs(8, 8);
  EXPECT_EQ(m.projections, 4 * 65 * 64 * 64 + 9 * 64 * 64);  // projections on 1 + 64 tokens, the DWC on the grid
  EXPECT_EQ(m.matmuls, 4 * 9 * 65 * 64);
}

}  // namespace
}  // namespace rala
