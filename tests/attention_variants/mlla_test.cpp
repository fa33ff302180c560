// MLLA (M): golden parity with the official LinearAttention and MLLABlock (LeapLabTHU/MLLA models/mlla.py), the
// regenerated RoPE rotations vs the stored buffer, the O(N) path vs a naive float64 O(N²) reference written from the
// formulas (complex RoPE by its definition) on a non-square grid, settings, and the model dims.
#include <gtest/gtest.h>

#include <complex>

#include "attention_variants/mlla.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kBare = "mlla_linear_attention.h5";
constexpr const char* kBlock = "mlla_block.h5";



torch::Tensor tokens_to_input(const torch::Tensor& t, int64_t H, int64_t W) {  // (B, N, C) → (B, C, H, W)
  return t.transpose(1, 2).reshape({t.size(0), t.size(2), H, W});
}
torch::Tensor as_tokens(const torch::Tensor& m) { return m.flatten(2).transpose(1, 2); }  // (B, C, H, W) → (B, N, C)

TEST(MllaGolden, LinearAttentionAndEveryProbeMatchOfficialCode) {
  MllaAttention attn(AttentionOptions(64, 2).set("mixer", false));
  test::load_state(*attn, kBare);
  auto x = tokens_to_input(golden(kBare, "input"), 8, 8);  // (2, 64, 8, 8)
  ProbeCollector probes({Probe::feature_q, Probe::feature_k, Probe::kv_buffer, Probe::normalizer_z, Probe::output,
                         Probe::output_gated, Probe::attention},
                        4096, {"rope_q", "rope_k", "lepe"});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 32, &probes));
  test::expect_golden("output", as_tokens(y), golden(kBare, "output"));
  test::expect_golden("phi_q", probes.get(Probe::feature_q), golden(kBare, "probes/phi_q"));
  test::expect_golden("phi_k", probes.get(Probe::feature_k), golden(kBare, "probes/phi_k"));
  test::expect_golden("rope_q", probes.get_internal("rope_q"), golden(kBare, "probes/rope_q"));
  test::expect_golden("rope_k", probes.get_internal("rope_k"), golden(kBare, "probes/rope_k"));
  test::expect_golden("kv_buffer", probes.get(Probe::kv_buffer), golden(kBare, "probes/kv_buffer"));
  test::expect_golden("normalizer_z", probes.get(Probe::normalizer_z), golden(kBare, "probes/normalizer_z"));
  test::expect_golden("output_pre_lepe", probes.get(Probe::output), golden(kBare, "probes/output_pre_lepe"));
  test::expect_golden("lepe", probes.get_internal("lepe"), golden(kBare, "probes/lepe"));
  // Without the mixer, output_gated is the output itself (LePE added, no gate) and A·v = output with v = x.
  auto out_heads = token_heads(as_tokens(y), 2);
  EXPECT_LE(test::max_abs_err(probes.get(Probe::output_gated), out_heads), 1e-6);
  auto av = torch::matmul(probes.get(Probe::attention), token_heads(as_tokens(x), 2));
  EXPECT_LE(test::max_rel_err(av, probes.get(Probe::output)), 1e-5);
}

TEST(MllaGolden, StoredRotationsAreRegeneratedForAnyGrid) {
  auto stored = golden(kBare, "state_dict/rope.rotations");  // (8, 8, 32, 2), official float32
  EXPECT_LE(test::max_abs_err(mlla_rope_rotations(64, 8, 8), stored), 1e-6);
  EXPECT_LE(test::max_abs_err(MllaAttention(AttentionOptions(64, 2).set("mixer", false))->rotations, stored), 1e-6);
  EXPECT_LE(test::max_abs_err(golden(kBlock, "state_dict/attn.rope.rotations"), stored), 0.0);
  // The theta_shift tables carry the same angles, pair j at channels 2j, 2j+1.
  auto t = mlla_rope_tables(64, 8, 8, torch::kFloat64);
  auto r = stored.to(torch::kFloat64).reshape({64, 32, 2});
  EXPECT_LE(test::max_abs_err(t.cos.reshape({64, 32, 2}).select(-1, 1), r.select(-1, 0)), 1e-6);
  EXPECT_LE(test::max_abs_err(t.sin.reshape({64, 32, 2}).select(-1, 0), r.select(-1, 1)), 1e-6);
  // The forward never reads the stored copy: a module whose buffer was built for another grid (or altered) gives the
  // same output on 8×8, and a non-square grid runs.
  MllaAttention a(AttentionOptions(64, 2).set("mixer", false));
  MllaAttention b(AttentionOptions(64, 2).set("mixer", false).set("rotations_h", 56).set("rotations_w", 40));
  EXPECT_EQ(b->rotations.sizes(), (std::vector<int64_t>{56, 40, 32, 2}));
  test::load_state(*a, kBare);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : b->named_parameters()) p.value().copy_(test::param(*a, p.key()));
    a->rotations.zero_();
  }
  torch::NoGradGuard no_grad;
  auto x = tokens_to_input(golden(kBare, "input"), 8, 8);
  auto ctx = AttentionContext::for_input(x, 32);
  EXPECT_TRUE(torch::equal(a->forward(x, ctx), b->forward(x, ctx)));
  auto x79 = test::random_input(2, 64, 7, 9, 1, torch::kFloat32);
  EXPECT_EQ(a->forward(x79, AttentionContext::for_input(x79, 32)).sizes(), x79.sizes());
}

