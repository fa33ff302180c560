#pragma once
/// \file bench.h
/// `rala bench`: throughput, latency, peak memory and achieved GFLOP/s of a model per configuration (pattern × image
/// size), against the fp32 GEMM rate measured in the same process; and `--attention-only`, every variant alone on
/// N = 196 … 50,176 tokens with the fitted log-log slope of time against N.
///
/// Usage:
///   rala bench --model ravlt_t --attn-pattern RRSS --attn-pattern RRRR --batch-size 8 --image-size 224,384 --out b.h5
///   rala bench --attention-only --out attention.h5
///
/// Tables follow the /table convention (analysis/results_table.h): root attr table_kind = "bench" (model runs) or
/// "bench_attention" (attention alone); columns documented in docs/readme-bench.md.

#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace rala {

class AnyModel;
class ResultsTable;

/// Registers the `bench` subcommand on `app`.
void add_bench_command(CLI::App& app);

/// What one `rala bench` model run measures.
struct BenchConfig {
  std::string model = "ravlt_t";
  std::vector<std::string> patterns;     ///< empty = the preset's default pattern
  std::vector<std::string> settings;     ///< attention key=value settings
  int64_t batch = 8;
  std::vector<int64_t> image_sizes{224};
  std::string dtype = "fp32";            ///< fp32 | bf16
  std::string mode = "infer";            ///< infer | train
  int64_t warmup = 3;
  int64_t iters = 10;
  int64_t rounds = 1;                    ///< repeated (GEMM, model) rounds; the round with the best ratio is reported
  int64_t blas_threads = 1;              ///< OpenBLAS threads during the model's iterations (0 = LibTorch's count)
  int64_t gemm_size = 2048;              ///< side of the square fp32 GEMM that measures the machine's rate
  double memory_limit_mb = 0;            ///< configurations predicted to need more are skipped (0 = 60 % of available)
  uint64_t seed = 0;
  std::string trace;                     ///< non-empty: Chrome trace of one extra iteration to <trace>.<pattern>.<size>.json
  bool quiet = false;
};

/// Parses "224,384,512" into sizes; throws one line naming the bad entry when one is not a positive integer.
std::vector<int64_t> parse_image_sizes(const std::string& list);
/// Total stride of a model: the smallest input side it accepts (RAVLT: 4·2^(stages−1) = 32; DeiT: its patch size).
int64_t model_stride(const AnyModel& model);
/// Checks what `rala bench` accepts before any work: batch > 0, sizes positive and ≥ the model's stride, warm-up ≥ 0,
/// iterations > 0, dtype and mode known. Throws one line naming the value and what was expected.
void check_bench_config(const BenchConfig& config);

/// An empty benchmark table with every column (table_kind "bench").
ResultsTable make_bench_table();
/// Runs every (pattern, image size) configuration and appends one row each to `table`; progress lines go to `log`.
void run_model_bench(const BenchConfig& config, ResultsTable& table, std::ostream& log);
/// Markdown rendering of a benchmark table (one line per row).
std::string bench_markdown(const ResultsTable& table);

/// The attention-only sweep.
struct AttentionBenchConfig {
  std::vector<int64_t> sides{14, 20, 28, 40, 56, 80, 112, 160, 224};  ///< grid side; N = side² (196 … 50,176)
  int64_t channels = 64;
  int64_t heads = 1;
  int64_t warmup = 2;
  int64_t iters = 5;
  std::string dtype = "fp32";
  int64_t slope_min_tokens = 3136;  ///< the slope is fitted over N ≥ this (all sizes if fewer than two qualify)
  double memory_limit_mb = 0;  ///< softmax maps predicted to need more are skipped (0 = 60 % of available memory)
  bool quiet = false;
};
/// An empty attention-only table (table_kind "bench_attention").
ResultsTable make_attention_bench_table();
/// Runs every variant at every size on a channels-last (1, C, side, side) input — the layout the RAVLT harness gives its
/// attention layers, so RALA takes its fused CPU path — appending rows (with the per-variant fitted slope) to
/// `table`; returns the slope per variant name.
std::map<std::string, double> run_attention_bench(const AttentionBenchConfig& config, ResultsTable& table,
                                                  std::ostream& log);

/// Least-squares slope of log y against log x (both positive, at least two distinct x). Throws otherwise.
double fit_loglog_slope(const std::vector<double>& x, const std::vector<double>& y);

/// Returns freed heap memory to the system (malloc_trim), e.g. before measuring a configuration's peak.
void release_free_memory();

/// Peak-memory bookkeeping of this process (Linux /proc): reset_peak_memory() writes 5 to /proc/self/clear_refs so
/// that VmHWM restarts from the current resident size; returns false where the kernel refuses.
bool reset_peak_memory();
/// VmHWM (resident high-water mark) in MB, NaN when unreadable.
double peak_memory_mb();
/// VmRSS in MB, NaN when unreadable.
double resident_memory_mb();
/// MemAvailable of /proc/meminfo in MB (NaN when unreadable).
double available_memory_mb();

/// The fp32 GEMM rate of this process: best of `reps` n×n·n×n products, in GFLOP/s (2n³ per product).
double measure_gemm_gflops(int64_t n, int reps, const std::string& device = "cpu");

}  // namespace rala
