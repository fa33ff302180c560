// rala train / rala ablate: the schedule and EMA by their formulas, weight-decay groups by AdamW's update, overfitting
// a small set, bit-exact resume, the non-finite guard, resume errors that leave files untouched, and the ablation table.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "experiments/ablate.h"
#include "experiments/train/schedule.h"
#include "experiments/train/train_loop.h"
#include "models/checkpoint.h"
#include "models/presets.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

bool fashion_mnist_available() {
  return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") ||
         std::getenv("RALA_FASHION_MNIST_DIR");
}

#define REQUIRE_FASHION_MNIST() \
  if (!fashion_mnist_available()) GTEST_SKIP() << "dataset-fashion-mnist not installed"

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TrainConfig small_config(const fs::path& out) {
  TrainConfig c;
  c.model = "ravlt_micro";
  c.pattern = "RRSS";
  c.train_limit = 96;
  c.test_limit = 32;
  c.batch_size = 32;
  c.eval_batch_size = 32;
  c.epochs = 2;
  c.warmup_epochs = 0.5;
  c.out = out.string();
  c.quiet = true;
  return c;
}

TEST(CosineSchedule, MatchesTheDefinitionAtKnownSteps) {
  CosineSchedule s(1.0, 0.1, 10, 110);
  EXPECT_DOUBLE_EQ(s(0), 0.1);   // (0 + 1) / 10
  EXPECT_DOUBLE_EQ(s(4), 0.5);   // (4 + 1) / 10
  EXPECT_DOUBLE_EQ(s(9), 1.0);   // warm-up reaches the base
  EXPECT_DOUBLE_EQ(s(10), 1.0);  // cosine starts at the base
  EXPECT_NEAR(s(35), 0.1 + 0.45 * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(s(60), 0.55, 1e-15);  // half-way: (base + min) / 2
  EXPECT_NEAR(s(110), 0.1, 1e-15);
  EXPECT_DOUBLE_EQ(s(500), 0.1);
  CosineSchedule no_warmup(2.0, 0.0, 0, 4);
  EXPECT_DOUBLE_EQ(no_warmup(0), 2.0);
  EXPECT_NEAR(no_warmup(2), 1.0, 1e-15);
  EXPECT_THROW(CosineSchedule(1.0, 0.0, 5, 5), c10::Error);
  EXPECT_THROW(CosineSchedule(1.0, 2.0, 0, 5), c10::Error);
}

TEST(ModelEma, UpdateIsTheExponentialAverageAndCopiesIntegerBuffers) {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(3, 2), torch::nn::BatchNorm1d(2));
  torch::nn::Sequential shadow(torch::nn::Linear(3, 2), torch::nn::BatchNorm1d(2));
  ModelEma ema(*shadow, 0.75);
  ema.reset(*model);
  const auto p0 = model->named_parameters()["0.weight"].detach().clone();
  {
    torch::NoGradGuard g;
    model->named_parameters()["0.weight"].add_(1.0);
    model->named_buffers()["1.num_batches_tracked"].fill_(7);
  }
  ema.update(*model);
  const auto p1 = p0 + 1.0;
  EXPECT_TRUE(torch::allclose(shadow->named_parameters()["0.weight"], 0.75 * p0 + 0.25 * p1, 0, 1e-6));
  EXPECT_EQ(shadow->named_buffers()["1.num_batches_tracked"].item<int64_t>(), 7);
  EXPECT_THROW(ModelEma(*shadow, 1.0), c10::Error);
}