/// The golden's MLLABlock: cpe1/norm1/cpe2/norm2/mlp written here from their definitions around the mlla mixer,
/// whose children are registered under the official block key names.
struct TestBlockImpl : torch::nn::Module {
  explicit TestBlockImpl(MllaAttention mixer_) : mixer(mixer_) {
    const int64_t C = mixer->dim();
    cpe1 = register_module("cpe1", depthwise(C, 3));
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(1e-5)));
    for (auto& child : mixer->named_children()) register_module(child.key(), child.value());
    cpe2 = register_module("cpe2", depthwise(C, 3));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(1e-5)));
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    fc1 = mlp->register_module("fc1", torch::nn::Linear(C, 4 * C));
    fc2 = mlp->register_module("fc2", torch::nn::Linear(4 * C, C));
  }
  MllaAttention mixer;
  torch::nn::Conv2d cpe1{nullptr}, cpe2{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

TEST(MllaGolden, WholeBlockAroundTheMixerMatchesOfficialMLLABlock) {
  MllaAttention mixer(AttentionOptions(64, 2));  // default: mixer on
  ASSERT_TRUE(mixer->mixer());
  TestBlockImpl block(mixer);
  test::load_state(block, kBlock);
  const int64_t H = 8, W = 8;
  auto x = golden(kBlock, "input");  // (B, N, C)
  ProbeCollector probes({}, 4096, {"gate", "attn_input", "attn_output"});
  torch::NoGradGuard no_grad;
  auto after_cpe1 = x + as_tokens(block.cpe1->forward(tokens_to_input(x, H, W)));
  auto mixed = mixer->forward(tokens_to_input(block.norm1->forward(after_cpe1), H, W),
                              AttentionContext::for_input(tokens_to_input(x, H, W), 32, &probes));
  auto after_attn = after_cpe1 + as_tokens(mixed);
  auto after_cpe2 = after_attn + as_tokens(block.cpe2->forward(tokens_to_input(after_attn, H, W)));
  auto out = after_cpe2 + block.fc2->forward(torch::gelu(block.fc1->forward(block.norm2->forward(after_cpe2))));
  test::expect_golden("after_cpe1", after_cpe1, golden(kBlock, "probes/after_cpe1"));
  test::expect_golden("gate", probes.get_internal("gate"), golden(kBlock, "probes/gate"));
  test::expect_golden("attn_input", probes.get_internal("attn_input"), golden(kBlock, "probes/attn_input"));
  test::expect_golden("attn_output", probes.get_internal("attn_output"), golden(kBlock, "probes/attn_output"));
  test::expect_golden("after_attn", after_attn, golden(kBlock, "probes/after_attn"));
  test::expect_golden("after_cpe2", after_cpe2, golden(kBlock, "probes/after_cpe2"));
  test::expect_golden("output", out, golden(kBlock, "output"));
}

TEST(MllaGolden, SettingsFromOfficialStateShapes) {
  auto shapes_of = [](const std::string& file, const std::string& strip) {
    StateShapes s;
    for (const auto& key : {"qk.weight", "qk.bias", "lepe.weight", "lepe.bias", "rope.rotations"}) {
      const std::string k = strip + key;
      s[k] = golden(file, "state_dict/" + k).sizes().vec();
    }
    return s;
  };
  auto bare = settings_from_state_shapes(Variant::mlla, shapes_of(kBare, ""));
  EXPECT_EQ(bare, (std::vector<SettingPair>{{"mixer", "0"}, {"qkv_bias", "1"}, {"lepe", "1"}, {"rope", "1"},
                                            {"rotations_h", "8"}, {"rotations_w", "8"}}));
  auto block_shapes = shapes_of(kBlock, "attn.");
  block_shapes["attn.rope.rotations"] = {56, 56, 32, 2};  // MLLA-T stage 1
  for (const auto& key : {"in_proj.weight", "in_proj.bias", "act_proj.weight", "dwc.weight", "out_proj.weight"})
    block_shapes[key] = {64, 64};
  auto block = settings_from_state_shapes(Variant::mlla, block_shapes);
  EXPECT_EQ(block, (std::vector<SettingPair>{{"mixer", "1"}, {"qkv_bias", "1"}, {"lepe", "1"}, {"rope", "1"},
                                             {"rotations_h", "56"}, {"rotations_w", "56"}}));
  auto built = make_attention(Variant::mlla, AttentionOptions(64, 2).settings(block));
  EXPECT_EQ(std::dynamic_pointer_cast<MllaAttentionImpl>(built)->rotations.sizes(),
            (std::vector<int64_t>{56, 56, 32, 2}));
  EXPECT_TRUE(settings_from_state_shapes(Variant::mlla, {{"qkvo.weight", {256, 64, 1, 1}}}).empty());
}

// ------------------------------------------------------------------------------------------------
// Naive float64 reference from the formulas
// ------------------------------------------------------------------------------------------------

/// y[b, n, o] = Σ_c w[o, c] x[b, n, c] + bias[o], by definition.
torch::Tensor naive_linear(const torch::Tensor& x, const torch::nn::Linear& lin) {
  auto w = lin->weight.detach().to(torch::kFloat64);
  auto out = torch::zeros({x.size(0), x.size(1), w.size(0)}, torch::kFloat64);
  auto xa = x.accessor<double, 3>();
  auto wa = w.accessor<double, 2>();
  auto oa = out.accessor<double, 3>();
  for (int64_t b = 0; b < x.size(0); ++b)
    for (int64_t n = 0; n < x.size(1); ++n)
      for (int64_t o = 0; o < w.size(0); ++o) {
        double s = lin->bias.defined() ? lin->bias[o].item<double>() : 0.0;
        for (int64_t c = 0; c < w.size(1); ++c) s += wa[o][c] * xa[b][n][c];
        oa[b][n][o] = s;
      }
  return out;
}

/// 3×3 depthwise conv with zero padding 1 and bias on tokens (B, N, C) of an H×W grid, by definition.
torch::Tensor naive_dw3x3(const torch::Tensor& x, const torch::nn::Conv2d& conv, int64_t H, int64_t W) {
  auto w = conv->weight.detach().to(torch::kFloat64);
  auto bias = conv->bias.detach().to(torch::kFloat64);
  auto out = torch::zeros_like(x);
  auto xa = x.accessor<double, 3>();
  auto wa = w.accessor<double, 4>();
  auto oa = out.accessor<double, 3>();
  for (int64_t b = 0; b < x.size(0); ++b)
    for (int64_t r = 0; r < H; ++r)
      for (int64_t c = 0; c < W; ++c)
        for (int64_t ch = 0; ch < x.size(2); ++ch) {
          double s = bias[ch].item<double>();
          for (int64_t dr = -1; dr <= 1; ++dr)
            for (int64_t dc = -1; dc <= 1; ++dc) {
              const int64_t rr = r + dr, cc = c + dc;
              if (rr < 0 || rr >= H || cc < 0 || cc >= W) continue;
              s += wa[ch][0][dr + 1][dc + 1] * xa[b][rr * W + cc][ch];
            }
          oa[b][r * W + c][ch] = s;
        }
  return out;
}

torch::Tensor naive_silu(const torch::Tensor& x) {
  auto out = x.clone();
  auto* p = out.data_ptr<double>();
  for (int64_t i = 0; i < out.numel(); ++i) p[i] = p[i] / (1.0 + std::exp(-p[i]));
  return out;
}

/// MLLA's RoPE by its complex-rotation definition on (N, C) tokens of an H×W grid: channel pair j = (2j, 2j+1) is the
/// complex number x_2j + i·x_2j+1, multiplied by e^{i·a}, a = pos·10000^(−(j mod K)/K), K = C/4, pos = row for j < K
/// and column otherwise.
torch::Tensor naive_mlla_rope(const torch::Tensor& x, int64_t W) {
  const int64_t N = x.size(0), C = x.size(1), K = C / 4;
  auto out = torch::empty_like(x);
  auto xa = x.accessor<double, 2>();
  auto oa = out.accessor<double, 2>();
  for (int64_t l = 0; l < N; ++l)
    for (int64_t j = 0; j < C / 2; ++j) {
      const double pos = static_cast<double>(j < K ? l / W : l % W);
      const double a = pos * std::pow(10000.0, -static_cast<double>(j % K) / static_cast<double>(K));
      const std::complex<double> z = std::complex<double>(xa[l][2 * j], xa[l][2 * j + 1]) * std::polar(1.0, a);
      oa[l][2 * j] = z.real();
      oa[l][2 * j + 1] = z.imag();
    }
  return out;
}

struct MllaNaive {
  torch::Tensor final;      ///< (B, C, H, W)
  torch::Tensor attention;  ///< (B, h, N, N)
  torch::Tensor output, output_gated, phi_q, phi_k, rope_q;  ///< (B, h, N, d)
  torch::Tensor kv;         ///< (B, h, d, d)
  torch::Tensor z;          ///< (B, h, N)
};

MllaNaive naive_mlla(MllaAttentionImpl& m, const torch::Tensor& x_map) {
  const auto& s = m.settings();
  const bool mixer = s.flag("mixer"), rope = s.flag("rope"), lepe = s.flag("lepe");
  const int64_t B = x_map.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x_map.size(2), W = x_map.size(3);
  const int64_t N = H * W;
  auto x = x_map.to(torch::kFloat64).flatten(2).transpose(1, 2).contiguous();  // (B, N, C)
  torch::Tensor gate, v = x;
  if (mixer) {
    gate = naive_silu(naive_linear(x, m.act_proj));
    v = naive_silu(naive_dw3x3(naive_linear(x, m.in_proj), m.dwc, H, W));
  }
  auto qk = naive_linear(v, m.qk);
  auto q = test::naive_elu1(qk.narrow(2, 0, C).contiguous()), k = test::naive_elu1(qk.narrow(2, C, C).contiguous());
  MllaNaive r;
  r.attention = torch::zeros({B, h, N, N}, torch::kFloat64);
  r.output = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.kv = torch::zeros({B, h, d, d}, torch::kFloat64);
  r.z = torch::zeros({B, h, N}, torch::kFloat64);
  r.phi_q = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.phi_k = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.rope_q = torch::zeros({B, h, N, d}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b) {
    auto qr = rope ? naive_mlla_rope(q[b], W) : q[b];  // full C, before the head split
    auto kr = rope ? naive_mlla_rope(k[b], W) : k[b];
    for (int64_t n = 0; n < h; ++n) {
      auto qh = q[b].narrow(1, n * d, d), kh = k[b].narrow(1, n * d, d), vh = v[b].narrow(1, n * d, d);
      auto qrh = qr.narrow(1, n * d, d), krh = kr.narrow(1, n * d, d);
      r.phi_q[b][n] = qh;
      r.phi_k[b][n] = kh;
      r.rope_q[b][n] = qrh;
      auto kbar = kh.mean(0);
      for (int64_t i = 0; i < N; ++i) {
        const double z = 1.0 / ((qh[i] * kbar).sum().item<double>() + 1e-6);
        r.z[b][n][i] = z;
        for (int64_t j = 0; j < N; ++j)
          r.attention[b][n][i][j] = (qrh[i] * krh[j]).sum().item<double>() * z / static_cast<double>(N);
      }
      for (int64_t j = 0; j < N; ++j) r.kv[b][n] += torch::outer(krh[j], vh[j]) / static_cast<double>(N);
      r.output[b][n] = torch::matmul(r.attention[b][n], vh);
    }
  }
  auto y = r.output.permute({0, 2, 1, 3}).reshape({B, N, C});  // channel n·d + i
  if (lepe) y = y + naive_dw3x3(v, m.lepe, H, W);
  if (mixer) y = y * gate;
  r.output_gated = y.reshape({B, N, h, d}).permute({0, 2, 1, 3});
  if (mixer) y = naive_linear(y.contiguous(), m.out_proj);
  r.final = y.transpose(1, 2).reshape({B, C, H, W});
  return r;
}

class MllaSwitches : public ::testing::TestWithParam<int> {};

TEST_P(MllaSwitches, LinearPathEqualsNaiveQuadraticFormula) {
  const int bits = GetParam();
  auto o = AttentionOptions(32, 2)
               .set("mixer", (bits & 1) != 0)
               .set("rope", (bits & 2) != 0)
               .set("lepe", (bits & 4) != 0)
               .set("qkv_bias", (bits & 8) == 0);
  MllaAttention attn(o);
  test::randomize(*attn, 5 + bits);
  attn->to(torch::kFloat64);
  const int64_t H = 5, W = 7;  // non-square, N = 35
  auto x = test::random_input(2, 32, H, W, 13);
  ProbeCollector probes({Probe::output, Probe::output_gated, Probe::attention, Probe::kv_buffer, Probe::normalizer_z,
                         Probe::feature_q, Probe::feature_k},
                        4096, {"rope_q"});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = naive_mlla(*attn, x);
  EXPECT_LE(test::max_rel_err(y, ref.final), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.output), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output_gated), ref.output_gated), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::attention), ref.attention), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::kv_buffer), ref.kv), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::normalizer_z), ref.z), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::feature_q), ref.phi_q), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::feature_k), ref.phi_k), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get_internal("rope_q"), ref.rope_q), 1e-10);
  std::printf("  naive vs fast: output %.3g, attention %.3g, kv_buffer %.3g\n", test::max_rel_err(y, ref.final),
              test::max_rel_err(probes.get(Probe::attention), ref.attention),
              test::max_rel_err(probes.get(Probe::kv_buffer), ref.kv));
}

