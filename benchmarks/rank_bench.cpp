// Cost of rank analysis relative to the plain forward pass, measured in the same run: RAVLT-T (RRSS, random weights)
// at 224², batch 4, with the recorder attached for kv_buffer, output and output_gated (spectra, metrics and the HDF5
// writes included) vs without it. Goal (issue 16): at most +20 % with the default spectra (gram).
// BM_SpectraOnly times the float64 spectra of one batch's probes alone: the part no recorder design can avoid.
// The second name part is the spectra method (gram: Gram matrix + dsyevd, the default; exact: QR + dgesdd).
//   build/rala_bench_rank [--benchmark_repetitions=3]   (threads: RALA_THREADS, default all cores)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>

#include "analysis/probe_recorder.h"
#include "analysis/spectrum.h"
#include "attention_variants/registry.h"
#include "benchmarks/bench_main.h"
#include "models/presets.h"

namespace {

/// The probes of issue 4's configuration.
const std::set<rala::Probe> kIssueProbes{rala::Probe::kv_buffer, rala::Probe::output, rala::Probe::output_gated};

rala::AnyModel& model() {
  static rala::AnyModel m("ravlt_t", "RRSS");
  static bool once = [] {
    m.module()->eval();
    return true;
  }();
  (void)once;
  return m;
}

void BM_Forward(benchmark::State& state) {
  torch::NoGradGuard no_grad;
  auto x = torch::randn({4, 3, 224, 224});
  for (auto _ : state) benchmark::DoNotOptimize(model().forward(x).data_ptr<float>());
  state.counters["images_per_s"] = benchmark::Counter(4, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_ForwardWithRankAnalysis(benchmark::State& state, rala::SpectraMethod method) {
  torch::NoGradGuard no_grad;
  auto x = torch::randn({4, 3, 224, 224});
  std::vector<rala::RecorderLayer> layers;
  for (const auto& l : model().attention_layers())
    layers.push_back({l.name(), l.stage, l.block, rala::variant_info(l.variant).name, l.heads, l.head_dim, l.settings});
  const auto path = (std::filesystem::temp_directory_path() / "rala_bench_rank.h5").string();
  {
    rala::h5::File file(path, rala::h5::Mode::truncate);
    std::set<rala::Probe> probes;
    const int64_t which = state.range(0);  // 0: the three probes; 1: kv_buffer; 2: output; 3: output_gated
    if (which == 0 || which == 1) probes.insert(rala::Probe::kv_buffer);
    if (which == 0 || which == 2) probes.insert(rala::Probe::output);
    if (which == 0 || which == 3) probes.insert(rala::Probe::output_gated);
    rala::ProbeRecorder rec(layers, rala::RecorderOptions().probes(probes).spectra(method), &file);
    model().set_probe_sinks([&](int64_t s, int64_t b) { return rec.sink(s, b); });
    for (auto _ : state) {
      benchmark::DoNotOptimize(model().forward(x).data_ptr<float>());
      rec.flush_batch(4);
    }
    model().set_probe_sinks(nullptr);
  }
  std::filesystem::remove(path);
  state.counters["images_per_s"] = benchmark::Counter(4, benchmark::Counter::kIsIterationInvariantRate);
}

// The floor of the recorder: only the float64 spectra (batched_spectra, BLAS/LAPACK) of the same probes of one batch
// — no metrics, no HDF5, no probe hand-over. Probes are captured once from a real forward.
void BM_SpectraOnly(benchmark::State& state, rala::SpectraMethod method) {
  torch::NoGradGuard no_grad;
  auto x = torch::randn({4, 3, 224, 224});
  std::vector<std::unique_ptr<rala::ProbeCollector>> sinks;
  model().set_probe_sinks([&](int64_t, int64_t) {
    sinks.push_back(std::make_unique<rala::ProbeCollector>(kIssueProbes));
    return sinks.back().get();
  });
  model().forward(x);
  model().set_probe_sinks(nullptr);
  std::vector<torch::Tensor> stacks;
  for (const auto& sink : sinks)
    for (auto p : kIssueProbes)
      if (sink->has(p)) {
        const auto& v = sink->get(p);  // (B, heads, m, n)
        stacks.push_back(v.reshape({-1, v.size(2), v.size(3)}));
      }
  int64_t matrices = 0;
  for (auto _ : state)
    for (const auto& m : stacks) matrices += static_cast<int64_t>(rala::batched_spectra(m, method).size());
  state.counters["matrices_per_batch"] = static_cast<double>(matrices) / static_cast<double>(state.iterations());
}

BENCHMARK(BM_Forward)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
// Arg: 0 = kv_buffer + output + output_gated (the issue's configuration), 1/2/3 = one probe alone.
BENCHMARK_CAPTURE(BM_ForwardWithRankAnalysis, gram, rala::SpectraMethod::gram)
    ->Arg(0)->Arg(1)->Arg(2)->Arg(3)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_ForwardWithRankAnalysis, exact, rala::SpectraMethod::exact)
    ->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_SpectraOnly, gram, rala::SpectraMethod::gram)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_SpectraOnly, exact, rala::SpectraMethod::exact)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace

int main(int argc, char** argv) { return rala::bench_main(argc, argv); }
