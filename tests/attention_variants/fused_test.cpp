// Fused CPU kernels (attention_variants/fused.h): each against the unfused LibTorch expression it replaces, for every
// kernel build this CPU runs (DEFAULT, AVX2, AVX512) and float32 / bfloat16 storage, within stated ulp bounds; the
// dispatch (grad mode, dtype, the switch), results independent of the thread count, and bad input.
//
// Bounds. float32: against the same LibTorch expression in float32. bfloat16: against the float32 expression on the
// same (bfloat16) inputs, i.e. the kernel must be exact up to its one rounding to bfloat16 (≤ 1 bfloat16 ulp, plus
// the float32 noise). Results that sum many terms (LayerNorm, convolutions, attention) are measured in ulps of a
// stated magnitude (`floor`): an element near zero is held to the absolute accuracy of the larger terms it sums.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>

#include "attention_variants/fused.h"
#include "attention_variants/rala.h"
#include "attention_variants/rope.h"
#include "attention_variants/softmax.h"
#include "models/presets.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace F = torch::nn::functional;

/// Selects a kernel build for the scope of a test.
struct CapabilityScope {
  explicit CapabilityScope(const std::string& name) : saved(fused::capability()) { fused::set_capability(name); }
  ~CapabilityScope() { fused::set_capability(saved); }
  std::string saved;
};

/// The fused path switched off (the LibTorch expressions) for a scope.
struct Unfused {
  Unfused() : saved(fused::enabled()) { fused::set_enabled(false); }
  ~Unfused() { fused::set_enabled(saved); }
  bool saved;
};

