// Vicinity Attention (V): golden parity with VVT's VicinityVisionAttention (sum form fr 2; product form with sr 2;
// the clamp-active input ×10) for the output and every probe, the effect of abs_clamp, the O(N) path vs a naive
// float64 O(N²) formula (both forms, sr 1 and 2, a padded grid, the z clamp active), settings and errors, gradients,
// and the model dims the harnesses use.
#include "attention_variants/vicinity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "analysis/h5_store.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;


struct GoldenCase {
  const char* file;
  int64_t H, W;
  const char* form;  // the file's attr use_sum (an h5py bool enum, which h5::File does not read): True → sum
};
const GoldenCase kCases[] = {{"vicinity_attention.h5", 7, 9, "sum"},
                             {"vicinity_attention_sr2_prod.h5", 8, 6, "product"},
                             {"vicinity_attention_clamp.h5", 7, 9, "sum"}};

/// The layer configured from the golden's attributes (dim, heads, fr, sr, se) and its form.
AttentionOptions golden_options(const GoldenCase& c) {
  h5::File f(test::data_path(c.file), h5::Mode::read);
  EXPECT_EQ(f.attr_int("/", "H"), c.H);
  EXPECT_EQ(f.attr_int("/", "W"), c.W);
  return AttentionOptions(f.attr_int("/", "dim"), f.attr_int("/", "num_heads"))
      .set("feature_reduction", f.attr_int("/", "fr_ratio"))
      .set("spatial_reduction", f.attr_int("/", "sr_ratio"))
      .set("se_reduction", f.attr_int("/", "se_reduction"))
      .set("form", c.form);
}

/// (B, N, C) tokens → (B, C, H, W) and back.
torch::Tensor to_map(const torch::Tensor& t, int64_t H, int64_t W) {
  return t.transpose(1, 2).reshape({t.size(0), t.size(2), H, W});
}
torch::Tensor to_tokens(const torch::Tensor& m) { return m.flatten(2).transpose(1, 2); }

double tolerance(const torch::Tensor& ref) { return 1e-5 * std::max(1.0, ref.abs().max().item<double>()); }

/// The layer's output and probes on a golden's input, named as in the golden and in its layout, computed in `dtype`.
std::map<std::string, torch::Tensor> run_golden(const GoldenCase& c, torch::Dtype dtype) {
  VicinityAttention attn(golden_options(c));
  test::load_state(*attn, c.file);
  attn->eval();
  attn->to(dtype);
  auto x = to_map(golden(c.file, "input"), c.H, c.W).to(dtype);
  ProbeCollector probes(
      {Probe::feature_q, Probe::feature_k, Probe::kv_buffer, Probe::normalizer_z, Probe::output, Probe::output_gated},
      4096, {"se_weight", "output_pre_proj"});
  torch::NoGradGuard no_grad;
  auto y = to_tokens(attn->forward(x, AttentionContext::for_input(x, 32, &probes)));
  return {{"output", y},
          {"phi_q", probes.get(Probe::feature_q)},
          {"phi_k", probes.get(Probe::feature_k)},
          {"kv_buffer", probes.get(Probe::kv_buffer)},
          {"normalizer_z", probes.get(Probe::normalizer_z)},
          {"output_heads", probes.get(Probe::output)},
          {"output_gated", probes.get(Probe::output_gated)},
          // The golden holds the official (L, B, E) layout; the layer hands over (B, N, C/fr).
          {"output_pre_proj", probes.get_internal("output_pre_proj").transpose(0, 1)},
          {"se_weight", probes.get_internal("se_weight")}};
}

