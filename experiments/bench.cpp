#include "experiments/bench.h"

#include <CLI/CLI.hpp>
#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "attention_variants/fused.h"
#include "attention_variants/registry.h"
#include "experiments/device.h"
#include "experiments/runtime.h"
#include "models/presets.h"

namespace rala {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// A value in kB from a /proc status-like file ("VmHWM:   1234 kB"), in MB.
double proc_kb_field(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0 || line.size() <= key.size() || line[key.size()] != ':') continue;
    try {
      return std::stod(line.substr(key.size() + 1)) / 1024.0;
    } catch (const std::exception&) {
      return kNaN;
    }
  }
  return kNaN;
}

torch::Dtype parse_dtype(const std::string& d) {
  if (d == "fp32" || d == "float32") return torch::kFloat32;
  if (d == "bf16" || d == "bfloat16") return torch::kBFloat16;
  TORCH_CHECK(false, "--dtype must be fp32 or bf16, got '", d, "'");
}

int64_t dtype_bytes(torch::Dtype d) { return d == torch::kBFloat16 ? 2 : 4; }

/// Median and 95th percentile (nearest rank) of a sample, in the sample's unit.
std::pair<double, double> median_p95(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  const size_t rank = static_cast<size_t>(std::ceil(0.95 * static_cast<double>(n)));
  return {median, v[std::max<size_t>(rank, 1) - 1]};
}

double resolve_limit(double limit_mb) {
  if (limit_mb > 0) return limit_mb;
  const double avail = available_memory_mb();
  return std::isfinite(avail) ? 0.6 * avail : 8192.0;
}

/// Bytes the softmax attention maps of a RAVLT model need at their largest (inference: the two (B, h, N, N) maps of
/// the worst layer alive at once; training: every softmax layer keeps ~3 maps for the backward pass).
double softmax_map_mb(const AnyModel& model, int64_t batch, int64_t side, torch::Dtype dtype, bool train) {
  double worst = 0, total = 0;
  for (const auto& l : model.attention_layers()) {
    if (l.variant != Variant::softmax) continue;
    int64_t n = 0;
    if (model.is_ravlt()) {
      const int64_t s = (side + 3) / 4 >> l.stage;  // grid side after the stem and l.stage downsamplings (≈)
      n = std::max<int64_t>(1, s) * std::max<int64_t>(1, s);
    } else {
      const int64_t g = side / model_stride(model);
      n = g * g;
    }
    const double map = static_cast<double>(batch) * l.heads * static_cast<double>(n) * n * dtype_bytes(dtype);
    worst = std::max(worst, 2 * map);
    total += 3 * map;
  }
  return (train ? total : worst) / (1024.0 * 1024.0);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Process facts
// ------------------------------------------------------------------------------------------------

void release_free_memory() { malloc_trim(0); }

bool reset_peak_memory() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

double peak_memory_mb() { return proc_kb_field("/proc/self/status", "VmHWM"); }
double resident_memory_mb() { return proc_kb_field("/proc/self/status", "VmRSS"); }
double available_memory_mb() { return proc_kb_field("/proc/meminfo", "MemAvailable"); }

double measure_gemm_gflops(int64_t n, int reps, const std::string& device_spec) {
  TORCH_CHECK(n > 0 && reps > 0, "GEMM size and repetitions must be positive, got ", n, " and ", reps);
  const torch::Device device(device_spec);
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  auto a = torch::randn({n, n}, gen, torch::kFloat32).to(device), b = torch::randn({n, n}, gen, torch::kFloat32).to(device);
  auto c = torch::empty({n, n}, a.options());
  torch::mm_out(c, a, b);  // warm-up (pages, thread pools, GPU kernels)
  synchronize(device);
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    torch::mm_out(c, a, b);
    synchronize(device);
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * static_cast<double>(n) * n * n / best / 1e9;
}

double fit_loglog_slope(const std::vector<double>& x, const std::vector<double>& y) {
  TORCH_CHECK(x.size() == y.size(), "slope fit: ", x.size(), " x values but ", y.size(), " y values");
  TORCH_CHECK(x.size() >= 2, "slope fit needs at least two points, got ", x.size());
  double sx = 0, sy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    TORCH_CHECK(x[i] > 0 && y[i] > 0 && std::isfinite(x[i]) && std::isfinite(y[i]),
                "slope fit needs positive finite values, got (", x[i], ", ", y[i], ")");
    sx += std::log(x[i]);
    sy += std::log(y[i]);
  }
  const double n = static_cast<double>(x.size()), mx = sx / n, my = sy / n;
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double dx = std::log(x[i]) - mx;
    sxx += dx * dx;
    sxy += dx * (std::log(y[i]) - my);
  }
  TORCH_CHECK(sxx > 0, "slope fit needs at least two distinct x values");
  return sxy / sxx;
}