struct ThreadsScope {
  explicit ThreadsScope(int n) : saved(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadsScope() { at::set_num_threads(saved); }
  int saved;
};

torch::Tensor cl(const torch::Tensor& t) { return t.contiguous(torch::MemoryFormat::ChannelsLast); }

/// Seeded N(0, std²) tensor rounded to `dtype` (so a float32 reference sees exactly the kernel's inputs).
torch::Tensor rnd(torch::IntArrayRef sizes, uint64_t seed, torch::Dtype dtype, double std = 1.0, double mean = 0.0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return (torch::randn(sizes, gen, torch::kFloat64) * std + mean).to(dtype);
}

double max_abs(const torch::Tensor& t) { return t.abs().max().to(torch::kFloat64).item<double>(); }

torch::Tensor f64(const torch::Tensor& t) { return t.to(torch::kFloat64); }

/// Prints a measured error next to its bound and LibTorch's own (the figures the README quotes), and checks it.
void expect_ulps(const std::string& what, double measured, double bound, double libtorch = -1) {
  std::cout << "[ ulp      ] " << what << ": fused " << measured << " (bound " << bound << ")";
  if (libtorch >= 0) std::cout << ", LibTorch " << libtorch;
  std::cout << "\n";
  EXPECT_LE(measured, bound) << what;
}

class FusedKernels : public ::testing::TestWithParam<std::tuple<std::string, torch::Dtype>> {
 protected:
  void SetUp() override { scope_ = std::make_unique<CapabilityScope>(std::get<0>(GetParam())); }
  void TearDown() override { scope_.reset(); }
  torch::Dtype dtype() const { return std::get<1>(GetParam()); }
  std::string tag() const { return std::get<0>(GetParam()) + (bf16() ? " bf16" : " fp32"); }
  bool bf16() const { return dtype() == torch::kBFloat16; }
  std::unique_ptr<CapabilityScope> scope_;
  torch::NoGradGuard no_grad_;
};

std::string param_name(const ::testing::TestParamInfo<FusedKernels::ParamType>& info) {
  return std::get<0>(info.param) + (std::get<1>(info.param) == torch::kBFloat16 ? "_bf16" : "_fp32");
}

// ---- element-wise and row kernels ---------------------------------------------------------------------------------
// Reference: the same expression in float64 on the kernel's exact inputs; LibTorch's float32 op is measured against
// it too and printed beside the fused kernel's error.

torch::Tensor layer_norm_ref(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t C = x.size(1);
  return F::layer_norm(x.permute({0, 2, 3, 1}), F::LayerNormFuncOptions({C}).weight(w).bias(b).eps(1e-6))
      .permute({0, 3, 1, 2});
}

torch::Tensor dwconv_ref(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return F::conv2d(x, w, F::Conv2dFuncOptions().bias(b).padding(w.size(2) / 2).groups(x.size(1)));
}

/// Σ|terms| of a depthwise convolution + bias + residual: the magnitude its rounding errors scale with.
torch::Tensor dwconv_magnitude(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return dwconv_ref(x.abs(), w.abs(), b.abs()) + x.abs();
}

TEST_P(FusedKernels, ResidualIsAddcmulWithinOneUlp) {
  // C = 70: not a multiple of any vector width (tails).
  auto y = cl(rnd({2, 70, 5, 7}, 1, dtype())), a = cl(rnd({2, 70, 5, 7}, 2, dtype()));
  auto g = rnd({1, 70, 1, 1}, 3, dtype(), 0.5);
  auto out = fused::residual(y, g, a);
  EXPECT_TRUE(fused::channels_last(out));
  EXPECT_EQ(out.scalar_type(), dtype());
  auto exact = f64(y) + f64(g) * f64(a);
  auto magnitude = f64(y).abs() + (f64(g) * f64(a)).abs();  // y + γa may cancel far below its terms
  // One rounding per term: ≤ 1 ulp of the larger term (LibTorch's own addcmul may contract to one FMA).
  expect_ulps("residual " + tag(), test::max_ulp_err(out, exact, magnitude), 1.0,
              test::max_ulp_err(torch::addcmul(y, g, a), exact, magnitude));
}

TEST_P(FusedKernels, LayerNormChannelsLastMatchesLayerNorm) {
  for (int64_t C : {64, 70, 8}) {
    // A mean far from zero next to unit spread: the variance must not cancel.
    auto x = cl(rnd({2, C, 6, 5}, 4, dtype(), 1.0, 3.0));
    auto w = rnd({C}, 5, dtype(), 0.5, 1.0), b = rnd({C}, 6, dtype(), 0.5);
    auto out = fused::layer_norm_channels_last(x, w, b, 1e-6);
    auto exact = layer_norm_ref(f64(x), f64(w), f64(b));
    // Output ≈ w·N(0, 1) + b: ulps of max(|exact|, 1).
    expect_ulps("layer_norm C=" + std::to_string(C) + " " + tag(), test::max_ulp_err(out, exact, 1.0),
                bf16() ? 1.0 : 16.0, test::max_ulp_err(layer_norm_ref(x, w, b), exact, 1.0));
  }
}

TEST_P(FusedKernels, ResidualLayerNormIsAddcmulThenLayerNorm) {
  const int64_t C = 96;
  auto y = cl(rnd({3, C, 4, 9}, 7, dtype())), a = cl(rnd({3, C, 4, 9}, 8, dtype()));
  auto g = rnd({1, C, 1, 1}, 9, dtype(), 0.5);
  auto w = rnd({C}, 10, dtype(), 0.5, 1.0), b = rnd({C}, 11, dtype(), 0.5);
  auto [u, n] = fused::residual_layer_norm(y, g, a, w, b, 1e-6);
  auto u_exact = f64(y) + f64(g) * f64(a);
  expect_ulps("residual_layer_norm sum " + tag(),
              test::max_ulp_err(u, u_exact, f64(y).abs() + (f64(g) * f64(a)).abs()), 1.0);
  // The normalised value is of the stored sum (as the separate ops compute it).
  auto n_exact = layer_norm_ref(f64(u), f64(w), f64(b));
  expect_ulps("residual_layer_norm norm " + tag(), test::max_ulp_err(n, n_exact, 1.0), bf16() ? 1.0 : 16.0,
              test::max_ulp_err(layer_norm_ref(u, w, b), n_exact, 1.0));
}

TEST_P(FusedKernels, DwconvResidualLayerNormIsPosThenNorm) {
  for (int64_t k : {3, 5}) {
    for (auto shape : {std::vector<int64_t>{2, 64, 7, 9}, std::vector<int64_t>{1, 24, 1, 5}, std::vector<int64_t>{3, 40, 12, 3}}) {
      const int64_t C = shape[1];
      auto x = cl(rnd(shape, 12, dtype()));
      auto wt = rnd({C, 1, k, k}, 13, dtype(), 0.3), bias = rnd({C}, 14, dtype(), 0.3);
      auto w = rnd({C}, 15, dtype(), 0.5, 1.0), b = rnd({C}, 16, dtype(), 0.5);
      auto [y, n] = fused::dwconv_residual_layer_norm(x, wt, bias, w, b, 1e-6);
      const std::string what = "k=" + std::to_string(k) + " C=" + std::to_string(C) + " " + tag();
      auto y_exact = f64(x) + dwconv_ref(f64(x), f64(wt), f64(bias));
      auto mag = dwconv_magnitude(f64(x), f64(wt), f64(bias));
      // k² + 2 terms summed in float32: ulps of Σ|terms| per element.
      expect_ulps("dwconv_residual " + what, test::max_ulp_err(y, y_exact, mag), bf16() ? 1.0 : 8.0,
                  test::max_ulp_err(x + dwconv_ref(x, wt, bias), y_exact, mag));
      auto n_exact = layer_norm_ref(f64(y), f64(w), f64(b));
      expect_ulps("dwconv_residual norm " + what, test::max_ulp_err(n, n_exact, 1.0), bf16() ? 1.0 : 16.0,
                  test::max_ulp_err(layer_norm_ref(y, w, b), n_exact, 1.0));
      // Without LayerNorm parameters only y.
      auto [y2, n2] = fused::dwconv_residual_layer_norm(x, wt, bias, {}, {}, 1e-6);
      EXPECT_FALSE(n2.defined());
      EXPECT_TRUE(torch::equal(y2, y));
    }
  }
}

TEST_P(FusedKernels, GeluDwconvResidualIsConvFfnMiddle) {
  for (auto shape : {std::vector<int64_t>{2, 224, 8, 8}, std::vector<int64_t>{1, 20, 3, 11}}) {
    const int64_t C = shape[1];
    auto h = cl(rnd(shape, 17, dtype(), 1.5));
    auto wt = rnd({C, 1, 3, 3}, 18, dtype(), 0.3), bias = rnd({C}, 19, dtype(), 0.3);
    auto u = fused::gelu_dwconv_residual(h, wt, bias);
    auto g = torch::gelu(f64(h));
    auto exact = dwconv_ref(g, f64(wt), f64(bias)) + g;
    auto mag = dwconv_magnitude(g, f64(wt), f64(bias));
    auto gl = torch::gelu(h);
    expect_ulps("gelu_dwconv_residual C=" + std::to_string(C) + " " + tag(), test::max_ulp_err(u, exact, mag),
                bf16() ? 1.0 : 8.0, test::max_ulp_err(dwconv_ref(gl, wt, bias) + gl, exact, mag));
  }
}

// The kernels' own GELU (fused_kernels.cpp: polynomial erf for |x| ≤ √2, e^(−z²)·R(z) beyond, no SLEEF erf) on a
// dense sweep of [−10, 10], the range boundaries and special values, through affine_ with scale 1 and shift 0 (exact),
// against GELU in float64. Bound: 2.5 ulps of |x| (measured 1.83 in the fit; LibTorch's own GELU reaches 4.2 on
// this sweep), and in bfloat16 the one rounding of the stored result.
TEST_P(FusedKernels, GeluIsExactGeluEverywhere) {
  auto sweep = torch::linspace(-10.0, 10.0, 400001, torch::kFloat64);
  const double sq2 = std::sqrt(2.0);
  auto edges = torch::tensor({0.0, -0.0, 1e-30, -1e-30, 1e-40, sq2, -sq2, std::nextafter(sq2, 0.0),
                              std::nextafter(sq2, 2.0), 4 * sq2, -4 * sq2, 4 * sq2 * (1 + 1e-7), -4 * sq2 * (1 + 1e-7),
                              30.0, -30.0, 1e30, -1e30},
                             torch::kFloat64);
  const int64_t C = 16;
  auto all = torch::cat({sweep, edges}).to(dtype());
  const int64_t n = all.numel() / C * C;
  auto x = cl(all.narrow(0, 0, n).view({n / C, 1, 1, C}).permute({0, 3, 1, 2}));
  auto y = x.clone(torch::MemoryFormat::ChannelsLast);
  fused::affine_(y, torch::ones({C}), torch::zeros({C}), /*gelu=*/true);
  auto exact = torch::gelu(f64(x));
  const double bound = bf16() ? 1.0 : 2.5;
  expect_ulps("gelu sweep " + tag(), test::max_ulp_err(y, exact, f64(x).abs()), bound,
              test::max_ulp_err(torch::gelu(x), exact, f64(x).abs()));
  // Special values: NaN propagates, +∞ stays +∞ (LibTorch's formula gives NaN for −∞, as ∞·0: so do we).
  auto sp = cl(torch::tensor({std::nanf(""), INFINITY, -INFINITY, 0.0f}).to(dtype()).view({1, 4, 1, 1}));
  fused::affine_(sp, torch::ones({4}), torch::zeros({4}), true);
  auto ref = torch::gelu(torch::tensor({std::nanf(""), INFINITY, -INFINITY, 0.0f}));
  auto got = sp.to(torch::kFloat32).flatten();
  EXPECT_TRUE(std::isnan(got[0].item<float>()));
  EXPECT_EQ(got[1].item<float>(), INFINITY);
  EXPECT_EQ(std::isnan(got[2].item<float>()), std::isnan(ref[2].item<float>()));
  EXPECT_EQ(got[3].item<float>(), 0.0f);
}

TEST_P(FusedKernels, AffineIsEvalBatchNormAndGelu) {
  const int64_t C = 48;
  torch::nn::BatchNorm2d bn(C);
  // Statistics representable in the test's dtype: the LibTorch reference below runs the module in that dtype (and
  // back), which must not change the values the kernel and the exact reference see.
  bn->running_mean.copy_(rnd({C}, 20, dtype()));
  bn->running_var.copy_((rnd({C}, 21, dtype()).abs() + 0.125).to(dtype()));
  bn->weight.copy_(rnd({C}, 22, dtype(), 0.5, 1.0));
  bn->bias.copy_(rnd({C}, 23, dtype(), 0.5));
  bn->eval();
  auto x = cl(rnd({2, C, 5, 6}, 24, dtype(), 2.0));
  // Exact eval BatchNorm; magnitude |x−mean|·|w|/σ + |b| (the result may cancel below its terms).
  auto sd = torch::sqrt(f64(bn->running_var) + bn->options.eps()).view({1, C, 1, 1});
  auto mean = f64(bn->running_mean).view({1, C, 1, 1}), w = f64(bn->weight).view({1, C, 1, 1}),
       b = f64(bn->bias).view({1, C, 1, 1});
  auto exact_bn = (f64(x) - mean) / sd * w + b;
  auto mag = (f64(x).abs() + mean.abs()) / sd * w.abs() + b.abs();
  for (bool gelu : {false, true}) {
    auto y = x.clone(torch::MemoryFormat::ChannelsLast);
    const auto [scale, shift] = fused::batch_norm_affine(*bn);
    fused::affine_(y, scale, shift, gelu);
    auto exact = gelu ? torch::gelu(exact_bn) : exact_bn;
    bn->to(dtype());
    auto ref_lt = bn->forward(x);
    bn->to(torch::kFloat32);
    if (gelu) ref_lt = torch::gelu(ref_lt);
    expect_ulps(std::string("affine") + (gelu ? "+gelu " : " ") + tag(), test::max_ulp_err(y, exact, mag),
                bf16() ? 1.0 : 4.0, test::max_ulp_err(ref_lt, exact, mag));
  }
}

// ---- attention -----------------------------------------------------------------------------------------------------

/// The fused layer (in `dtype`) and the same layer with the fused path off (LibTorch expressions, same dtype), both
/// measured against the layer in float64 on the same input, in ulps of the reference's largest magnitude; probes too.
/// Bound: the fused error ≤ `bound` ulps, and in bfloat16 ≤ LibTorch's own bfloat16 error + `bound` (the bfloat16
/// projections dominate both).
template <typename Layer>
void expect_layer_matches(Layer& layer, const torch::Tensor& x, torch::Dtype dtype, double bound,
                          const std::set<Probe>& probes, const std::string& what) {
  const int64_t hd = layer->dim() / layer->heads();
  auto run = [&](torch::Dtype dt, bool fused_on, ProbeCollector* sink) {
    layer->to(dt);
    const bool saved = fused::enabled();
    fused::set_enabled(fused_on);
    auto xi = x.to(dt);
    auto y = layer->forward(xi, AttentionContext::for_input(xi, hd, sink));
    fused::set_enabled(saved);
    return y;
  };
  ProbeCollector got(probes), lt(probes), want(probes);
  auto y = run(dtype, true, &got);
  EXPECT_TRUE(fused::channels_last(y));
  auto y_lt = run(dtype, false, &lt);
  auto ref = run(torch::kFloat64, false, &want);
  layer->to(torch::kFloat32);
  auto check = [&](const std::string& name, const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& r) {
    const double scale = max_abs(r);
    const double e = test::max_ulp_err(a, r, scale), e_lt = test::max_ulp_err(b, r, scale);
    expect_ulps(what + " " + name, e, dtype == torch::kBFloat16 ? e_lt + bound : bound, e_lt);
  };
  check("output", y, y_lt, ref);
  for (auto p : probes) {
    if (!want.has(p)) continue;
    ASSERT_TRUE(got.has(p)) << probe_name(p);
    check(probe_name(p), got.get(p), lt.get(p), want.get(p));
  }
}

struct RalaCase {
  int64_t C, heads, B, H, W;
  bool alpha, rope, gate, lepe;
};

TEST_P(FusedKernels, RalaMatchesUnfusedForEverySwitch) {
  const std::set<Probe> probes{Probe::kv_buffer, Probe::alpha, Probe::normalizer_z, Probe::output,
                               Probe::output_gated};
  // 17×19 = 323 tokens: two reduction chunks (256), the second partial; heads of width 32 and 16 (vector tails at 16).
  for (const auto& c : {RalaCase{64, 2, 2, 17, 19, true, true, true, true}, RalaCase{64, 4, 1, 7, 9, true, true, true, true},
                        RalaCase{32, 1, 3, 6, 5, false, true, true, true}, RalaCase{32, 2, 2, 6, 5, true, false, true, true},
                        RalaCase{32, 2, 2, 6, 5, true, true, false, true}, RalaCase{32, 2, 2, 6, 5, true, true, true, false},
                        RalaCase{32, 2, 2, 6, 5, false, false, false, false}}) {
    auto opts = AttentionOptions(c.C, c.heads).set("alpha", c.alpha).set("rope", c.rope).set("gate", c.gate).set("lepe", c.lepe);
    RalaAttention attn(opts);
    test::randomize(*attn, 25, 0.2);
    auto x = cl(rnd({c.B, c.C, c.H, c.W}, 26, dtype()));
    SCOPED_TRACE("C " + std::to_string(c.C) + " heads " + std::to_string(c.heads) + " alpha " + std::to_string(c.alpha) +
                 " rope " + std::to_string(c.rope) + " gate " + std::to_string(c.gate) + " lepe " + std::to_string(c.lepe));
    expect_layer_matches(attn, x, dtype(), 64.0, probes, "rala " + tag());
  }
}

TEST_P(FusedKernels, RalaLongSequenceUsesSlabsAndMatches) {
  // 4,480 tokens > the 4,096-token slab of the kv product: partial products summed.
  RalaAttention attn(AttentionOptions(16, 1));
  test::randomize(*attn, 27, 0.2);
  auto x = cl(rnd({1, 16, 70, 64}, 28, dtype()));
  expect_layer_matches(attn, x, dtype(), 64.0, {Probe::kv_buffer}, "rala 4480 tokens " + tag());
}

TEST_P(FusedKernels, SoftmaxMatchesUnfused) {
  const std::set<Probe> probes{Probe::attention, Probe::output, Probe::output_gated};
  for (bool rope : {true, false}) {
    for (bool gate : {true, false}) {
      SoftmaxAttention attn(AttentionOptions(64, 4).set("rope", rope).set("gate", gate));
      test::randomize(*attn, 29, 0.2);
      auto x = cl(rnd({2, 64, 7, 5}, 30, dtype()));
      SCOPED_TRACE("rope " + std::to_string(rope) + " gate " + std::to_string(gate));
      expect_layer_matches(attn, x, dtype(), 64.0, probes, "softmax " + tag());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Builds, FusedKernels,
                         ::testing::Combine(::testing::ValuesIn(fused::available_capabilities()),
                                            ::testing::Values(torch::kFloat32, torch::kBFloat16)),
                         param_name);

// ---- whole model ----------------------------------------------------------------------------------------------------

// The golden micro models (official weights and logits, tests/data): the whole RAVLT forward with every fused kernel
// (stem BatchNorm+GELU, patch-merging BatchNorm, pos+norm1, attention, residual+norm2, ConvFFN, residual) against the
// official fp32 logits, and the same model with the fused path off. Prints the bf16 deviations for the README.
TEST(FusedModel, GoldenMicroLogitsFusedAndUnfused) {
  torch::NoGradGuard no_grad;
  for (const auto& [file, pattern] : {std::make_pair("ravlt_micro_rrss.h5", "RRSS"),
                                      std::make_pair("ravlt_micro_rrrr.h5", "RRRR")}) {
    SCOPED_TRACE(pattern);
    Ravlt model(ravlt_micro().attn_pattern(pattern));
    test::load_state(*model, file);
    model->eval();
    auto x = test::golden(file, "input").to(torch::kFloat32);
    auto ref = test::golden(file, "logits").to(torch::kFloat64);
    const double scale = ref.abs().max().item<double>();
    auto logits = [&](torch::Dtype dt, bool fused_on) {
      const bool saved = fused::enabled();
      fused::set_enabled(fused_on);
      model->to(dt);
      auto y = model->forward(x.to(dt)).to(torch::kFloat64);
      model->to(torch::kFloat32);
      fused::set_enabled(saved);
      return y;
    };
    auto f32_on = logits(torch::kFloat32, true), f32_off = logits(torch::kFloat32, false);
    auto b16_on = logits(torch::kBFloat16, true), b16_off = logits(torch::kBFloat16, false);
    // The bf16 model's own exact logits: its bf16-rounded weights and input, evaluated in float64. Against it only the
    // rounding of the activations (what the kernels do) remains; against the official logits the weight rounding,
    // common to both paths, dominates.
    model->to(torch::kBFloat16);
    model->to(torch::kFloat64);
    auto exact16 = model->forward(x.to(torch::kBFloat16).to(torch::kFloat64));
    model->to(torch::kFloat32);
    const double d32_on = test::max_abs_err(f32_on, ref) / scale, d32_off = test::max_abs_err(f32_off, ref) / scale;
    const double d16_on = test::max_abs_err(b16_on, ref) / scale, d16_off = test::max_abs_err(b16_off, ref) / scale;
    const double a16_on = test::max_abs_err(b16_on, exact16) / scale,
                 a16_off = test::max_abs_err(b16_off, exact16) / scale;
    auto top1 = [&](const torch::Tensor& y) {
      return (y.argmax(-1) == ref.argmax(-1)).to(torch::kFloat64).mean().item<double>();
    };
    std::printf("golden micro %s: max|logit error|/max|logit| fp32 fused %.2e unfused %.2e; bf16 fused %.2e unfused "
                "%.2e (activation rounding alone: fused %.2e unfused %.2e); bf16 top-1 agreement fused %.0f %% "
                "unfused %.0f %%\n",
                pattern, d32_on, d32_off, d16_on, d16_off, a16_on, a16_off, 100 * top1(b16_on), 100 * top1(b16_off));
    // fp32: the fused model is the official model to float32 rounding (the golden tests' 1e-4 is 100× looser).
    EXPECT_LE(d32_on, 1e-5);
    EXPECT_FALSE(torch::equal(f32_on, f32_off));  // the fused path really ran (different rounding, same values)
    EXPECT_TRUE(std::isfinite(d16_on));
    EXPECT_LT(d16_on, 0.1);  // sanity (as Bench.Bf16LogitsOfTheGoldenMicroModel)
    EXPECT_GE(top1(b16_on), top1(b16_off));
  }
}

// ---- dispatch ------------------------------------------------------------------------------------------------------

TEST(FusedDispatch, ResultsDoNotDependOnTheThreadCount) {
  // The kernels' reductions run over token chunks fixed by N, summed in order: bit-identical for any thread count.
  // (The whole layer is not: the projections are LibTorch convolutions.) 1,200 tokens: 5 chunks.
  torch::NoGradGuard no_grad;
  auto all = cl(rnd({2, 256, 40, 30}, 32, torch::kFloat32, 0.5));
  auto t = rope_tables(32, 40, 30);
  auto lw = rnd({64, 1, 5, 5}, 33, torch::kFloat32, 0.2), lb = rnd({64}, 34, torch::kFloat32, 0.2);
  fused::RalaSwitches s;
  s.want_alpha = s.want_z = s.want_output = true;
  fused::RalaResult one, two;
  {
    ThreadsScope threads(1);
    one = fused::rala_attention(all, 64, 2, s, t.sin, t.cos, lw, lb, 1e-6);
  }
  {
    ThreadsScope threads(2);
    two = fused::rala_attention(all, 64, 2, s, t.sin, t.cos, lw, lb, 1e-6);
  }
  EXPECT_TRUE(torch::equal(one.y, two.y));
  EXPECT_TRUE(torch::equal(one.kv, two.kv));
  EXPECT_TRUE(torch::equal(one.alpha, two.alpha));
  EXPECT_TRUE(torch::equal(one.z, two.z));
  EXPECT_TRUE(torch::equal(one.output, two.output));
}

TEST(FusedDispatch, GradientsTakeTheLibTorchPathAndAgree) {
  // With grad mode on and parameters requiring grad, the layer records its graph with the LibTorch expressions: the
  // output is bit-identical to the switched-off path and gradients flow; without grad the fused output agrees.
  RalaAttention attn(AttentionOptions(32, 2));
  test::randomize(*attn, 33, 0.2);
  auto x = cl(rnd({2, 32, 6, 7}, 34, torch::kFloat32)).requires_grad_(true);
  auto ctx = AttentionContext::for_input(x, 16);
  auto y = attn->forward(x, ctx);
  EXPECT_TRUE(y.requires_grad());
  torch::Tensor y_off;
  {
    Unfused off;
    y_off = attn->forward(x, ctx);
  }
  EXPECT_TRUE(torch::equal(y, y_off));
  y.square().sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
  torch::NoGradGuard no_grad;
  auto y_fused = attn->forward(x.detach(), ctx);
  EXPECT_FALSE(y_fused.requires_grad());
  EXPECT_LE(test::max_ulp_err(y_fused, y.detach(), max_abs(y)), 64.0);
}

TEST(FusedDispatch, AppliesOnlyToCpuFloatWithoutGraph) {
  auto f = torch::ones({2, 3}), b = torch::ones({2, 3}, torch::kBFloat16), d = torch::ones({2, 3}, torch::kFloat64);
  EXPECT_TRUE(fused::applies({f, torch::Tensor()}));
  EXPECT_TRUE(fused::applies({b}));
  EXPECT_FALSE(fused::applies({d}));
  EXPECT_FALSE(fused::applies({f, b}));  // one dtype
  auto g = torch::ones({2, 3}).requires_grad_(true);
  EXPECT_FALSE(fused::applies({f, g}));
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(fused::applies({f, g}));
  }
  {
    Unfused off;
    EXPECT_FALSE(fused::applies({f}));
  }
  EXPECT_FALSE(fused::channels_last(torch::ones({2, 3, 4, 5})));
  EXPECT_TRUE(fused::channels_last(cl(torch::ones({2, 3, 4, 5}))));
}

TEST(FusedDispatch, CapabilitiesAndBadInput) {
  const auto caps = fused::available_capabilities();
  ASSERT_FALSE(caps.empty());
  EXPECT_EQ(caps.front(), "DEFAULT");
  EXPECT_NE(test::error_message([] { fused::set_capability("sse9"); }).find("CPU capability 'sse9' is not available here"),
            std::string::npos);
  torch::NoGradGuard no_grad;
  auto nchw = torch::ones({1, 8, 3, 3});
  EXPECT_NE(test::error_message([&] { fused::layer_norm_channels_last(nchw, {}, {}, 1e-6); }).find("must be channels-last"),
            std::string::npos);
  auto x = cl(torch::ones({1, 8, 3, 3}));
  EXPECT_NE(test::error_message([&] { fused::layer_norm_channels_last(x, torch::ones({7}), {}, 1e-6); })
                .find("weight must have 8 elements, got 7"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] { fused::gelu_dwconv_residual(x, torch::ones({8, 1, 2, 2}), {}); })
                .find("depthwise weight must be (C, 1, k, k) with odd k"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] {
              fused::rala_attention(cl(torch::ones({1, 30, 3, 3})), 8, 2, fused::RalaSwitches{}, {}, {}, {}, {}, 1e-6);
            }).find("the projection has 30 channels, expected 32"),
            std::string::npos);
}

}  // namespace
}  // namespace rala