// Tolerance: 1e-5·max(1, max|ref|), plus the golden's own fp32 rounding: its distance from the exact formula (the
// layer in float64, which equals the naive float64 formula to 1e-15 below). That term matters only for the per-head
// outputs of the clamp file: there z sits at its 1e-4 floor and the numerators φ̃(q)·kv reach 8.7e5 with cancellation
// in fp32, so the stored output_heads itself is 1.07e-5 from the exact values (max|ref| = 1, the clamp's 1e4·1e-4).
// The golden must itself lie within 2·1e-5·max(1, max|ref|) of the exact formula.
TEST(VicinityGolden, OutputAndEveryProbeMatchTheOfficialModule) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.file);
    auto ours = run_golden(c, torch::kFloat32);
    auto exact = run_golden(c, torch::kFloat64);
    for (const auto& [what, got] : ours) {
      const std::string dataset =
          what == "output" ? "output" : "probes/" + (what == "output_gated" ? "output_heads" : what);
      auto ref = golden(c.file, dataset);
      const double err = test::max_abs_err(got, ref), golden_rounding = test::max_abs_err(exact.at(what), ref);
      EXPECT_LE(golden_rounding, 2 * tolerance(ref)) << what;
      EXPECT_LE(err, tolerance(ref) + golden_rounding) << what;
      std::printf("[ measured ] %-32s %-16s max|d| %.3g (golden vs exact formula %.3g, max|ref| %.3g)\n", c.file,
                  what.c_str(), err, golden_rounding, ref.abs().max().item<double>());
    }
  }
}

TEST(VicinityGolden, TurningAbsClampOffChangesTheOutputByTheRecordedEffect) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.file);
    h5::File f(test::data_path(c.file), h5::Mode::read);
    const double effect = f.attr_double("/", "max_abs_effect_of_abs_clamp");
    VicinityAttention on(golden_options(c)), off(golden_options(c).set("abs_clamp", false));
    test::load_state(*on, c.file);
    test::load_state(*off, c.file);
    auto x = to_map(golden(c.file, "input"), c.H, c.W);
    torch::NoGradGuard no_grad;
    auto y_on = on->forward(x, AttentionContext::for_input(x, 32));
    auto y_off = off->forward(x, AttentionContext::for_input(x, 32));
    const double measured = test::max_abs_err(y_off, y_on);
    std::printf("[ measured ] %-32s effect of abs_clamp %.6g (recorded %.6g)\n", c.file, measured, effect);
    EXPECT_NEAR(measured, effect, 2 * tolerance(golden(c.file, "output")));
  }
  // The clamp file is the one where it matters: z sits at the 1e-4 floor.
  EXPECT_GT(h5::File(test::data_path("vicinity_attention_clamp.h5"), h5::Mode::read)
                .attr_double("/", "max_abs_effect_of_abs_clamp"),
            1.0);
}

TEST(VicinityGolden, SettingsFollowFromTheOfficialStateShapes) {
  for (const auto& c : kCases) {
    StateShapes shapes;
    h5::File f(test::data_path(c.file), h5::Mode::read);
    for (const auto& key : f.list("state_dict")) shapes[key] = f.shape("state_dict/" + key);
    auto layer = make_attention(
        Variant::vicinity, AttentionOptions(64, 2).settings(settings_from_state_shapes(Variant::vicinity, shapes)));
    auto expected = make_attention(Variant::vicinity, golden_options(c).set("form", "sum"));
    EXPECT_EQ(layer->settings().describe(), expected->settings().describe()) << c.file;
  }
}

// ------------------------------------------------------------------------------------------------
// Naive float64 reference, O(N·N'), written from the formula
// ------------------------------------------------------------------------------------------------

double abs_clamp(double t) {  // the official abs_clamp on one value
  if (t == 0.0) return 0.0;
  const double m = std::min(std::max(std::abs(t), 1e-4), 1e4);
  return t > 0 ? m : -m;
}

/// y = W x + b over the last dim, row by row: x (n, I), W (O, I), b (O) or undefined.
torch::Tensor naive_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t n = x.size(0), I = x.size(1), O = w.size(0);
  auto out = torch::zeros({n, O}, torch::kFloat64);
  auto xa = x.accessor<double, 2>();
  auto wa = w.accessor<double, 2>();
  auto oa = out.accessor<double, 2>();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < O; ++o) {
      double acc = b.defined() ? b[o].item<double>() : 0.0;
      for (int64_t i = 0; i < I; ++i) acc += wa[o][i] * xa[r][i];
      oa[r][o] = acc;
    }
  return out;
}

