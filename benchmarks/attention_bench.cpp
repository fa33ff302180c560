// Forward time of each attention variant alone at N ∈ {196, 784, 3136, 12544} tokens (C = 64, one head, batch 1),
// so the linear vs quadratic growth is visible. Counters: tokens N and tokens/s.
//   build/rala_bench_attention [--benchmark_filter=rala] [--threads via RALA_THREADS env, default all cores]
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "attention_variants/registry.h"
#include "benchmarks/bench_main.h"

namespace {

void BM_AttentionForward(benchmark::State& state, rala::Variant variant) {
  const int64_t side = state.range(0), C = 64;
  torch::NoGradGuard no_grad;
  auto attn = rala::make_attention(variant, rala::AttentionOptions(C, 1));
  attn->eval();
  auto x = torch::randn({1, C, side, side});
  auto ctx = rala::AttentionContext::for_input(x, C);
  for (auto _ : state) {
    auto y = attn->forward(x, ctx);
    benchmark::DoNotOptimize(y.data_ptr<float>());
  }
  const double n = static_cast<double>(side * side);
  state.counters["N"] = n;
  state.counters["tokens_per_s"] = benchmark::Counter(n, benchmark::Counter::kIsIterationInvariantRate);
}

int register_all() {
  for (const auto& info : rala::kVariants) {
    auto* b = benchmark::RegisterBenchmark((std::string("forward/") + info.name).c_str(), BM_AttentionForward,
                                           info.variant);
    b->Arg(14)->Arg(28)->Arg(56)->Arg(112)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  return rala::bench_main(argc, argv);
}