INSTANTIATE_TEST_SUITE_P(Combinations, MllaSwitches, ::testing::Values(0, 1, 2, 3, 4, 5, 6, 7, 15),
                         [](const auto& info) {
                           const int b = info.param;
                           return std::string(b & 1 ? "Mixer" : "Bare") + (b & 2 ? "Rope" : "NoRope") +
                                  (b & 4 ? "Lepe" : "NoLepe") + (b & 8 ? "NoBias" : "");
                         });

TEST(MllaNaive, RopeIsPerHeadSliceOfTheFullWidthRotation) {
  // C = 64, h = 2 (MLLA-T stage 1): head 0 is rotated by the row only, head 1 by the column only.
  auto t = mlla_rope_tables(64, 3, 4, torch::kFloat64);  // (12, 64)
  for (int64_t l = 0; l < 12; ++l) {
    const double row = static_cast<double>(l / 4), col = static_cast<double>(l % 4);
    EXPECT_NEAR(t.sin[l][0].item<double>(), std::sin(row), 1e-15);          // head 0, pair 0: θ_0 = 1
    EXPECT_NEAR(t.sin[l][32].item<double>(), std::sin(col), 1e-15);         // head 1, pair 16: θ_0 = 1
    EXPECT_NEAR(t.cos[l][63].item<double>(), std::cos(col * std::pow(10000.0, -15.0 / 16.0)), 1e-15);
  }
}