struct NaiveVicinity {
  torch::Tensor output;        ///< (B, C, H, W)
  torch::Tensor feature_q;     ///< (B, h, N, 4d')
  torch::Tensor feature_k;     ///< (B, h, N', 4d')
  torch::Tensor kv_unclamped;  ///< (B, h, 4d', d')
  torch::Tensor kv_buffer;     ///< (B, h, 4d', d') clamped as the official code
  int64_t kv_clamped = 0;      ///< entries of kv the clamp changed
  torch::Tensor z;             ///< (B, h, N)
  torch::Tensor o;             ///< (B, h, N, d')
  torch::Tensor attention;     ///< (B, h, N, N')
};

/// From the definitions: SE from the input mean; keys from a stride-sr conv (zero padding past the grid) + LayerNorm;
/// weights w_ij = cos(a_i − a'_j) + cos(b_i − b'_j) (sum) or their product, with a_i = (π/2)·row_i/H,
/// b_i = (π/2)·col_i/W, a'_j = (π/2)·sr·row'_j/H, b'_j = (π/2)·sr·col'_j/W; A_ij = w_ij (ReLU q_i · ReLU k_j);
/// z_i = clamp(1/(Σ_j A_ij + 1e-4)); o_i = clamp(clamp(n_i)·z_i); y = clamp(out_proj(o)); clamp(y + y·s), where
/// n_i = Σ_j A_ij v_j + φ̃(q_i)·(clamp(kv) − kv) places the official clamp of the state kv = Σ_j φ̃(k_j)ᵀ v_j (computed
/// by its definition from φ̃ written block by block): the O(N²) term is all of n_i wherever that clamp is idle.
NaiveVicinity naive_vicinity(VicinityAttentionImpl& m, const torch::Tensor& x_in) {
  const bool product = m.product(), clamp = m.clamped();
  const int64_t sr = m.spatial_reduction(), C = m.dim(), h = m.heads(), d = m.head_dim();
  const int64_t B = x_in.size(0), H = x_in.size(2), W = x_in.size(3), N = H * W;
  const int64_t Hk = (H + sr - 1) / sr, Wk = (W + sr - 1) / sr, Nk = Hk * Wk;
  auto P = [&](const std::string& name) { return test::param(m, name).to(torch::kFloat64).contiguous(); };
  auto cl = [&](double t) { return clamp ? abs_clamp(t) : t; };
  auto x = x_in.to(torch::kFloat64).contiguous();
  NaiveVicinity r;
  r.output = torch::zeros({B, C, H, W}, torch::kFloat64);
  r.feature_q = torch::zeros({B, h, N, 4 * d}, torch::kFloat64);
  r.feature_k = torch::zeros({B, h, Nk, 4 * d}, torch::kFloat64);
  r.kv_unclamped = torch::zeros({B, h, 4 * d, d}, torch::kFloat64);
  r.z = torch::zeros({B, h, N}, torch::kFloat64);
  r.o = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.attention = torch::zeros({B, h, N, Nk}, torch::kFloat64);
  auto xa = x.accessor<double, 4>();
  auto out_a = r.output.accessor<double, 4>();
  auto fq = r.feature_q.accessor<double, 4>();
  auto fk = r.feature_k.accessor<double, 4>();
  auto kva = r.kv_unclamped.accessor<double, 4>();
  auto za = r.z.accessor<double, 3>();
  auto oa = r.o.accessor<double, 4>();
  auto Aa = r.attention.accessor<double, 4>();
  const double half_pi = M_PI / 2;
  for (int64_t b = 0; b < B; ++b) {
    auto tokens = torch::zeros({N, C}, torch::kFloat64);  // x_l, l = row·W + col
    auto ta = tokens.accessor<double, 2>();
    for (int64_t l = 0; l < N; ++l)
      for (int64_t c = 0; c < C; ++c) ta[l][c] = xa[b][c][l / W][l % W];
    // SE weights.
    auto mean = tokens.mean(0, true);
    auto s = torch::sigmoid(
        naive_linear(torch::relu(naive_linear(mean, P("se_fc.0.weight"), {})), P("se_fc.2.weight"), {}))[0];
    // Key / value source.
    torch::Tensor src = tokens;
    if (sr > 1) {
      auto cw = P("sr.weight");
      auto cwa = cw.accessor<double, 4>();
      auto cb = P("sr.bias");
      src = torch::zeros({Nk, C}, torch::kFloat64);
      auto sa = src.accessor<double, 2>();
      for (int64_t j = 0; j < Nk; ++j)
        for (int64_t o = 0; o < C; ++o) {
          double acc = cb[o].item<double>();
          for (int64_t c = 0; c < C; ++c)
            for (int64_t u = 0; u < sr; ++u)
              for (int64_t w = 0; w < sr; ++w) {
                const int64_t row = (j / Wk) * sr + u, col = (j % Wk) * sr + w;
                if (row < H && col < W) acc += cwa[o][c][u][w] * xa[b][c][row][col];
              }
          sa[j][o] = acc;
        }
      auto g = P("norm.weight"), beta = P("norm.bias");
      for (int64_t j = 0; j < Nk; ++j) {
        double mu = 0, var = 0;
        for (int64_t c = 0; c < C; ++c) mu += sa[j][c] / C;
        for (int64_t c = 0; c < C; ++c) var += (sa[j][c] - mu) * (sa[j][c] - mu) / C;
        for (int64_t c = 0; c < C; ++c)
          sa[j][c] = (sa[j][c] - mu) / std::sqrt(var + 1e-5) * g[c].item<double>() + beta[c].item<double>();
      }
    }
    auto q = torch::relu(naive_linear(tokens, P("q_proj.weight"), P("q_proj.bias")));  // (N, C/fr)
    auto k = torch::relu(naive_linear(src, P("k_proj.weight"), P("k_proj.bias")));     // (N', C/fr)
    auto v = naive_linear(src, P("v_proj.weight"), P("v_proj.bias"));
    auto qa = q.accessor<double, 2>();
    auto ka = k.accessor<double, 2>();
    auto va = v.accessor<double, 2>();
    auto a_q = [&](int64_t i) { return half_pi * static_cast<double>(i / W) / H; };
    auto b_q = [&](int64_t i) { return half_pi * static_cast<double>(i % W) / W; };
    auto a_k = [&](int64_t j) { return half_pi * static_cast<double>(sr * (j / Wk)) / H; };
    auto b_k = [&](int64_t j) { return half_pi * static_cast<double>(sr * (j % Wk)) / W; };
    auto weight = [&](int64_t i, int64_t j) {
      const double ra = std::cos(a_q(i) - a_k(j)), rb = std::cos(b_q(i) - b_k(j));
      return product ? ra * rb : ra + rb;
    };
    // Features by their block definition (for the probes and the kv check).
    auto blocks = [&](double a, double bb) -> std::array<double, 4> {
      if (product)
        return {std::cos(a) * std::cos(bb), std::cos(a) * std::sin(bb), std::sin(a) * std::cos(bb),
                std::sin(a) * std::sin(bb)};
      return {std::cos(a), std::sin(a), std::cos(bb), std::sin(bb)};
    };
    auto merged = torch::zeros({N, C / m.feature_reduction()}, torch::kFloat64);
    auto ma = merged.accessor<double, 2>();
    for (int64_t n = 0; n < h; ++n) {
      for (int64_t i = 0; i < N; ++i) {
        auto w = blocks(a_q(i), b_q(i));
        for (int64_t blk = 0; blk < 4; ++blk)
          for (int64_t e = 0; e < d; ++e) fq[b][n][i][blk * d + e] = qa[i][n * d + e] * w[blk];
      }
      for (int64_t j = 0; j < Nk; ++j) {
        auto w = blocks(a_k(j), b_k(j));
        for (int64_t blk = 0; blk < 4; ++blk)
          for (int64_t e = 0; e < d; ++e) fk[b][n][j][blk * d + e] = ka[j][n * d + e] * w[blk];
      }
      for (int64_t f = 0; f < 4 * d; ++f)
        for (int64_t e = 0; e < d; ++e)
          for (int64_t j = 0; j < Nk; ++j) kva[b][n][f][e] += fk[b][n][j][f] * va[j][n * d + e];
      // The O(N·N') form.
      for (int64_t i = 0; i < N; ++i) {
        double den = 0;
        std::vector<double> raw(Nk);
        for (int64_t j = 0; j < Nk; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += qa[i][n * d + e] * ka[j][n * d + e];
          raw[j] = weight(i, j) * dot;
          den += raw[j];
        }
        const double z = cl(1.0 / (den + 1e-4));
        za[b][n][i] = z;
        for (int64_t j = 0; j < Nk; ++j) Aa[b][n][i][j] = raw[j] * z;
        for (int64_t e = 0; e < d; ++e) {
          double num = 0;
          for (int64_t j = 0; j < Nk; ++j) num += raw[j] * va[j][n * d + e];
          for (int64_t f = 0; f < 4 * d; ++f) {
            const double kv = kva[b][n][f][e];
            if (cl(kv) != kv) num += fq[b][n][i][f] * (cl(kv) - kv);
          }
          oa[b][n][i][e] = cl(cl(num) * z);
          ma[i][n * d + e] = oa[b][n][i][e];
        }
      }
    }
    auto y = naive_linear(merged, P("out_proj.weight"), P("out_proj.bias"));  // (N, C)
    auto ya = y.accessor<double, 2>();
    auto sa = s.accessor<double, 1>();
    for (int64_t l = 0; l < N; ++l)
      for (int64_t c = 0; c < C; ++c) {
        const double t = cl(ya[l][c]);
        out_a[b][c][l / W][l % W] = cl(t + t * sa[c]);
      }
  }
  r.kv_buffer = r.kv_unclamped.clone();
  auto kb = r.kv_buffer.view(-1);
  for (int64_t i = 0; i < kb.numel(); ++i) {
    const double t = kb[i].item<double>();
    if (cl(t) != t) {
      kb[i] = cl(t);
      ++r.kv_clamped;
    }
  }
  return r;
}

