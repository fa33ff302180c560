// Each fused CPU kernel against the LibTorch expression it replaces, on RAVLT-T's shapes (batch 8, 224²), in one
// process: the ratio of the two rows of a pair is the kernel's gain. `/fused` rows run the kernel build the CPU
// supports best (RALA_CPU_CAPABILITY picks another), `/libtorch` rows the unfused expression. Also the GELU and erf
// alone, the largest element-wise cost of the ConvFFN.
//   RALA_THREADS=2 build/rala_bench_fused [--benchmark_filter=gelu]
#include <benchmark/benchmark.h>

#include "attention_variants/fused.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "benchmarks/bench_main.h"

namespace {

torch::Tensor map(int64_t B, int64_t C, int64_t H, torch::ScalarType dt = torch::kFloat32) {
  return torch::randn({B, C, H, H}).to(dt).contiguous(torch::MemoryFormat::ChannelsLast);
}

/// Stage arguments: (channels, side). RAVLT-T's ConvFFN hidden widths are 3.5 × (64, 128, 256, 512).
void stages(benchmark::internal::Benchmark* b, bool hidden) {
  const int64_t mult = hidden ? 7 : 2;  // hidden: 3.5·C = 7·C/2
  for (auto [c, s] : {std::pair<int64_t, int64_t>{32, 56}, {64, 28}, {128, 14}, {256, 7}})
    b->Args({c * mult, s});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.3);
}