// ------------------------------------------------------------------------------------------------
// Settings, dims, MACs
// ------------------------------------------------------------------------------------------------

TEST(MllaSettings, ParametersFollowTheSettings) {
  auto keys = [](const AttentionBase& m) {
    std::vector<std::string> k;
    for (const auto& p : m.named_parameters()) k.push_back(p.key());
    for (const auto& b : m.named_buffers()) k.push_back(b.key());
    return k;
  };
  EXPECT_EQ(keys(*MllaAttention(AttentionOptions(64, 2))),
            (std::vector<std::string>{"in_proj.weight", "in_proj.bias", "act_proj.weight", "act_proj.bias",
                                      "dwc.weight", "dwc.bias", "attn.qk.weight", "attn.qk.bias", "attn.lepe.weight",
                                      "attn.lepe.bias", "out_proj.weight", "out_proj.bias", "attn.rope.rotations"}));
  EXPECT_EQ(keys(*MllaAttention(AttentionOptions(64, 2).set("mixer", false))),
            (std::vector<std::string>{"qk.weight", "qk.bias", "lepe.weight", "lepe.bias", "rope.rotations"}));
  EXPECT_EQ(keys(*MllaAttention(
                AttentionOptions(64, 2).set("mixer", false).set("rope", false).set("lepe", false).set("qkv_bias", false))),
            (std::vector<std::string>{"qk.weight"}));
  // Five C² maps with the mixer (qk 2C², in/act/out C² each), the same count as RALA's qkvo + proj.
  EXPECT_EQ(MllaAttention(AttentionOptions(64, 2))->settings().describe(),
            "mixer=1 rope=1 lepe=1 qkv_bias=1 rotations_h=8 rotations_w=8");
}