struct NaiveCase {
  const char* form;
  int64_t sr, H, W;
  double input_scale;
};

TEST(VicinityNaive, LinearPathEqualsNaiveQuadraticFormula) {
  const NaiveCase cases[] = {
      {"sum", 1, 5, 7, 1.0},      {"product", 1, 5, 7, 1.0}, {"sum", 2, 6, 4, 1.0},  {"product", 2, 6, 4, 1.0},
      {"sum", 2, 5, 7, 1.0},      {"product", 2, 7, 3, 1.0}, {"sum", 1, 5, 7, 10.0}, {"product", 1, 7, 5, 10.0},
      {"product", 2, 5, 7, 10.0},  // LayerNorm undoes the ×10 on the keys: no z clamp here
  };
  const int64_t C = 32, h = 2;
  int z_clamped_cases = 0, kv_clamped_cases = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.form) + " sr " + std::to_string(c.sr) + " " + std::to_string(c.H) + "x" +
                 std::to_string(c.W) + " input x" + std::to_string(c.input_scale));
    VicinityAttention attn(AttentionOptions(C, h)
                               .set("form", c.form)
                               .set("spatial_reduction", c.sr)
                               .set("se_reduction", 2)
                               .set("feature_reduction", 2));
    test::randomize(*attn, 31 + c.sr, 0.3);
    attn->to(torch::kFloat64);
    auto x = test::random_input(2, C, c.H, c.W, 5) * c.input_scale;
    ProbeCollector probes(
        {Probe::feature_q, Probe::feature_k, Probe::kv_buffer, Probe::normalizer_z, Probe::output, Probe::attention});
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
    auto ref = naive_vicinity(*attn, x);
    const double errs[] = {test::max_rel_err(y, ref.output),
                           test::max_rel_err(probes.get(Probe::feature_q), ref.feature_q),
                           test::max_rel_err(probes.get(Probe::feature_k), ref.feature_k),
                           test::max_rel_err(probes.get(Probe::kv_buffer), ref.kv_buffer),
                           test::max_rel_err(probes.get(Probe::normalizer_z), ref.z),
                           test::max_rel_err(probes.get(Probe::output), ref.o),
                           test::max_rel_err(probes.get(Probe::attention), ref.attention)};
    double worst = 0;
    for (double e : errs) {
      EXPECT_LE(e, 1e-10);
      worst = std::max(worst, e);
    }
    const int64_t z_clamped = (ref.z == 1e-4).sum().item<int64_t>();
    std::printf("[ measured ] naive %-7s sr %lld %lldx%lld x%-4g max rel err %.3g (clamped: %lld kv, %lld z)\n", c.form,
                static_cast<long long>(c.sr), static_cast<long long>(c.H), static_cast<long long>(c.W), c.input_scale,
                worst, static_cast<long long>(ref.kv_clamped), static_cast<long long>(z_clamped));
    if (z_clamped > 0) ++z_clamped_cases;
    if (ref.kv_clamped > 0) ++kv_clamped_cases;
  }
  EXPECT_GE(z_clamped_cases, 2) << "the ×10 inputs should put z on the clamp floor";
  EXPECT_GE(kv_clamped_cases, 1) << "no case exercises the clamp of kv";
}