void count(benchmark::State& state, const torch::Tensor& x) {
  state.counters["elements_per_s"] =
      benchmark::Counter(static_cast<double>(x.numel()), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_GeluDwconvResidual(benchmark::State& state, bool fused) {
  torch::NoGradGuard no_grad;
  const int64_t C = state.range(0), S = state.range(1);
  auto x = map(8, C, S);
  auto w = torch::randn({C, 1, 3, 3}) * 0.1, b = torch::randn({C});
  for (auto _ : state) {
    torch::Tensor y;
    if (fused) {
      y = rala::fused::gelu_dwconv_residual(x, w, b);
    } else {
      auto g = torch::gelu(x);
      y = g + torch::conv2d(g, w, b, 1, 1, 1, C);
    }
    benchmark::DoNotOptimize(y.data_ptr());
  }
  count(state, x);
}

void BM_DwconvResidualLayerNorm(benchmark::State& state, bool fused) {
  torch::NoGradGuard no_grad;
  const int64_t C = state.range(0), S = state.range(1);
  auto x = map(8, C, S);
  auto w = torch::randn({C, 1, 3, 3}) * 0.1, b = torch::randn({C});
  auto lw = torch::randn({C}), lb = torch::randn({C});
  for (auto _ : state) {
    torch::Tensor y, n;
    if (fused) {
      std::tie(y, n) = rala::fused::dwconv_residual_layer_norm(x, w, b, lw, lb, 1e-6);
    } else {
      y = x + torch::conv2d(x, w, b, 1, 1, 1, C);
      n = torch::layer_norm(y.permute({0, 2, 3, 1}), {C}, lw, lb, 1e-6).permute({0, 3, 1, 2});
    }
    benchmark::DoNotOptimize(n.data_ptr());
  }
  count(state, x);
}

void BM_RalaAttention(benchmark::State& state) {
  torch::NoGradGuard no_grad;
  const int64_t C = state.range(0), S = state.range(1), heads = C / 64 > 0 ? C / 64 : 1, d = C / heads;
  auto all = map(8, 4 * C, S);
  const int64_t N = S * S;
  auto sin = torch::randn({N, d}), cos = torch::randn({N, d});
  auto lw = torch::randn({C, 1, 5, 5}) * 0.1, lb = torch::randn({C});
  rala::fused::RalaSwitches sw;
  for (auto _ : state) {
    auto r = rala::fused::rala_attention(all, C, heads, sw, sin, cos, lw, lb, 1e-6);
    benchmark::DoNotOptimize(r.y.data_ptr());
  }
  count(state, all);
}

void BM_Gelu(benchmark::State& state) {
  torch::NoGradGuard no_grad;
  auto x = map(8, state.range(0), state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize(torch::gelu(x).data_ptr());
  count(state, x);
}

void BM_Erf(benchmark::State& state) {
  torch::NoGradGuard no_grad;
  auto x = map(8, state.range(0), state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize(torch::erf(x).data_ptr());
  count(state, x);
}

void BM_Add(benchmark::State& state) {
  torch::NoGradGuard no_grad;
  auto x = map(8, state.range(0), state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize((x + x).data_ptr());
  count(state, x);
}

/// The convolutions of the forward in fp32 and bf16 storage (oneDNN through LibTorch): (C_in, side, C_out, k),
/// channels-last, batch 8. Why bf16 does not pay here: these take more than half of the forward.
void BM_Conv(benchmark::State& state, torch::ScalarType dt) {
  torch::NoGradGuard no_grad;
  const int64_t Ci = state.range(0), S = state.range(1), Co = state.range(2), k = state.range(3);
  auto x = map(8, Ci, S, dt);
  auto w = (torch::randn({Co, Ci, k, k}) * 0.05).to(dt), b = torch::randn({Co}).to(dt);
  for (auto _ : state) benchmark::DoNotOptimize(torch::conv2d(x, w, b, 1, k / 2).data_ptr());
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * 8 * S * S * Ci * Co * k * k * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void conv_shapes(benchmark::internal::Benchmark* b) {
  for (auto [c, s] : {std::pair<int64_t, int64_t>{64, 56}, {128, 28}, {256, 14}, {512, 7}}) {
    b->Args({c, s, 4 * c, 1});  // qkvo projection
    b->Args({c, s, c * 7 / 2, 1});  // ConvFFN fc1
  }
  b->Args({32, 112, 32, 3});  // stem
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.3);
}

#if defined(__x86_64__) && defined(__GNUC__)
/// Peak multiply-adds of one core: 16 independent chains of 512-bit fp32 FMAs (16 MACs each) vs 512-bit AVX512-BF16
/// dot products (vdpbf16ps, 32 MACs each). Their ratio is the most any bf16 GEMM or convolution can gain here.
__attribute__((target("avx512f,avx512bf16"))) void BM_PeakMacs(benchmark::State& state, bool bf16) {
  if (!__builtin_cpu_supports("avx512f") || (bf16 && !__builtin_cpu_supports("avx512bf16"))) {
    state.SkipWithError("this CPU lacks the instruction");
    return;
  }
  __m512 acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_set1_ps(1e-3f * static_cast<float>(j));
  const __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  const __m512bh bx = _mm512_cvtne2ps_pbh(x, y), by = _mm512_cvtne2ps_pbh(y, x);
  constexpr int64_t kInner = 1 << 16;
  for (auto _ : state) {
    for (int64_t i = 0; i < kInner; ++i)
      for (int j = 0; j < 16; ++j) acc[j] = bf16 ? _mm512_dpbf16_ps(acc[j], bx, by) : _mm512_fmadd_ps(x, y, acc[j]);
    for (int j = 0; j < 16; ++j) benchmark::DoNotOptimize(acc[j]);
  }
  state.counters["GMAC/s"] = benchmark::Counter(static_cast<double>(kInner) * 16 * (bf16 ? 32 : 16) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
#endif

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__)
BENCHMARK_CAPTURE(BM_PeakMacs, fp32_fma, false)->Threads(1)->MinTime(0.3);
BENCHMARK_CAPTURE(BM_PeakMacs, bf16_dpbf16, true)->Threads(1)->MinTime(0.3);
#endif
BENCHMARK_CAPTURE(BM_Conv, fp32, torch::kFloat32)->Apply(conv_shapes);
BENCHMARK_CAPTURE(BM_Conv, bf16, torch::kBFloat16)->Apply(conv_shapes);
BENCHMARK_CAPTURE(BM_GeluDwconvResidual, fused, true)->Apply([](auto* b) { stages(b, true); });
BENCHMARK_CAPTURE(BM_GeluDwconvResidual, libtorch, false)->Apply([](auto* b) { stages(b, true); });
BENCHMARK_CAPTURE(BM_DwconvResidualLayerNorm, fused, true)->Apply([](auto* b) { stages(b, false); });
BENCHMARK_CAPTURE(BM_DwconvResidualLayerNorm, libtorch, false)->Apply([](auto* b) { stages(b, false); });
BENCHMARK(BM_RalaAttention)->Args({64, 56})->Args({128, 28})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.3);
BENCHMARK(BM_Gelu)->Apply([](auto* b) { stages(b, true); });
BENCHMARK(BM_Erf)->Apply([](auto* b) { stages(b, true); });
BENCHMARK(BM_Add)->Apply([](auto* b) { stages(b, true); });

int main(int argc, char** argv) { return rala::bench_main(argc, argv); }
