// Cost of rank analysis relative to the plain forward pass, measured in the same run: RAVLT-T (RRSS, random weights)
// at 224², batch 4, with the recorder attached for kv_buffer, output and output_gated (spectra, metrics and the HDF5
// writes included) vs without it. Goal (issue 16): at most +20 % with the default spectra (gram).
// BM_SpectraOnly times the float64 spectra of one batch's probes alone: the part no recorder design can avoid.
// BM_TridiagonalEigenvalues times the last step of the Gram path on one thread: tridiagonal.h's interleaved dsterf
// against LAPACK's dsterf (what dsyevd would run), on the same probes' tridiagonal forms.
// The second name part is the spectra method (gram: Gram matrix + dsyevd, the default; exact: QR + dgesdd).
//   build/rala_bench_rank [--benchmark_repetitions=3]   (threads: RALA_THREADS, default all cores)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "analysis/lapack.h"
#include "analysis/probe_recorder.h"
#include "analysis/spectrum.h"
#include "analysis/tridiagonal.h"
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

/// The (K, m, n) probe stacks of one batch (kv_buffer, output, output_gated of every attention layer), captured once
/// from a real forward.
const std::vector<torch::Tensor>& captured_stacks() {
  static const std::vector<torch::Tensor> stacks = [] {
    torch::NoGradGuard no_grad;
    auto x = torch::randn({4, 3, 224, 224});
    std::vector<std::unique_ptr<rala::ProbeCollector>> sinks;
    model().set_probe_sinks([&](int64_t, int64_t) {
      sinks.push_back(std::make_unique<rala::ProbeCollector>(kIssueProbes));
      return sinks.back().get();
    });
    model().forward(x);
    model().set_probe_sinks(nullptr);
    std::vector<torch::Tensor> out;
    for (const auto& sink : sinks)
      for (auto p : kIssueProbes)
        if (sink->has(p)) {
          const auto& v = sink->get(p);  // (B, heads, m, n)
          out.push_back(v.reshape({-1, v.size(2), v.size(3)}).clone());
        }
    return out;
  }();
  return stacks;
}

// The floor of the recorder: only the float64 spectra (batched_spectra, BLAS/LAPACK) of the same probes of one batch
// — no metrics, no HDF5, no probe hand-over.
void BM_SpectraOnly(benchmark::State& state, rala::SpectraMethod method) {
  const auto& stacks = captured_stacks();
  int64_t matrices = 0;
  for (auto _ : state)
    for (const auto& m : stacks) matrices += static_cast<int64_t>(rala::batched_spectra(m, method).size());
  state.counters["matrices_per_batch"] = static_cast<double>(matrices) / static_cast<double>(state.iterations());
}

/// The last step of the Gram path alone, on one thread: the eigenvalues of the symmetric tridiagonal forms (dsytrd)
/// of one batch's probe Gram matrices, by tridiagonal_eigenvalues (dsterf's iteration, several matrices interleaved:
/// what singular_values_gram_batched runs) or by LAPACK's own dsterf one matrix at a time (what dsyevd runs).
struct Tridiagonals {
  int k = 0;
  int64_t count = 0;
  std::vector<double> d, e;
};

const std::vector<Tridiagonals>& probe_tridiagonals() {
  static const std::vector<Tridiagonals> all = [] {
    std::vector<Tridiagonals> out;
    for (const auto& stack : captured_stacks()) {
      auto a = stack.to(torch::kFloat64);
      auto g = (a.size(1) >= a.size(2) ? torch::matmul(a.transpose(1, 2), a) : torch::matmul(a, a.transpose(1, 2)))
                   .contiguous();  // (K, k, k), symmetric: row-major = column-major
      Tridiagonals t;
      t.k = static_cast<int>(g.size(1));
      t.count = g.size(0);
      t.d.resize(static_cast<size_t>(t.count * t.k));
      t.e.resize(static_cast<size_t>(t.count * t.k));
      std::vector<double> tau(std::max(1, t.k - 1)), work(static_cast<size_t>(64) * t.k);
      const int lwork = static_cast<int>(work.size());
      for (int64_t i = 0; i < t.count; ++i) {
        int info = 0;
        dsytrd_("U", &t.k, g[i].data_ptr<double>(), &t.k, t.d.data() + i * t.k, t.e.data() + i * t.k, tau.data(),
                work.data(), &lwork, &info, 1);
        if (info != 0) throw std::runtime_error("dsytrd failed");
      }
      out.push_back(std::move(t));
    }
    return out;
  }();
  return all;
}

void BM_TridiagonalEigenvalues(benchmark::State& state, bool interleaved) {
  const auto& all = probe_tridiagonals();
  int64_t matrices = 0;
  std::vector<double> d, e;
  std::vector<int> info;
  for (auto _ : state) {
    for (const auto& t : all) {
      d = t.d;
      e = t.e;
      info.assign(static_cast<size_t>(t.count), 0);
      if (interleaved) {
        rala::tridiagonal_eigenvalues(t.count, t.k, d.data(), e.data(), info.data());
      } else {
        for (int64_t i = 0; i < t.count; ++i) dsterf_(&t.k, d.data() + i * t.k, e.data() + i * t.k, &info[i]);
      }
      benchmark::DoNotOptimize(d.data());
      matrices += t.count;
    }
  }
  // Seconds per matrix (printed with an SI prefix: 20u = 20 µs).
  state.counters["time_per_matrix"] =
      benchmark::Counter(static_cast<double>(matrices), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

BENCHMARK(BM_Forward)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
// Arg: 0 = kv_buffer + output + output_gated (the issue's configuration), 1/2/3 = one probe alone.
BENCHMARK_CAPTURE(BM_ForwardWithRankAnalysis, gram, rala::SpectraMethod::gram)
    ->Arg(0)->Arg(1)->Arg(2)->Arg(3)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_ForwardWithRankAnalysis, exact, rala::SpectraMethod::exact)
    ->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_SpectraOnly, gram, rala::SpectraMethod::gram)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_SpectraOnly, exact, rala::SpectraMethod::exact)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_TridiagonalEigenvalues, interleaved, true)->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK_CAPTURE(BM_TridiagonalEigenvalues, lapack_dsterf, false)->Unit(benchmark::kMillisecond)->MinTime(1.0);

}  // namespace

int main(int argc, char** argv) { return rala::bench_main(argc, argv); }