TEST(VicinityNaive, WithoutAbsClampItIsThePlainFormula) {
  const int64_t C = 32, h = 2;
  for (const char* form : {"sum", "product"}) {
    VicinityAttention attn(
        AttentionOptions(C, h).set("form", form).set("abs_clamp", false).set("spatial_reduction", 2));
    test::randomize(*attn, 7, 0.3);
    attn->to(torch::kFloat64);
    auto x = test::random_input(3, C, 7, 5, 9) * 10.0;
    ProbeCollector probes({Probe::attention, Probe::output});
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
    auto ref = naive_vicinity(*attn, x);
    EXPECT_LE(test::max_rel_err(y, ref.output), 1e-10) << form;
    // Plain formula: o = A·v exactly, rows of A sum to 1 − ε·z.
    EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.o), 1e-10) << form;
    auto rows = probes.get(Probe::attention).sum(-1);
    EXPECT_LE((rows - (1 - 1e-4 * ref.z)).abs().max().item<double>(), 1e-12) << form;
  }
}

// ------------------------------------------------------------------------------------------------
// Settings, errors, gradients, sizes
// ------------------------------------------------------------------------------------------------

TEST(VicinitySettings, DefaultsAreTheVvtSetting) {
  VicinityAttention attn(AttentionOptions(64, 2));
  EXPECT_EQ(attn->settings().describe(), "form=sum feature_reduction=2 spatial_reduction=1 se_reduction=1 abs_clamp=1");
  EXPECT_EQ(attn->head_dim(), 16);
  EXPECT_TRUE(attn->sr.is_empty());
  EXPECT_EQ(attn->named_parameters().size(), 10u);  // q/k/v/out_proj weight+bias, se_fc.0/.2 weight
}

