// Each fused CPU kernel against the LibTorch expression it replaces, on RAVLT-T's shapes (batch 8, 224²), in one
// process: the ratio of the two rows of a pair is the kernel's gain. `/fused` rows run the kernel build the CPU
// supports best (RALA_CPU_CAPABILITY picks another), `/libtorch` rows the unfused expression. Also the GELU and erf
// alone, the largest element-wise cost of the ConvFFN.
//   RALA_THREADS=2 build/rala_bench_fused [--benchmark_filter=gelu]
#include <benchmark/benchmark.h>

#include "attention_variants/fused.h"
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

}  // namespace

BENCHMARK_CAPTURE(BM_GeluDwconvResidual, fused, true)->Apply([](auto* b) { stages(b, true); });
BENCHMARK_CAPTURE(BM_GeluDwconvResidual, libtorch, false)->Apply([](auto* b) { stages(b, true); });
BENCHMARK_CAPTURE(BM_DwconvResidualLayerNorm, fused, true)->Apply([](auto* b) { stages(b, false); });
BENCHMARK_CAPTURE(BM_DwconvResidualLayerNorm, libtorch, false)->Apply([](auto* b) { stages(b, false); });
BENCHMARK(BM_RalaAttention)->Args({64, 56})->Args({128, 28})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.3);
BENCHMARK(BM_Gelu)->Apply([](auto* b) { stages(b, true); });
BENCHMARK(BM_Erf)->Apply([](auto* b) { stages(b, true); });
BENCHMARK(BM_Add)->Apply([](auto* b) { stages(b, true); });

int main(int argc, char** argv) { return rala::bench_main(argc, argv); }
