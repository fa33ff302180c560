// `rala bench`: the table's columns, GMACs against the MAC counter, the log-log slope fit on synthetic power laws, and
// one-line errors for bad sizes. No timing thresholds: timings are measured, never asserted.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "experiments/bench.h"
#include "experiments/runtime.h"
#include "models/presets.h"
#include "tests/test_util.h"

namespace rala {
namespace {

const std::string kBin = RALA_BINARY;

BenchConfig tiny_config() {
  BenchConfig c;
  c.model = "ravlt_micro";
  c.patterns = {"RRSS"};
  c.batch = 2;
  c.image_sizes = {32};
  c.warmup = 0;
  c.iters = 1;
  c.gemm_size = 64;
  c.quiet = true;
  return c;
}

// The columns the report subcommand reads, with their kinds.
const std::vector<std::pair<std::string, ColumnKind>> kBenchColumns = {
    {"model", ColumnKind::text},           {"pattern", ColumnKind::text},
    {"mode", ColumnKind::text},            {"dtype", ColumnKind::text},
    {"device", ColumnKind::text},          {"commit", ColumnKind::text},
    {"threads", ColumnKind::integer},      {"batch", ColumnKind::integer},
    {"image_size", ColumnKind::integer},   {"images_per_s", ColumnKind::number},
    {"latency_median_ms", ColumnKind::number}, {"latency_p95_ms", ColumnKind::number},
    {"peak_memory_mb", ColumnKind::number},    {"gmacs", ColumnKind::number},
    {"gflops", ColumnKind::number},            {"gemm_gflops", ColumnKind::number},
    {"gemm_ratio", ColumnKind::number}};

TEST(Bench, TinyConfigurationFillsEveryColumn) {
  auto c = tiny_config();
  c.patterns = {"RRSS", "LLSS"};
  auto t = make_bench_table();
  std::ostringstream log;
  run_model_bench(c, t, log);
  ASSERT_EQ(t.rows(), 2);
  for (const auto& [name, kind] : kBenchColumns) {
    ASSERT_TRUE(t.has_column(name)) << name;
    EXPECT_EQ(static_cast<int>(t.column(name).kind), static_cast<int>(kind)) << name;
  }
  for (int64_t r = 0; r < 2; ++r) {
    EXPECT_EQ(t.column("model").texts[r], "ravlt_micro");
    EXPECT_EQ(t.column("mode").texts[r], "infer");
    EXPECT_EQ(t.column("dtype").texts[r], "fp32");
    EXPECT_EQ(t.column("device").texts[r], "cpu");
    EXPECT_EQ(t.column("commit").texts[r], git_commit());
    EXPECT_EQ(t.column("threads").integers[r], at::get_num_threads());
    EXPECT_EQ(t.column("batch").integers[r], 2);
    EXPECT_EQ(t.column("image_size").integers[r], 32);
    EXPECT_EQ(t.column("status").texts[r].substr(0, 2), "ok");
    for (const char* col : {"images_per_s", "latency_median_ms", "latency_p95_ms", "peak_memory_mb", "gmacs", "gflops",
                            "gemm_gflops", "gemm_ratio"}) {
      const double v = t.column(col).numbers[r];
      EXPECT_TRUE(std::isfinite(v) && v > 0) << col << " = " << v;
    }
    // Derived columns follow from the measured ones by their definitions.
    const double median_s = t.column("latency_median_ms").numbers[r] * 1e-3;
    EXPECT_NEAR(t.column("images_per_s").numbers[r], 2 / median_s, 1e-9 * (2 / median_s));
    EXPECT_NEAR(t.column("gflops").numbers[r], 2 * t.column("gmacs").numbers[r] * 2 / median_s,
                1e-9 * t.column("gflops").numbers[r]);
    EXPECT_NEAR(t.column("gemm_ratio").numbers[r], t.column("gflops").numbers[r] / t.column("gemm_gflops").numbers[r],
                1e-12);
    EXPECT_GE(t.column("latency_p95_ms").numbers[r], t.column("latency_median_ms").numbers[r]);
  }
  EXPECT_EQ(t.column("pattern").texts[0], "RRSS");
  EXPECT_EQ(t.column("pattern").texts[1], "LLSS");
  EXPECT_NE(bench_markdown(t).find("| ravlt_micro | LLSS | infer | fp32 |"), std::string::npos);
}

TEST(Bench, TrainModeAfterInferenceAndBf16Rows) {
  // Inference first (under c10::InferenceMode, which also fills the RoPE table cache), then a training step on the
  // same grid: the cached tables must be usable by autograd (regression: they were inference tensors).
  auto c = tiny_config();
  c.image_sizes = {40};  // a grid no other test uses, so this test fills the cache itself
  auto t = make_bench_table();
  std::ostringstream log;
  run_model_bench(c, t, log);
  c.mode = "train";
  run_model_bench(c, t, log);
  c.mode = "infer";
  c.dtype = "bf16";
  run_model_bench(c, t, log);
  ASSERT_EQ(t.rows(), 3);
  EXPECT_EQ(t.column("mode").texts[1], "train");
  EXPECT_EQ(t.column("dtype").texts[2], "bf16");
  for (int64_t r = 0; r < 3; ++r) EXPECT_TRUE(std::isfinite(t.column("gflops").numbers[r]));
  // A training step counts 3× the forward MACs (backward ≈ 2× forward).
  const double median_s = t.column("latency_median_ms").numbers[1] * 1e-3;
  EXPECT_NEAR(t.column("gflops").numbers[1], 3 * 2 * t.column("gmacs").numbers[1] * 2 / median_s,
              1e-9 * t.column("gflops").numbers[1]);
}

TEST(Bench, GmacsEqualTheMacCounter) {
  auto c = tiny_config();
  c.patterns = {"RRSS", "SSSS"};
  c.image_sizes = {32, 64};
  auto t = make_bench_table();
  std::ostringstream log;
  run_model_bench(c, t, log);
  ASSERT_EQ(t.rows(), 4);
  for (int64_t r = 0; r < t.rows(); ++r) {
    Ravlt ref(ravlt_micro().attn_pattern(t.column("pattern").texts[r]));
    const int64_t s = t.column("image_size").integers[r];
    const auto macs = count_macs(*ref, s, s);
    EXPECT_DOUBLE_EQ(t.column("gmacs").numbers[r], static_cast<double>(macs.with_matmuls) / 1e9)
        << t.column("pattern").texts[r] << " " << s;
  }
  // The quadratic term: at the same size SSSS costs more than RRSS, and 64² more than 4× 32² for SSSS.
  EXPECT_GT(t.column("gmacs").numbers[2], t.column("gmacs").numbers[0]);
  EXPECT_GT(t.column("gmacs").numbers[3], 4 * t.column("gmacs").numbers[2]);
}

TEST(Bench, SlopeFitRecoversKnownExponents) {
  std::vector<double> n = {196, 784, 3136, 12544, 50176}, lin, quad, mixed;
  for (double x : n) {
    lin.push_back(0.003 * x);
    quad.push_back(2e-7 * x * x);
    mixed.push_back(5.0 * std::pow(x, 1.5));
  }
  EXPECT_NEAR(fit_loglog_slope(n, lin), 1.0, 1e-12);
  EXPECT_NEAR(fit_loglog_slope(n, quad), 2.0, 1e-12);
  EXPECT_NEAR(fit_loglog_slope(n, mixed), 1.5, 1e-12);
  // Multiplicative noise symmetric in log space around y = x² leaves the least-squares slope at 2 exactly when
  // the noise is uncorrelated with log x: ±10 % alternating on a symmetric design around the middle point.
  std::vector<double> x = {100, 1000, 10000}, y = {1e4 * 1.1, 1e6, 1e8 * 1.1};
  EXPECT_NEAR(fit_loglog_slope(x, y), 2.0, 1e-12);
  EXPECT_THROW(fit_loglog_slope({196}, {1.0}), c10::Error);
  EXPECT_THROW(fit_loglog_slope({196, 196}, {1.0, 2.0}), c10::Error);
  EXPECT_THROW(fit_loglog_slope({196, 784}, {1.0, 0.0}), c10::Error);
}

TEST(Bench, AttentionOnlyRowsAndSkips) {
  AttentionBenchConfig c;
  c.sides = {4, 8, 16};
  c.warmup = 0;
  c.iters = 1;
  c.slope_min_tokens = 1;
  c.quiet = true;
  auto t = make_attention_bench_table();
  std::ostringstream log;
  auto slopes = run_attention_bench(c, t, log);
  ASSERT_EQ(t.rows(), static_cast<int64_t>(3 * kVariants.size()));  // every variant × 3 sizes
  for (const char* col : {"variant", "tokens", "channels", "time_ms", "peak_memory_mb"}) ASSERT_TRUE(t.has_column(col));
  EXPECT_EQ(t.column("tokens").integers[0], 16);
  EXPECT_EQ(t.column("tokens").integers[2], 256);
  EXPECT_EQ(t.column("channels").integers[0], 64);
  EXPECT_EQ(slopes.size(), kVariants.size());
  for (const auto& [v, s] : slopes) EXPECT_TRUE(std::isfinite(s)) << v;
  // A memory limit below the softmax map skips exactly the softmax rows, with the reason.
  c.memory_limit_mb = 1e-9;
  auto skipped = make_attention_bench_table();
  run_attention_bench(c, skipped, log);
  for (int64_t r = 0; r < skipped.rows(); ++r) {
    const bool softmax = skipped.column("variant").texts[r] == "softmax";
    EXPECT_EQ(std::isnan(skipped.column("time_ms").numbers[r]), softmax);
    EXPECT_EQ(skipped.column("status").texts[r].rfind("skipped", 0) == 0, softmax);
  }
}

TEST(Bench, ModelConfigurationOverTheMemoryLimitIsSkipped) {
  auto c = tiny_config();
  c.memory_limit_mb = 1e-9;
  auto t = make_bench_table();
  std::ostringstream log;
  run_model_bench(c, t, log);
  ASSERT_EQ(t.rows(), 1);
  EXPECT_EQ(t.column("status").texts[0].rfind("skipped: softmax maps need", 0), 0u) << t.column("status").texts[0];
  EXPECT_TRUE(std::isnan(t.column("images_per_s").numbers[0]));
  EXPECT_GT(t.column("gmacs").numbers[0], 0);
}

// bf16 on the golden micro model (official weights, pattern RRSS): the deviation of its logits from the golden fp32
// logits, printed for the README. The bound is a sanity bound only (bf16 keeps 8 significant bits, u = 2^-9 ≈ 0.2 %;
// a broken bf16 path — NaN, a wrong layout or a dropped branch — is off by far more than 10 % of the logit scale).
TEST(Bench, Bf16LogitsOfTheGoldenMicroModel) {
  const std::string file = "ravlt_micro_rrss.h5";
  Ravlt model(ravlt_micro().attn_pattern("RRSS"));
  test::load_state(*model, file);
  model->eval();
  auto x = test::golden(file, "input").to(torch::kFloat32);
  auto ref = test::golden(file, "logits").to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  auto fp32 = model->forward(x).to(torch::kFloat64);
  model->to(torch::kBFloat16);
  auto bf16 = model->forward(x.to(torch::kBFloat16)).to(torch::kFloat64);
  const double scale = ref.abs().max().item<double>();
  const double dev32 = test::max_abs_err(fp32, ref) / scale, dev16 = test::max_abs_err(bf16, ref) / scale;
  const double top1 = (bf16.argmax(-1) == ref.argmax(-1)).to(torch::kFloat64).mean().item<double>();
  std::printf("golden micro RRSS: max|logit error|/max|logit| fp32 %.2e, bf16 %.2e; bf16 top-1 agreement %.0f %%\n",
              dev32, dev16, 100 * top1);
  EXPECT_LE(dev32, 1e-5);
  EXPECT_TRUE(std::isfinite(dev16));
  EXPECT_GT(dev16, dev32);  // bf16 really ran in bf16
  EXPECT_LT(dev16, 0.1);
}

// Bad input: non-zero exit and exactly one line naming the value and what is expected.
void expect_one_line_error(const std::string& args, const std::string& needle) {
  int status = 0;
  auto out = test::run_command(kBin + " bench --model ravlt_micro --quiet " + args, &status);
  EXPECT_NE(status, 0) << args;
  EXPECT_NE(out.find(needle), std::string::npos) << args << " → " << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(Bench, BadSizesGiveOneLineErrors) {
  expect_one_line_error("--image-size 0", "--image-size entries must be positive, got 0");
  expect_one_line_error("--image-size=-5", "--image-size entries must be positive, got -5");
  expect_one_line_error("--image-size 32,abc", "--image-size expects a comma list of positive integers, got 'abc'");
  expect_one_line_error("--image-size 16",
                        "--image-size 16 is smaller than the total stride of ravlt_micro (32); use at least 32");
  expect_one_line_error("--image-size 32 --batch-size 0", "--batch-size must be positive, got 0");
  expect_one_line_error("--image-size 32 --batch-size=-2", "--batch-size must be positive, got -2");
  expect_one_line_error("--image-size 32 --iters 0", "--iters must be positive, got 0");
  expect_one_line_error("--image-size 32 --dtype fp16", "--dtype must be fp32 or bf16, got 'fp16'");
  expect_one_line_error("--image-size 32 --mode eval", "--mode must be infer or train, got 'eval'");
}

TEST(Bench, CommandWritesTheTableFilesAndMarkdown) {
  test::TempDir dir;
  const auto out = (dir.path / "b.h5").string();
  int status = 0;
  auto text = test::run_command(kBin + " bench --model ravlt_micro --attn-pattern RRSS --batch-size 2 --image-size 32 "
                                       "--iters 1 --warmup 0 --gemm-size 64 --quiet --out " + out, &status);
  ASSERT_EQ(status, 0) << text;
  EXPECT_NE(text.find("| ravlt_micro | RRSS | infer | fp32 |"), std::string::npos) << text;
  ASSERT_TRUE(std::filesystem::exists(out));
  ASSERT_TRUE(std::filesystem::exists(dir.path / "b.csv"));
  h5::File f(out, h5::Mode::read);
  EXPECT_EQ(f.attr_string("/", "table_kind"), "bench");
  EXPECT_TRUE(f.has_attr("/", "git_commit"));
  auto t = ResultsTable::read_h5(f);
  ASSERT_EQ(t.rows(), 1);
  for (const auto& [name, kind] : kBenchColumns) EXPECT_TRUE(t.has_column(name)) << name;
  // An existing file is refused without --overwrite and left untouched.
  auto again = test::run_command(kBin + " bench --model ravlt_micro --image-size 32 --iters 1 --quiet --out " + out,
                                 &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(again.find("exists; pass --overwrite"), std::string::npos) << again;
}

}  // namespace
}  // namespace rala