TEST(MllaSettings, BadSettingsGiveOneLineErrors) {
  EXPECT_NE(test::error_message([] { MllaAttention(AttentionOptions(30, 3)); })
                .find("MLLA: RoPE over the full C needs channels divisible by 4, got 30"),
            std::string::npos);
  EXPECT_NO_THROW(MllaAttention(AttentionOptions(30, 3).set("rope", false)));
  EXPECT_NE(test::error_message([] { MllaAttention(AttentionOptions(64, 2).set("rotations_h", 0)); })
                .find("setting 'rotations_h' of attention variant mlla expects an integer in [1, 65536], got '0'"),
            std::string::npos);
  EXPECT_NE(test::error_message([] { MllaAttention(AttentionOptions(64, 2).set("mixer", "sometimes")); })
                .find("setting 'mixer' of attention variant mlla expects a boolean"),
            std::string::npos);
  EXPECT_NE(test::error_message([] { MllaAttention(AttentionOptions(64, 2).set("alpha", false)); })
                .find("unknown setting 'alpha' for attention variant mlla"),
            std::string::npos);
  // Without RoPE, C = 30 with 3 heads runs.
  MllaAttention odd(AttentionOptions(30, 3).set("rope", false));
  auto x = test::random_input(1, 30, 3, 5, 2, torch::kFloat32);
  EXPECT_EQ(odd->forward(x, AttentionContext::for_input(x, 10)).sizes(), x.sizes());
}