TEST(WeightDecay, ExcludedParametersAreNotDecayedByAdamW) {
  AnyModel model("ravlt_micro", "RRSS");
  auto& m = *model.module();
  const auto excluded = no_weight_decay_names(m);
  // Every bias, norm weight and layer-scale gamma is excluded; conv/linear weights are not.
  int64_t gammas = 0;
  for (const auto& p : m.named_parameters()) {
    const std::string& n = p.key();
    const bool in = std::find(excluded.begin(), excluded.end(), n) != excluded.end();
    const bool bias = n.size() > 5 && n.substr(n.size() - 5) == ".bias";
    const bool gamma = n.find("gamma_") != std::string::npos;
    gammas += gamma;
    if (bias || gamma || p.value().dim() == 1) {
      EXPECT_TRUE(in) << n;
    }
    if (p.value().dim() >= 2 && !gamma) {
      EXPECT_FALSE(in) << n;
    }
  }
  EXPECT_GT(gammas, 0);
  // With zero gradients one AdamW step is pure decoupled decay: p ← p·(1 − lr·wd) in the decay group only.
  const double lr = 0.1, wd = 0.5;
  auto opt = make_adamw(m, lr, wd);
  StateDict before = state_dict(m);
  for (auto& p : m.parameters()) p.mutable_grad() = torch::zeros_like(p);
  opt->step();
  for (const auto& p : m.named_parameters()) {
    const bool in = std::find(excluded.begin(), excluded.end(), p.key()) != excluded.end();
    const auto expected = in ? before[p.key()] : before[p.key()] * (1 - lr * wd);
    EXPECT_TRUE(torch::allclose(p.value(), expected, 1e-6, 1e-7)) << p.key();
  }
}

TEST(Train, MicroModelOverfits64FashionMnistImages) {
  REQUIRE_FASHION_MNIST();
  test::TempDir dir;
  TrainConfig c = small_config(dir.path / "run");
  c.train_limit = 64;
  c.batch_size = 64;
  c.epochs = 60;  // 60 steps
  c.warmup_epochs = 3;
  c.lr = 3e-3;
  c.weight_decay = 0;
  c.label_smoothing = 0;
  c.augment = false;
  train(c);
  AnyModel model("ravlt_micro", "RRSS", {}, 10);
  load_state_dict(*model.module(), read_checkpoint((dir.path / "run" / "checkpoint.pth").string()).state);
  LabeledSplit seen("fashion-mnist", true, 28, 64);
  EXPECT_GE(evaluate(model, seen, 64).first, 95.0);
}

TEST(Train, InterruptedAndResumedRunEndsBitIdentical) {
  REQUIRE_FASHION_MNIST();
  test::TempDir dir;
  TrainConfig c = small_config(dir.path / "straight");
  c.drop_path = 0.1;  // draws from the global generator: its state must be restored
  c.ema_decay = 0.9;
  c.clip_grad = 1.0;
  train(c);

  TrainConfig i = small_config(dir.path / "interrupted");
  i.drop_path = 0.1;
  i.ema_decay = 0.9;
  i.clip_grad = 1.0;
  i.stop_after_epochs = 1;
  EXPECT_EQ(train(i).epochs_done, 1);
  torch::manual_seed(12345);  // a resumed process starts with some other generator state
  TrainConfig r = small_config(dir.path / "interrupted");
  r.resume = true;
  r.epochs = 99;  // ignored: the configuration comes from the checkpoint
  EXPECT_EQ(train(r).epochs_done, 2);

  for (const std::string key : {"model", "model_ema"}) {
    auto a = read_checkpoint((dir.path / "straight" / "checkpoint.pth").string(), key).state;
    auto b = read_checkpoint((dir.path / "interrupted" / "checkpoint.pth").string(), key).state;
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [k, v] : a) EXPECT_TRUE(torch::equal(v, b.at(k))) << key << " " << k;
  }
  h5::File fa((dir.path / "straight" / "metrics.h5").string(), h5::Mode::read);
  h5::File fb((dir.path / "interrupted" / "metrics.h5").string(), h5::Mode::read);
  auto ta = ResultsTable::read_h5(fa), tb = ResultsTable::read_h5(fb);
  ASSERT_EQ(tb.rows(), 2);
  EXPECT_EQ(ta.column("train_loss").numbers, tb.column("train_loss").numbers);
  EXPECT_EQ(ta.column("test_top1").numbers, tb.column("test_top1").numbers);
}