TEST(VicinitySettings, BadSettingsGiveOneLineErrors) {
  auto expect = [](const AttentionOptions& o, const std::string& text) {
    auto msg = test::error_message([&] { make_attention(Variant::vicinity, o); });
    EXPECT_NE(msg.find(text), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  };
  expect(AttentionOptions(32, 2).set("form", "diag"),
         "setting 'form' of attention variant vicinity expects one of: sum, product, got 'diag'");
  expect(AttentionOptions(32, 2).set("feature_reduction", 3), "feature_reduction (3) must divide the channels (32)");
  expect(AttentionOptions(32, 4).set("feature_reduction", 16),
         "channels / feature_reduction (32/16 = 2) must be divisible by heads (4)");
  expect(AttentionOptions(32, 2).set("se_reduction", 64), "se_reduction (64) must be at most the channels (32)");
  expect(AttentionOptions(32, 2).set("spatial_reduction", 0),
         "setting 'spatial_reduction' of attention variant vicinity");
  expect(AttentionOptions(32, 2).set("abs_clamp", "sometimes"), "setting 'abs_clamp' of attention variant vicinity");
  expect(AttentionOptions(30, 4), "channels (30) must be divisible by heads (4)");
}

TEST(VicinityGradients, SeConvAndLayerNormParametersLearn) {
  for (const char* form : {"sum", "product"}) {
    VicinityAttention attn(
        AttentionOptions(32, 2).set("form", form).set("spatial_reduction", 2).set("se_reduction", 4));
    test::randomize(*attn, 3, 0.2);
    for (auto hw : {std::pair<int64_t, int64_t>{5, 6}, {4, 4}}) {
      attn->zero_grad();
      auto x = test::random_input(2, 32, hw.first, hw.second, 3, torch::kFloat32).requires_grad_(true);
      auto y = attn->forward(x, AttentionContext::for_input(x, 16));
      (y * y).sum().backward();
      for (const auto& p : attn->named_parameters()) {
        ASSERT_TRUE(p.value().grad().defined()) << p.key();
        EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
        EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << form << " " << p.key() << " gets no gradient";
      }
      EXPECT_EQ(attn->named_parameters().size(), 14u);  // + sr.weight/bias, norm.weight/bias
    }
  }
}

TEST(VicinityShapes, RunsAtRavltMicroAndDeitDimsOnAnyGrid) {
  struct Dims {
    int64_t C, h, H, W;
  };
  const Dims dims[] = {{16, 1, 7, 7},   {32, 2, 4, 4},    {64, 4, 2, 2},   {128, 4, 1, 1},
                       {16, 1, 16, 24}, {192, 3, 14, 14}, {192, 3, 10, 16}};
  for (const auto& d : dims)
    for (int64_t sr : {1, 2}) {
      SCOPED_TRACE(std::to_string(d.C) + "/" + std::to_string(d.h) + " " + std::to_string(d.H) + "x" +
                   std::to_string(d.W) + " sr " + std::to_string(sr));
      VicinityAttention attn(AttentionOptions(d.C, d.h).set("spatial_reduction", sr));
      test::randomize(*attn, 1, 0.1);
      auto x = test::random_input(2, d.C, d.H, d.W, 2, torch::kFloat32);
      ProbeCollector probes({Probe::kv_buffer, Probe::output, Probe::attention, Probe::feature_k});
      torch::NoGradGuard no_grad;
      auto y = attn->forward(x, AttentionContext::for_input(x, d.C / d.h, &probes));
      ASSERT_EQ(y.sizes(), x.sizes());
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
      const int64_t dp = d.C / d.h / 2, Nk = ((d.H + sr - 1) / sr) * ((d.W + sr - 1) / sr);
      EXPECT_EQ(probes.get(Probe::kv_buffer).sizes(), (std::vector<int64_t>{2, d.h, 4 * dp, dp}));
      EXPECT_EQ(probes.get(Probe::output).sizes(), (std::vector<int64_t>{2, d.h, d.H * d.W, dp}));
      EXPECT_EQ(probes.get(Probe::feature_k).sizes(), (std::vector<int64_t>{2, d.h, Nk, 4 * dp}));
      EXPECT_EQ(probes.get(Probe::attention).sizes(), (std::vector<int64_t>{2, d.h, d.H * d.W, Nk}));
    }
}

TEST(VicinityMacs, CountsProjectionsSrConvSeAndMatmuls) {
  // C 64, h 2, fr 2 (d' 16), sr 2, se 2 on 8×6: N 48, keys 4×3 = 12.
  VicinityAttention attn(AttentionOptions(64, 2).set("spatial_reduction", 2).set("se_reduction", 2));
  auto m = attn->macs(8, 6);
  const int64_t q = 48 * 64 * 32, kv = 2 * 12 * 64 * 32, out = 48 * 32 * 64, se = 64 * 32 + 32 * 64,
                conv = 64 * 64 * 4 * 12;
  EXPECT_EQ(m.projections, q + kv + out + se + conv);
  // kv: 4d'·d'·h per key; φ̃(q)·kv: 4d'·d'·h per query; normaliser 4d'·h per query.
  EXPECT_EQ(m.matmuls, 64 * 16 * 2 * 12 + 64 * 16 * 2 * 48 + 64 * 2 * 48);
  // A padded grid counts the padded key grid: 7×5 with sr 2 → 4×3 keys.
  EXPECT_EQ(attn->macs(7, 5).projections, 35 * 64 * 32 + 2 * 12 * 64 * 32 + 35 * 32 * 64 + se + conv);
}

}  // namespace
}  // namespace rala