TEST(MllaDims, RunsAtRavltMicroAndDeitDims) {
  struct Case {
    int64_t C, h, H, W;
  };
  for (const auto& c : {Case{16, 1, 16, 24}, Case{32, 2, 8, 12}, Case{64, 4, 4, 6}, Case{128, 4, 2, 3},
                        Case{192, 3, 14, 14}, Case{192, 3, 10, 16}}) {
    for (bool mixer : {true, false}) {
      MllaAttention attn(AttentionOptions(c.C, c.h).set("mixer", mixer));
      test::randomize(*attn, 3, 0.1);
      auto x = test::random_input(2, c.C, c.H, c.W, 4, torch::kFloat32);
      ProbeCollector probes({Probe::output, Probe::attention}, 4096, {"attn_input"});
      torch::NoGradGuard no_grad;
      auto y = attn->forward(x, AttentionContext::for_input(x, c.C / c.h, &probes));
      ASSERT_EQ(y.sizes(), x.sizes()) << c.C << " " << c.h;
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << c.C;
      auto v = mixer ? probes.get_internal("attn_input") : as_tokens(x);
      auto av = torch::matmul(probes.get(Probe::attention), token_heads(v, c.h));
      EXPECT_LE(test::max_rel_err(av, probes.get(Probe::output)), 1e-4) << c.C << " " << c.H << "x" << c.W;
    }
  }
}

TEST(MllaMacs, CountsProjectionsAndTokenMixing) {
  const int64_t C = 64, N = 7 * 9, d = 32;
  auto bare = MllaAttention(AttentionOptions(C, 2).set("mixer", false))->macs(7, 9);
  EXPECT_EQ(bare.projections, 2 * C * C * N + 9 * C * N);
  EXPECT_EQ(bare.matmuls, 2 * N * d * C + N * C);
  auto mixer = MllaAttention(AttentionOptions(C, 2))->macs(7, 9);
  EXPECT_EQ(mixer.projections, 5 * C * C * N + 18 * C * N);
  EXPECT_EQ(mixer.matmuls, bare.matmuls);
  EXPECT_EQ(MllaAttention(AttentionOptions(C, 2).set("lepe", false))->macs(7, 9).projections,
            5 * C * C * N + 9 * C * N);
}

TEST(MllaProbes, SinkDoesNotChangeTheBareOutput) {
  MllaAttention attn(AttentionOptions(32, 2).set("mixer", false));
  test::randomize(*attn, 9, 0.2);
  auto x = test::random_input(2, 32, 3, 7, 3, torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto plain = attn->forward(x, AttentionContext::for_input(x, 16));
  ProbeCollector all({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention, Probe::normalizer_z,
                      Probe::feature_q, Probe::feature_k},
                     4096, {"rope_q", "rope_k", "lepe"});
  EXPECT_TRUE(torch::equal(plain, attn->forward(x, AttentionContext::for_input(x, 16, &all))));
  EXPECT_TRUE(all.has_internal("lepe"));
  EXPECT_FALSE(all.has_internal("gate"));
}

}  // namespace
}  // namespace rala