// ------------------------------------------------------------------------------------------------
// Checks
// ------------------------------------------------------------------------------------------------

std::vector<int64_t> parse_image_sizes(const std::string& list) {
  std::vector<int64_t> sizes;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TORCH_CHECK(used == item.size() && !item.empty(), "--image-size expects a comma list of positive integers, got '",
                item, "' in '", list, "'");
    TORCH_CHECK(v > 0, "--image-size entries must be positive, got ", v);
    sizes.push_back(v);
  }
  TORCH_CHECK(!sizes.empty(), "--image-size expects a comma list of positive integers, got '", list, "'");
  return sizes;
}

int64_t model_stride(const AnyModel& model) {
  if (model.is_ravlt()) {
    auto& m = const_cast<AnyModel&>(model).ravlt();
    return int64_t{4} << (m->options().embed_dims().size() - 1);
  }
  return const_cast<AnyModel&>(model).deit()->options().patch_size();
}

void check_bench_config(const BenchConfig& c) {
  TORCH_CHECK(c.batch > 0, "--batch-size must be positive, got ", c.batch);
  TORCH_CHECK(!c.image_sizes.empty(), "--image-size needs at least one size");
  for (auto s : c.image_sizes) TORCH_CHECK(s > 0, "--image-size entries must be positive, got ", s);
  TORCH_CHECK(c.warmup >= 0, "--warmup must be >= 0, got ", c.warmup);
  TORCH_CHECK(c.iters > 0, "--iters must be positive, got ", c.iters);
  TORCH_CHECK(c.rounds > 0, "--rounds must be positive, got ", c.rounds);
  TORCH_CHECK(c.gemm_size > 0, "--gemm-size must be positive, got ", c.gemm_size);
  TORCH_CHECK(c.mode == "infer" || c.mode == "train", "--mode must be infer or train, got '", c.mode, "'");
  parse_dtype(c.dtype);
  std::vector<std::string> patterns = c.patterns;
  if (patterns.empty()) patterns.push_back("");
  for (const auto& p : patterns) {
    AnyModel m(c.model, p, c.settings);  // validates preset, pattern and settings
    const int64_t stride = model_stride(m);
    for (auto s : c.image_sizes) {
      TORCH_CHECK(s >= stride, "--image-size ", s, " is smaller than the total stride of ", m.preset(), " (", stride,
                  "); use at least ", stride);
      if (!m.is_ravlt())
        TORCH_CHECK(s == m.default_image_size(), "--image-size ", s, ": ", m.preset(),
                    " has a fixed position embedding for ", m.default_image_size(), "²; use ",
                    m.default_image_size());
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Model benchmark
// ------------------------------------------------------------------------------------------------

ResultsTable make_bench_table() {
  ResultsTable t;
  using K = ColumnKind;
  t.add_column("model", K::text, "", "model preset")
      .add_column("pattern", K::text, "", "attention letter per stage")
      .add_column("mode", K::text, "", "infer (forward, no autograd) or train (forward, cross-entropy, backward, SGD)")
      .add_column("dtype", K::text, "", "fp32 or bf16 (weights and input)")
      .add_column("device", K::text, "", "device")
      .add_column("commit", K::text, "", "git commit of the binary")
      .add_column("threads", K::integer, "", "LibTorch intra-op threads (OpenBLAS set to the same)")
      .add_column("batch", K::integer, "images", "images per iteration")
      .add_column("image_size", K::integer, "px", "input side (square)")
      .add_column("images_per_s", K::number, "images/s", "batch / median latency")
      .add_column("latency_median_ms", K::number, "ms", "median time of one iteration (a batch)")
      .add_column("latency_p95_ms", K::number, "ms", "95th percentile (nearest rank) of the iteration time")
      .add_column("peak_memory_mb", K::number, "MiB",
                  "resident high-water (VmHWM) of the process during this configuration alone (reset via "
                  "/proc/self/clear_refs before it), model and runtime included; on a GPU the peak of LibTorch's "
                  "CUDA caching allocator")
      .add_column("gmacs", K::number, "GMACs", "multiply-accumulates of one image's forward (models/macs, with matmuls)")
      .add_column("gflops", K::number, "GFLOP/s",
                  "achieved: 2·MACs·batch / median latency (train: 3× the forward MACs, backward ≈ 2× forward)")
      .add_column("gemm_gflops", K::number, "GFLOP/s",
                  "fp32 square GEMM rate measured in this process, on the same device, before the run")
      .add_column("gemm_ratio", K::number, "", "gflops / gemm_gflops")
      .add_column("baseline_memory_mb", K::number, "MiB", "resident size before the model was built")
      .add_column("blas_threads", K::integer, "", "OpenBLAS threads during the model's iterations (GEMM reference: threads)")
      .add_column("iters", K::integer, "", "timed iterations per round")
      .add_column("rounds", K::integer, "", "rounds; the reported one has the best gemm_ratio")
      .add_column("status", K::text, "", "ok, or why the configuration was skipped");
  return t;
}

namespace {

struct RoundResult {
  double median_ms = kNaN, p95_ms = kNaN, gemm = kNaN;
};

}  // namespace

void run_model_bench(const BenchConfig& c, ResultsTable& table, std::ostream& log) {
  check_bench_config(c);
  const auto dtype = parse_dtype(c.dtype);
  const bool train = c.mode == "train";
  const int threads = at::get_num_threads();
  const int blas_threads = c.blas_threads > 0 ? static_cast<int>(c.blas_threads) : threads;
  set_blas_threads(blas_threads);
  const torch::Device device = run_device();
  const double limit = resolve_limit(c.memory_limit_mb);
  std::vector<std::string> patterns = c.patterns;
  if (patterns.empty()) patterns.push_back("");
  for (const auto& pattern : patterns) {
    for (const int64_t size : c.image_sizes) {
      release_free_memory();  // what earlier configurations freed does not count towards this one
      const double baseline = resident_memory_mb();
      const bool scoped = reset_peak_memory();
      reset_device_peak(device);
      torch::manual_seed(c.seed);
      AnyModel model(c.model, pattern, c.settings);
      const double gmacs = static_cast<double>(model.macs(size, size).with_matmuls) / 1e9;
      std::map<std::string, TableValue> row{{"model", model.preset()},
                                            {"pattern", model.pattern()},
                                            {"mode", c.mode},
                                            {"dtype", c.dtype},
                                            {"device", device_string(device)},
                                            {"commit", git_commit()},
                                            {"threads", int64_t{threads}},
                                            {"batch", c.batch},
                                            {"image_size", size},
                                            {"gmacs", gmacs},
                                            {"baseline_memory_mb", baseline},
                                            {"iters", c.iters},
                                            {"blas_threads", int64_t{blas_threads}},
                                            {"rounds", c.rounds}};
      const double need = softmax_map_mb(model, c.batch, size, dtype, train);
      if (need > limit) {
        row["status"] = "skipped: softmax maps need ~" + fmt("%.0f", need) + " MiB > limit " + fmt("%.0f", limit) +
                        " MiB";
        table.add_row(row);
        if (!c.quiet)
          log << "bench " << model.preset() << " " << model.pattern() << " " << size << "²: "
              << std::get<std::string>(row["status"]) << "\n";
        continue;
      }
      model.module()->to(device, dtype);
      model.module()->train(train);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(c.seed + 1);
      auto x = torch::randn({c.batch, 3, size, size}, gen, torch::kFloat32).to(device, dtype);
      const int64_t classes =
          model.is_ravlt() ? model.ravlt()->options().num_classes() : model.deit()->options().num_classes();
      auto labels = torch::randint(classes, {c.batch}, gen, torch::kInt64).to(device);
      std::unique_ptr<torch::optim::SGD> sgd;
      if (train) sgd = std::make_unique<torch::optim::SGD>(model.module()->parameters(),
                                                           torch::optim::SGDOptions(1e-4).momentum(0.9));
      auto step = [&] {
        if (train) {
          sgd->zero_grad();
          auto loss = torch::nn::functional::cross_entropy(model.forward(x).to(torch::kFloat32), labels);
          loss.backward();
          sgd->step();
        } else {
          c10::InferenceMode guard;
          auto y = model.forward(x);
          (void)y;
        }
      };
      for (int64_t i = 0; i < c.warmup; ++i) step();
      synchronize(device);
      RoundResult best;
      double best_ratio = -1;
      const double flop_per_iter = 2.0 * gmacs * 1e9 * static_cast<double>(c.batch) * (train ? 3.0 : 1.0);
      for (int64_t r = 0; r < c.rounds; ++r) {
        RoundResult rr;
        set_blas_threads(threads);  // the machine's rate: OpenBLAS on every thread
        rr.gemm = measure_gemm_gflops(c.gemm_size, 3, device.str());
        set_blas_threads(blas_threads);
        std::vector<double> ms;
        for (int64_t i = 0; i < c.iters; ++i) {
          auto t0 = Clock::now();
          step();
          synchronize(device);  // a GPU's queued kernels belong to this iteration
          ms.push_back(1e3 * seconds_since(t0));
        }
        std::tie(rr.median_ms, rr.p95_ms) = median_p95(ms);
        const double ratio = flop_per_iter / (rr.median_ms * 1e-3) / 1e9 / rr.gemm;
        if (ratio > best_ratio) {
          best_ratio = ratio;
          best = rr;
        }
      }
      if (!c.trace.empty()) {
        // One more iteration under LibTorch's profiler: a Chrome trace of every op (chrome://tracing, Perfetto).
        const std::string path = c.trace + "." + model.pattern() + "." + std::to_string(size) + ".json";
        {
          torch::autograd::profiler::RecordProfile guard(path);
          step();
        }
        if (!c.quiet) log << "trace of one iteration: " << path << "\n";
      }
      const double gflops = flop_per_iter / (best.median_ms * 1e-3) / 1e9;
      row["images_per_s"] = static_cast<double>(c.batch) / (best.median_ms * 1e-3);
      row["latency_median_ms"] = best.median_ms;
      row["latency_p95_ms"] = best.p95_ms;
      const double peak = device.is_cuda() ? static_cast<double>(device_peak_bytes(device)) / (1024.0 * 1024.0)
                                           : peak_memory_mb();
      row["peak_memory_mb"] = peak;
      row["gflops"] = gflops;
      row["gemm_gflops"] = best.gemm;
      row["gemm_ratio"] = gflops / best.gemm;
      row["status"] = std::string(scoped ? "ok" : "ok (peak memory since process start: clear_refs refused)");
      table.add_row(row);
      if (!c.quiet)
        log << "bench " << model.preset() << " " << model.pattern() << " " << c.mode << " " << c.dtype << " "
            << size << "² batch " << c.batch << ": " << fmt("%.2f", std::get<double>(row["images_per_s"]))
            << " images/s, " << fmt("%.1f", gflops) << " GFLOP/s = " << fmt("%.1f", 100 * gflops / best.gemm)
            << " % of GEMM " << fmt("%.1f", best.gemm) << ", peak " << fmt("%.0f", peak) << " MiB"
            << (device.is_cuda() ? " on " + device_string(device) : std::string()) << "\n";
    }
  }
}

std::string bench_markdown(const ResultsTable& t) {
  std::ostringstream out;
  out << "| model | pattern | mode | dtype | threads | batch | image | images/s | median ms | p95 ms | peak MiB | GMACs "
         "| GFLOP/s | GEMM GFLOP/s | ratio | status |\n"
      << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (int64_t r = 0; r < t.rows(); ++r) {
    auto num = [&](const char* col, const char* f) {
      const double v = t.column(col).numbers[r];
      return std::isfinite(v) ? fmt(f, v) : std::string("-");
    };
    out << "| " << t.cell_text("model", r) << " | " << t.cell_text("pattern", r) << " | " << t.cell_text("mode", r)
        << " | " << t.cell_text("dtype", r) << " | " << t.cell_text("threads", r) << " | " << t.cell_text("batch", r)
        << " | " << t.cell_text("image_size", r) << "² | " << num("images_per_s", "%.2f") << " | "
        << num("latency_median_ms", "%.1f") << " | " << num("latency_p95_ms", "%.1f") << " | "
        << num("peak_memory_mb", "%.0f") << " | " << num("gmacs", "%.3f") << " | " << num("gflops", "%.1f")
        << " | " << num("gemm_gflops", "%.1f") << " | "
        << (std::isfinite(t.column("gemm_ratio").numbers[r]) ? fmt("%.1f %%", 100 * t.column("gemm_ratio").numbers[r])
                                                              : std::string("-"))
        << " | " << t.cell_text("status", r) << " |\n";
  }
  return out.str();
}

// ------------------------------------------------------------------------------------------------
// Attention alone
// ------------------------------------------------------------------------------------------------

ResultsTable make_attention_bench_table() {
  ResultsTable t;
  using K = ColumnKind;
  t.add_column("variant", K::text, "", "attention variant (registry name)")
      .add_column("tokens", K::integer, "", "N = side²")
      .add_column("channels", K::integer, "", "C")
      .add_column("time_ms", K::number, "ms", "median forward time of one layer, batch 1")
      .add_column("peak_memory_mb", K::number, "MiB",
                  "resident high-water (VmHWM) during this measurement alone (reset via /proc/self/clear_refs)")
      .add_column("heads", K::integer, "", "heads")
      .add_column("side", K::integer, "", "grid side")
      .add_column("dtype", K::text, "", "fp32 or bf16")
      .add_column("device", K::text, "", "device")
      .add_column("commit", K::text, "", "git commit of the binary")
      .add_column("threads", K::integer, "", "LibTorch intra-op threads")
      .add_column("loglog_slope", K::number, "", "least-squares slope of log time vs log N over this variant's rows")
      .add_column("status", K::text, "", "ok, or why the size was skipped");
  return t;
}

std::map<std::string, double> run_attention_bench(const AttentionBenchConfig& c, ResultsTable& table,
                                                  std::ostream& log) {
  TORCH_CHECK(c.channels > 0 && c.heads > 0 && c.channels % c.heads == 0, "attention bench: channels (", c.channels,
              ") must be a positive multiple of heads (", c.heads, ")");
  TORCH_CHECK(c.iters > 0 && c.warmup >= 0, "attention bench: --iters must be positive and --warmup >= 0");
  for (auto s : c.sides) TORCH_CHECK(s > 0, "attention bench: grid sides must be positive, got ", s);
  const auto dtype = parse_dtype(c.dtype);
  const int threads = at::get_num_threads();
  set_blas_threads(threads);
  const double limit = resolve_limit(c.memory_limit_mb);
  const torch::Device device = run_device();
  c10::InferenceMode guard;
  std::map<std::string, double> slopes;
  for (const auto& info : kVariants) {
    std::vector<double> ns, times, ns_fit, times_fit;
    std::vector<std::map<std::string, TableValue>> rows;
    for (const int64_t side : c.sides) {
      const int64_t n = side * side;
      std::map<std::string, TableValue> row{{"variant", std::string(info.name)}, {"tokens", n},
                                            {"channels", c.channels},           {"heads", c.heads},
                                            {"side", side},                     {"dtype", c.dtype},
                                            {"device", device_string(device)},  {"commit", git_commit()},
                                            {"threads", int64_t{threads}}};
      if (!info.kernel) {
        const double need = 2.0 * c.heads * static_cast<double>(n) * n * dtype_bytes(dtype) / (1024.0 * 1024.0);
        if (need > limit) {
          row["status"] = "skipped: the (N, N) maps need ~" + fmt("%.0f", need) + " MiB > limit " +
                          fmt("%.0f", limit) + " MiB";
          rows.push_back(row);
          if (!c.quiet) log << "attention " << info.name << " N=" << n << ": " << std::get<std::string>(row["status"]) << "\n";
          continue;
        }
      }
      release_free_memory();
      reset_peak_memory();
      torch::manual_seed(0);
      auto attn = make_attention(info.variant, AttentionOptions(c.channels, c.heads));
      attn->eval();
      attn->to(device, dtype);
      reset_device_peak(device);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
      // Channels-last, the layout the RAVLT harness hands every attention layer (so RALA is timed on its fused CPU
      // path, and every variant on the memory layout it gets in the model).
      auto x = torch::randn({1, c.channels, side, side}, gen, torch::kFloat32)
                   .to(device, dtype)
                   .contiguous(torch::MemoryFormat::ChannelsLast);
      auto ctx = AttentionContext::for_input(x, c.channels / c.heads);
      // Fewer iterations where one call is long (softmax at tens of thousands of tokens): ≥ 1, ≤ iters.
      auto t0 = Clock::now();
      attn->forward(x, ctx);
      synchronize(device);
      const double first = seconds_since(t0);
      const int64_t warm = first > 1.0 ? 0 : c.warmup, iters = first > 1.0 ? std::min<int64_t>(c.iters, 2) : c.iters;
      for (int64_t i = 0; i < warm; ++i) attn->forward(x, ctx);
      synchronize(device);
      std::vector<double> ms;
      for (int64_t i = 0; i < iters; ++i) {
        auto t = Clock::now();
        attn->forward(x, ctx);
        synchronize(device);
        ms.push_back(1e3 * seconds_since(t));
      }
      const double median = median_p95(ms).first;
      const double peak = device.is_cuda() ? static_cast<double>(device_peak_bytes(device)) / (1024.0 * 1024.0)
                                           : peak_memory_mb();
      row["time_ms"] = median;
      row["peak_memory_mb"] = peak;
      row["status"] = std::string("ok");
      rows.push_back(row);
      ns.push_back(static_cast<double>(n));
      times.push_back(median);
      if (n >= c.slope_min_tokens) {
        ns_fit.push_back(static_cast<double>(n));
        times_fit.push_back(median);
      }
      if (!c.quiet)
        log << "attention " << info.name << " N=" << n << ": " << fmt("%.3f", median) << " ms, peak "
            << fmt("%.0f", peak) << " MiB\n";
    }
    // Fit over N ≥ slope_min_tokens (below it fixed per-call costs dominate) when two such sizes were measured.
    if (ns_fit.size() < 2) {
      ns_fit = ns;
      times_fit = times;
    }
    double slope = kNaN;
    if (ns_fit.size() >= 2) slopes[info.name] = slope = fit_loglog_slope(ns_fit, times_fit);
    for (auto& row : rows) {
      row["loglog_slope"] = slope;
      table.add_row(row);
    }
  }
  return slopes;
}

// ------------------------------------------------------------------------------------------------
// CLI
// ------------------------------------------------------------------------------------------------

namespace {

struct BenchArgs {
  BenchConfig config;
  std::string image_sizes = "224";
  int threads = 0;
  bool attention_only = false;
  int64_t slope_min_tokens = 3136;
  std::string allocator = "retain";
  std::string out;
  bool overwrite = false;
};

void write_outputs(const ResultsTable& table, const std::string& out, const char* kind, int blas_threads,
                   const std::string& allocator) {
  if (out.empty()) return;
  const fs::path p(out);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  write_table_files(table, out, [&](h5::File& f) {
    set_provenance(f);
    f.set_attr("/", "table_kind", std::string(kind));
    f.set_attr("/", "blas", blas_info());
    f.set_attr("/", "blas_threads", static_cast<int64_t>(blas_threads));
    f.set_attr("/", "allocator", allocator);
    // The fused CPU kernels' build, or "off" (RALA_FUSED=0): attention_variants/fused.h.
    f.set_attr("/", "fused_kernels", fused::enabled() ? fused::capability() : std::string("off"));
  });
  std::cout << "wrote " << out << " and " << fs::path(out).replace_extension(".csv").string() << "\n";
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Throughput, latency, peak memory and GEMM-rate ratio; attention scaling");
  auto& c = a->config;
  cmd->add_option("--model", c.model, "Preset: ravlt_t ravlt_s ravlt_b ravlt_l ravlt_micro deit_tiny deit_small")
      ->capture_default_str();
  cmd->add_option("--attn-pattern", c.patterns, "Attention pattern (repeatable: one row per pattern and size)");
  cmd->add_option("--attn-opt", c.settings, "Attention setting [variant.]key=value (repeatable), e.g. alpha=0 or rala.gate=0");
  cmd->add_option("--batch-size", c.batch, "Images per iteration")->capture_default_str();
  cmd->add_option("--image-size", a->image_sizes, "Comma list of input sides, e.g. 224,384,512,768,1024")
      ->capture_default_str();
  cmd->add_option("--dtype", c.dtype, "fp32 | bf16")->capture_default_str();
  cmd->add_option("--threads", a->threads, "Intra-op threads (0 = as set for rala, all cores by default)");
  cmd->add_option("--warmup", c.warmup, "Untimed iterations first")->capture_default_str();
  cmd->add_option("--iters", c.iters, "Timed iterations per round")->capture_default_str();
  cmd->add_option("--rounds", c.rounds, "Rounds of (GEMM rate, timed iterations); the best ratio is reported")
      ->capture_default_str();
  cmd->add_option("--mode", c.mode, "infer | train (forward + cross-entropy + backward + SGD step)")
      ->capture_default_str();
  cmd->add_option("--gemm-size", c.gemm_size, "Side of the fp32 GEMM measuring the machine's rate")
      ->capture_default_str();
  cmd->add_option("--memory-limit-mb", c.memory_limit_mb,
                  "Skip configurations whose softmax maps are predicted to need more (0 = 60 % of MemAvailable)")
      ->capture_default_str();
  cmd->add_option("--seed", c.seed, "Seed of the random weights and inputs")->capture_default_str();
  cmd->add_option("--blas-threads", c.blas_threads,
                  "OpenBLAS threads inside the model run (0 = --threads). LibTorch's OpenMP threads already hold every "
                  "core; a second pool oversubscribes them")
      ->capture_default_str();
  cmd->add_option("--allocator", a->allocator,
                  "retain: keep freed memory in the heap (no page faults per forward); system: glibc defaults")
      ->capture_default_str();
  cmd->add_option("--trace", c.trace, "Write a Chrome trace of one extra iteration per configuration to PREFIX.*.json");
  cmd->add_flag("--attention-only", a->attention_only,
                "Every variant alone at N = 196 … 50,176 tokens (C = 64, one head, channels-last as in the model): "
                "time, memory, log-log slope");
  cmd->add_option("--slope-min-tokens", a->slope_min_tokens,
                  "Attention-only: fit the slope over N ≥ this (fixed per-call costs dominate below)")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Table file (.h5; a .csv with the same columns is written beside it)");
  cmd->add_flag("--overwrite", a->overwrite, "Replace an existing --out file");
  cmd->add_flag("--quiet", c.quiet, "No progress lines");
  cmd->callback([a] {
    auto& c = a->config;
    c.image_sizes = parse_image_sizes(a->image_sizes);
    TORCH_CHECK(a->threads >= 0, "--threads must be >= 0 (0 = all cores), got ", a->threads);
    if (a->threads > 0) configure_threads(a->threads);
    TORCH_CHECK(a->out.empty() || a->overwrite || !fs::exists(a->out), "'", a->out,
                "' exists; pass --overwrite to replace it");
    configure_allocator(a->allocator);
    const int blas_threads = set_blas_threads(at::get_num_threads());
    if (a->attention_only) {
      AttentionBenchConfig ac;
      ac.warmup = c.warmup;
      ac.iters = c.iters;
      ac.dtype = c.dtype;
      ac.memory_limit_mb = c.memory_limit_mb;
      ac.quiet = c.quiet;
      parse_dtype(c.dtype);
      ac.slope_min_tokens = a->slope_min_tokens;
      auto out = make_attention_bench_table();
      auto slopes = run_attention_bench(ac, out, std::cerr);
      std::cout << "| variant | N | C | time ms | peak MiB | status |\n|---|---|---|---|---|---|\n";
      for (int64_t r = 0; r < out.rows(); ++r)
        std::cout << "| " << out.cell_text("variant", r) << " | " << out.cell_text("tokens", r) << " | "
                  << out.cell_text("channels", r) << " | " << out.cell_text("time_ms", r) << " | "
                  << out.cell_text("peak_memory_mb", r) << " | " << out.cell_text("status", r) << " |\n";
      std::cout << "\nlog-log slope of time vs N (fit over N >= " << a->slope_min_tokens
                << " where measured; ~1 = linear, ~2 = quadratic):\n";
      for (const auto& [v, s] : slopes) std::cout << "  " << v << ": " << fmt("%.2f", s) << "\n";
      write_outputs(out, a->out, "bench_attention", blas_threads, a->allocator);
      return;
    }
    auto table = make_bench_table();
    run_model_bench(c, table, std::cerr);
    std::cout << bench_markdown(table);
    write_outputs(table, a->out, "bench", blas_threads, a->allocator);
  });
}

}  // namespace rala