namespace rala {
namespace {

// Prefix tokens (DeiT's cls): the 2-D re-weighting is the grid's; every pair with the cls token has the weight of
// zero distance (sum form 2, product form 1); the SE weights read the mean over all tokens. The implied (1 + N)² map
// against that formula by definition (abs_clamp off: the plain formula), and the SE input.
TEST(VicinityPrefix, TheClsTokenPairsHaveTheZeroDistanceWeight) {
  for (const char* form : {"sum", "product"}) {
    SCOPED_TRACE(form);
    const bool product = std::string(form) == "product";
    VicinityAttention attn(AttentionOptions(32, 2).set("form", form).set("abs_clamp", false).prefix_tokens(1));
    test::randomize(*attn, 12);
    attn->to(torch::kFloat64);
    const int64_t H = 3, W = 4, N = H * W, T = 1 + N, d = 8;  // d' = (32/2)/fr 2
    auto tokens = test::random_input(2, T, 32, 1, 5).squeeze(-1);
    ProbeCollector probes({Probe::attention}, 4096, {"se_weight"});
    AttentionContext ctx;
    ctx.height = H;
    ctx.width = W;
    ctx.probes = &probes;
    torch::NoGradGuard no_grad;
    attn->forward_tokens(tokens, ctx);
    auto q = torch::relu(attn->q_proj->forward(tokens)), k = torch::relu(attn->k_proj->forward(tokens));  // (2, T, 16)
    auto weight = [&](int64_t i, int64_t j) {
      if (i == 0 || j == 0) return product ? 1.0 : 2.0;
      const double ai = M_PI / 2 * ((i - 1) / W) / H, aj = M_PI / 2 * ((j - 1) / W) / H;
      const double bi = M_PI / 2 * ((i - 1) % W) / W, bj = M_PI / 2 * ((j - 1) % W) / W;
      return product ? std::cos(ai - aj) * std::cos(bi - bj) : std::cos(ai - aj) + std::cos(bi - bj);
    };
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t n = 0; n < 2; ++n) {
        auto qh = q[b].narrow(1, d * n, d), kh = k[b].narrow(1, d * n, d);
        auto A = torch::empty({T, T}, torch::kFloat64);
        for (int64_t i = 0; i < T; ++i) {
          double den = 0;
          for (int64_t m = 0; m < T; ++m) den += weight(i, m) * (qh[i] * kh[m]).sum().item<double>();
          for (int64_t j = 0; j < T; ++j)
            A[i][j] = weight(i, j) * (qh[i] * kh[j]).sum().item<double>() / (den + VicinityAttentionImpl::kEps);
        }
        EXPECT_LE(test::max_rel_err(probes.get(Probe::attention)[b][n], A), 1e-10) << b << " " << n;
      }
    EXPECT_LE(test::max_rel_err(probes.get_internal("se_weight"), attn->se_fc->forward(tokens.mean(1))), 1e-12);
  }
}

}  // namespace
}  // namespace rala