// A kill after the epoch's checkpoint was written and before its metrics.h5 was (what CI's KillNine once hit: a
// re-run ablate found a finished checkpoint with one epoch of metrics): the resumed run restores the missing rows from
// the checkpoint, whether the run still has epochs to go or the checkpoint is already at the last one.
TEST(Train, KilledBetweenCheckpointAndMetricsLosesNoRow) {
  REQUIRE_FASHION_MNIST();
  test::TempDir dir;
  TrainConfig c = small_config(dir.path / "straight");
  c.epochs = 3;
  train(c);
  h5::File fs_((dir.path / "straight" / "metrics.h5").string(), h5::Mode::read);
  const auto straight = ResultsTable::read_h5(fs_);
  ASSERT_EQ(straight.rows(), 3);

  const fs::path run = dir.path / "run", metrics = run / "metrics.h5", one_epoch = dir.path / "metrics_epoch1.h5";
  TrainConfig i = small_config(run);
  i.epochs = 3;
  i.stop_after_epochs = 1;
  train(i);
  fs::copy_file(metrics, one_epoch);
  TrainConfig r = small_config(run);
  r.resume = true;
  r.stop_after_epochs = 1;
  EXPECT_EQ(train(r).epochs_done, 2);
  fs::copy_file(one_epoch, metrics, fs::copy_options::overwrite_existing);  // the epoch-2 write never happened
  r.stop_after_epochs = -1;
  EXPECT_EQ(train(r).epochs_done, 3);
  auto expect_straight_rows = [&](const std::string& when) {
    SCOPED_TRACE(when);
    h5::File f(metrics.string(), h5::Mode::read);
    const auto t = ResultsTable::read_h5(f);
    ASSERT_EQ(t.rows(), 3);
    EXPECT_EQ(t.column("epoch").integers, straight.column("epoch").integers);
    EXPECT_EQ(t.column("train_loss").numbers, straight.column("train_loss").numbers);
    EXPECT_EQ(t.column("test_top1").numbers, straight.column("test_top1").numbers);
    EXPECT_EQ(t.column("lr").numbers, straight.column("lr").numbers);
  };
  expect_straight_rows("resumed after losing epoch 2's metrics");

  // The checkpoint at the last epoch, metrics.h5 one row short or gone: a resume has no epoch to train and still
  // writes the whole table (rala ablate resumes every run that has a checkpoint).
  fs::copy_file(one_epoch, metrics, fs::copy_options::overwrite_existing);
  EXPECT_EQ(train(r).epochs_done, 3);
  expect_straight_rows("resumed at the last epoch with one row");
  fs::remove(metrics);
  EXPECT_EQ(train(r).epochs_done, 3);
  expect_straight_rows("resumed at the last epoch without metrics.h5");
}

TEST(Train, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  REQUIRE_FASHION_MNIST();
  test::TempDir dir;
  TrainConfig c = small_config(dir.path / "run");
  c.inject_nonfinite_step = 4;  // epoch 2 (3 steps per epoch)
  try {
    train(c);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("non-finite training loss"), std::string::npos) << msg;
    EXPECT_NE(msg.find("epoch 2"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  auto ck = read_checkpoint((dir.path / "run" / "checkpoint.pth").string());
  EXPECT_EQ(ck.epoch, 1);
  h5::File f((dir.path / "run" / "metrics.h5").string(), h5::Mode::read);
  EXPECT_EQ(ResultsTable::read_h5(f).rows(), 1);
}

TEST(TrainCli, ResumeErrorsAreOneLineAndTouchNothing) {
  test::TempDir dir;
  int status = 0;
  const std::string bin = RALA_BINARY;
  auto out = test::run_command(bin + " train --resume --quiet --out " + (dir.path / "none").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rala: error: --resume: no checkpoint at"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir.path / "none" / "metrics.h5"));

  fs::create_directories(dir.path / "bad");
  const std::string junk = "this is not a checkpoint";
  { std::ofstream(dir.path / "bad" / "checkpoint.pth") << junk; }
  { std::ofstream(dir.path / "bad" / "metrics.csv") << "epoch\n1\n"; }
  out = test::run_command(bin + " train --resume --quiet --out " + (dir.path / "bad").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rala: error:"), std::string::npos) << out;
  EXPECT_NE(out.find("checkpoint.pth"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_EQ(read_file(dir.path / "bad" / "checkpoint.pth"), junk);
  EXPECT_EQ(read_file(dir.path / "bad" / "metrics.csv"), "epoch\n1\n");

  out = test::run_command(bin + " train --epochs 0 --out " + (dir.path / "x").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("--epochs must be > 0, got 0"), std::string::npos) << out;
}

TEST(TrainCli, ExistingRunIsRefusedWithoutResumeOrOverwrite) {
  REQUIRE_FASHION_MNIST();
  test::TempDir dir;
  TrainConfig c = small_config(dir.path / "run");
  c.epochs = 1;
  c.warmup_epochs = 0;
  train(c);
  const std::string before = read_file(dir.path / "run" / "checkpoint.pth");
  EXPECT_THROW(train(c), c10::Error);
  EXPECT_EQ(read_file(dir.path / "run" / "checkpoint.pth"), before);
}

TEST(Ablate, TinyGridWritesEveryColumn) {
  REQUIRE_FASHION_MNIST();
  test::TempDir dir;
  int status = 0;
  const auto out = test::run_command(std::string(RALA_BINARY) + " ablate --preset tiny --quiet --out " +
                                         (dir.path / "abl").string(),
                                     &status);
  ASSERT_EQ(status, 0) << out;
  h5::File f((dir.path / "abl" / "ablation.h5").string(), h5::Mode::read);
  EXPECT_EQ(f.attr_string("/", "table_kind"), "ablation");
  auto t = ResultsTable::read_h5(f);
  const auto preset = grid_preset("tiny");
  ASSERT_EQ(t.rows(), static_cast<int64_t>(preset.configs.size()));
  for (const auto& col : t.columns()) {
    ASSERT_EQ(col.unit.empty() && col.description.empty(), false) << col.name;
    for (int64_t r = 0; r < t.rows(); ++r) {
      if (col.kind == ColumnKind::number) {
        EXPECT_TRUE(std::isfinite(col.numbers[r])) << col.name << " row " << r;
      }
    }
  }
  for (int64_t r = 0; r < t.rows(); ++r) {
    const auto& cfg = preset.configs[r];
    EXPECT_EQ(t.column("config").texts[r], cfg.name);
    AnyModel m("ravlt_micro", cfg.pattern, cfg.settings, 10);
    EXPECT_EQ(t.column("params").integers[r], m.parameters());
    EXPECT_DOUBLE_EQ(t.column("gmacs").numbers[r], static_cast<double>(m.macs(28, 28).with_matmuls) / 1e9);
    // Ranks of 16-dim heads are at most 16; effective rank ≤ numerical rank... both at least 1.
    for (const std::string probe : {"kv_buffer", "output", "output_gated"}) {
      EXPECT_GE(t.column(probe + "_rank").numbers[r], 1.0);
      EXPECT_LE(t.column(probe + "_rank").numbers[r], 16.0);
      EXPECT_GE(t.column(probe + "_effective_rank").numbers[r], 1.0);
    }
    EXPECT_GT(t.column("images_per_s").numbers[r], 0.0);
    EXPECT_GE(t.column("top1_mean").numbers[r], 0.0);
    EXPECT_LE(t.column("top1_mean").numbers[r], 100.0);
  }
  EXPECT_TRUE(fs::exists(dir.path / "abl" / "ablation.csv"));
  EXPECT_NE(out.find("| RRSS |"), std::string::npos) << out;
}

TEST(Ablate, UnknownPresetIsRefused) {
  EXPECT_THROW(grid_preset("medium"), c10::Error);
}

}  // namespace
}  // namespace rala
