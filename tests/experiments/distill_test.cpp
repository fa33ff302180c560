// rala distill: softmax → Hedgehog attention transfer. The pattern and settings conversion, the objective against the
// lolcats golden, a distillation of a tiny softmax model (the attention cross-entropy drops, only feature maps change,
// the converted model's logits move towards the teacher's, the checkpoint loads like any other), and the CLI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "attention_variants/hedgehog.h"
#include "experiments/distill.h"
#include "experiments/model_loading.h"
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



std::string run(const std::string& args, int* status) {
  // One thread: OpenMP threads spinning against other work on a busy machine can slow a step a hundredfold.
  return test::run_command(std::string(RALA_BINARY) + " --threads 1 " + args, status);
}

/// A ravlt_micro teacher in our own checkpoint format, as a trained model looks to the distillation: BatchNorm
/// statistics calibrated on (synthetic) images, so that activations keep their scale, and softmax blocks redrawn at
/// unit gain with q, k spread so that the scaled logits have a standard deviation near 2: peaked maps (a freshly
/// initialised softmax layer attends almost uniformly, which any feature map mimics) whose outputs reach the logits.
std::string make_teacher(const fs::path& dir, const std::string& pattern) {
  torch::manual_seed(5);
  AnyModel t("ravlt_micro", pattern, {}, 10);
  {
    torch::NoGradGuard no_grad;
    for (auto& stage : t.ravlt()->stages)
      for (const auto& block : *stage->blocks) {
        auto& attn = *block->as<RavltBlock>()->attn;
        if (attn.variant() != Variant::softmax) continue;
        const auto C = static_cast<double>(attn.dim());
        auto params = attn.named_parameters();
        params["qkvo.weight"].narrow(0, 0, 2 * attn.dim()).normal_(0, std::sqrt(2.0 / C));  // q, k
        params["qkvo.weight"].narrow(0, 2 * attn.dim(), 2 * attn.dim()).normal_(0, std::sqrt(1.0 / C));  // v, o
        params["proj.weight"].normal_(0, std::sqrt(1.0 / C));
      }
    t.ravlt()->head->weight.normal_(0, 0.125);
    t.module()->train();
    for (int i = 0; i < 30; ++i) t.forward(torch::randn({16, 3, 32, 32}));  // BN running statistics (momentum 0.1)
    t.module()->eval();
  }
  const auto path = (dir / ("teacher_" + pattern + ".pth")).string();
  save_checkpoint(path, state_dict(*t.module()), 1, model_meta_json(t));
  return path;
}

TEST(DistillPattern, OnlySoftmaxStagesBecomeHedgehog) {
  EXPECT_EQ(converted_pattern("RRSS", ""), "RRHH");
  EXPECT_EQ(converted_pattern("SSSS", ""), "HHHH");
  EXPECT_EQ(converted_pattern("RRSS", "RRHS"), "RRHS");
  EXPECT_EQ(converted_pattern("RRSS", "rala,rala,hedgehog,hedgehog"), "RRHH");
  EXPECT_ERROR_MENTIONS(converted_pattern("RRRR", ""), "the teacher (pattern RRRR) has no softmax (S) stage");
  EXPECT_ERROR_MENTIONS(converted_pattern("RRSS", "RRLH"),
                        "stage 2 is softmax (S) in the teacher and linear (L) here; distillation only turns softmax (S) "
                        "stages into hedgehog (H)");
  EXPECT_ERROR_MENTIONS(converted_pattern("RRSS", "HRSH"), "stage 0 is rala (R) in the teacher");
  EXPECT_ERROR_MENTIONS(converted_pattern("RRSS", "RRSS"), "converts no stage");
  EXPECT_ERROR_MENTIONS(converted_pattern("RRSS", "RRH"), "does not fit the teacher (pattern RRSS)");
}

TEST(DistillSettings, ConvertedLayersKeepTheTeachersLayout) {
  AnyModel teacher("ravlt_micro", "RRSS", {"softmax.rope=0", "alpha=0"});
  auto s = converted_settings(teacher, "RRHH", {"feature_dim=4"});
  // softmax.rope=0 reaches no stage of RRHH any more; hedgehog gets the teacher's effective values instead.
  EXPECT_EQ(s, (std::vector<std::string>{"alpha=0", "hedgehog.gate=1", "hedgehog.rope=0", "hedgehog.lepe=1",
                                         "feature_dim=4"}));
  AnyModel student("ravlt_micro", "RRHH", s);
  for (const auto& l : student.attention_layers()) {
    if (l.variant != Variant::hedgehog) continue;
    EXPECT_EQ(l.settings, "gate=1 rope=0 lepe=1 feature_dim=4 feature_init=kaiming eps=1e-12");
  }
  // Every teacher weight has its key in the student; the student adds only the feature maps.
  auto ts = state_dict(*teacher.module()), ss = state_dict(*student.module());
  for (const auto& [k, v] : ts) EXPECT_TRUE(ss.count(k) && ss[k].sizes() == v.sizes()) << k;
  for (const auto& [k, v] : ss) {
    if (!ts.count(k)) {
      EXPECT_NE(k.find("feature_map_"), std::string::npos) << k;
    }
  }
}

TEST(DistillObjective, EqualsTheGoldenLossesOfLolcats) {
  constexpr const char* kGolden = "hedgehog_lolcats.h5";
  HedgehogAttention layer(AttentionOptions(64, 2));
  {
    torch::NoGradGuard no_grad;
    layer->feature_map_q->mlp->layer.copy_(test::golden(kGolden, "state_dict/feature_map_q.mlp.layer"));
    layer->feature_map_k->mlp->layer.copy_(test::golden(kGolden, "state_dict/feature_map_k.mlp.layer"));
  }
  auto input = test::golden(kGolden, "input");
  torch::NoGradGuard no_grad;
  auto m = layer->mimic(input[0], input[1], input[2]);
  const double xent = test::golden(kGolden, "probes/loss_xent").item<double>();
  const double mse = test::golden(kGolden, "probes/loss_mse").item<double>();
  const double total = test::golden(kGolden, "probes/loss_total").item<double>();
  EXPECT_NEAR(m.loss.xent.item<double>(), xent, 1e-5 * std::max(1.0, xent));
  EXPECT_NEAR(m.loss.mse.item<double>(), mse, 1e-5);
  // Averaged over layers as lolcats does (two identical layers: the same value).
  EXPECT_NEAR(distillation_objective({m.loss, m.loss}, 1.0, 1000.0).item<double>(), total, 1e-5 * total);
  EXPECT_NEAR(distillation_objective({m.loss}, 1.0, 0.0).item<double>(), xent, 1e-5 * xent);
}

TEST(Distill, MimicryLearnsOnlyFeatureMapsAndMovesTheModelTowardsTheTeacher) {
  test::TempDir tmp;
  const auto teacher_path = make_teacher(tmp.path, "SSSS");
  DistillConfig c;
  c.checkpoint = teacher_path;
  c.data = "synthetic";
  c.image_size = 32;  // ravlt_micro token grids 8×8, 4×4, 2×2, 1×1: N = 64, 16, 4, 1
  c.train_limit = 256;
  c.test_limit = 64;
  c.batch_size = 8;  // 32 steps per epoch
  c.epochs = 6;
  c.seed = 3;
  c.out = (tmp.path / "out").string();
  c.quiet = true;
  const DistillResult r = distill(c);
  EXPECT_EQ(r.teacher_pattern, "SSSS");
  EXPECT_EQ(r.pattern, "HHHH");
  EXPECT_EQ(r.layers, (std::vector<std::string>{"0.0", "1.0", "2.0", "2.1", "3.0"}));
  ASSERT_EQ(r.rows.size(), 7u);
  const auto &before = r.rows.front(), &after = r.rows.back();
  std::printf("  held-out xent %.4f -> %.4f, mse %.5f -> %.5f, logit mse %.4f -> %.4f, agreement %.1f%% -> %.1f%%\n",
              before.xent, after.xent, before.mse, after.mse, before.logit_mse, after.logit_mse, before.agreement,
              after.agreement);
  for (size_t i = 0; i < r.layers.size(); ++i)
    std::printf("    layer %s: xent %.4f -> %.4f, mse %.5f -> %.5f\n", r.layers[i].c_str(), before.layer_xent[i],
                after.layer_xent[i], before.layer_mse[i], after.layer_mse[i]);
  // The attention cross-entropy drops measurably where there is a map to learn (N > 1), and so does the output MSE.
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_LT(after.layer_xent[i], before.layer_xent[i] - 0.02) << r.layers[i];
    EXPECT_LT(after.layer_mse[i], before.layer_mse[i]) << r.layers[i];
  }
  EXPECT_NEAR(after.layer_xent[4], 0.0, 1e-6);  // one token: both maps are [1]
  EXPECT_LT(after.loss, 0.9 * before.loss);
  for (size_t e = 1; e < r.rows.size(); ++e) EXPECT_TRUE(std::isfinite(r.rows[e].train_loss));
  // The converted model's logits move towards the teacher's.
  EXPECT_LT(after.logit_mse, 0.8 * before.logit_mse);
  EXPECT_LT(after.logit_kl, before.logit_kl);
  EXPECT_GE(after.agreement, before.agreement);

  // Only the feature maps changed: every teacher tensor is bit-equal in the converted checkpoint.
  auto teacher = read_checkpoint(teacher_path).state;
  auto converted = read_checkpoint(r.checkpoint);
  EXPECT_EQ(converted.epoch, 6);
  int feature_maps = 0;
  for (const auto& [k, v] : converted.state) {
    auto t = teacher.find(k);
    if (t != teacher.end()) {
      EXPECT_TRUE(torch::equal(v, t->second)) << k << " changed";
    } else {
      ASSERT_NE(k.find("feature_map_"), std::string::npos) << k;
      ++feature_maps;
    }
  }
  EXPECT_EQ(feature_maps, 10);  // q and k maps of five layers
  // ... and the feature maps did change from their (seeded) initialisation.
  const auto settings = converted_settings(AnyModel("ravlt_micro", "SSSS"), "HHHH", {});
  torch::manual_seed(c.seed);
  AnyModel fresh("ravlt_micro", "HHHH", settings, 10);
  auto init = state_dict(*fresh.module());
  for (const auto& [k, v] : converted.state) {
    if (k.find("feature_map_") != std::string::npos && k.rfind("layers.3.", 0) != 0) {
      EXPECT_FALSE(torch::equal(v, init.at(k))) << k << " did not learn";
    }
  }

  // The checkpoint loads as `rala rank` / `rala predict --checkpoint` load it: pattern and settings from its meta.
  ModelFlags flags;
  flags.model = "ravlt_micro";
  flags.checkpoint = r.checkpoint;
  auto loaded = load_model(flags);
  EXPECT_EQ(loaded.model->pattern(), "HHHH");
  EXPECT_NE(converted.meta.find("\"distilled_layers\""), std::string::npos);

  // The table: one row per epoch plus the epoch-0 baseline, per-layer columns, CSV beside it, nothing partial left.
  h5::File f(r.metrics, h5::Mode::read);
  auto table = ResultsTable::read_h5(f);
  EXPECT_EQ(table.rows(), 7);
  for (const char* col : {"xent_0.0", "mse_2.1", "loss_3.0", "agreement", "logit_mse", "train_loss", "phase"})
    EXPECT_TRUE(table.has_column(col)) << col;
  EXPECT_EQ(f.attr_string("/", "attn_pattern"), "HHHH");
  EXPECT_EQ(f.attr_string("/", "teacher_attn_pattern"), "SSSS");
  EXPECT_TRUE(fs::exists(tmp.path / "out" / "metrics.csv"));
  for (const auto& e : fs::directory_iterator(tmp.path / "out"))
    EXPECT_EQ(e.path().string().find(".partial"), std::string::npos) << e.path();
}

TEST(DistillErrors, OneLineMessagesAndNothingOverwrittenByAccident) {
  test::TempDir tmp;
  const auto rrrr = make_teacher(tmp.path, "RRRR");
  const auto rrss = make_teacher(tmp.path, "RRSS");
  auto config = [&](const std::string& teacher, const std::string& out) {
    DistillConfig c;
    c.checkpoint = teacher;
    c.data = "synthetic";
    c.image_size = 32;
    c.train_limit = c.test_limit = 8;
    c.epochs = 1;
    c.out = (tmp.path / out).string();
    c.quiet = true;
    return c;
  };
  EXPECT_ERROR_MENTIONS(distill(config(rrrr, "a")), "the teacher (pattern RRRR) has no softmax (S) stage to convert");
  auto c = config(rrss, "b");
  c.pattern = "RLHH";
  EXPECT_ERROR_MENTIONS(distill(c), "distillation only turns softmax (S) stages into hedgehog (H)");
  EXPECT_ERROR_MENTIONS(distill(config((tmp.path / "missing.pth").string(), "c")), "missing.pth");
  c = config(rrss, "d");
  c.finetune_epochs = 1;
  EXPECT_ERROR_MENTIONS(distill(c), "--finetune-epochs needs labelled data (fashion-mnist or a folder), not --data synthetic");
  c = config(rrss, "e");
  c.settings = {"feature_dim=-2"};
  EXPECT_ERROR_MENTIONS(distill(c), "feature_dim");
  c = config(rrss, "f");
  c.settings = {"hedgehog.gate=0"};
  EXPECT_ERROR_MENTIONS(distill(c), "a converted layer keeps the teacher softmax layer's gate (1)");
  c = config(rrss, "g");
  c.epochs = 0;
  EXPECT_ERROR_MENTIONS(distill(c), "--epochs must be > 0, got 0");
  c = config(rrss, "h");
  c.model = "deit_tiny";
  EXPECT_ERROR_MENTIONS(distill(c), "attention pattern 'RRSS' has 4 entries, the model has 1 stages");
  EXPECT_FALSE(fs::exists(tmp.path / "a"));  // nothing written for a refused run
  // A finished distillation is not overwritten by accident.
  c = config(rrss, "done");
  distill(c);
  const auto stamp = fs::last_write_time(tmp.path / "done" / "checkpoint.pth");
  EXPECT_ERROR_MENTIONS(distill(c), "already holds a distillation (checkpoint.pth); use --overwrite");
  EXPECT_EQ(fs::last_write_time(tmp.path / "done" / "checkpoint.pth"), stamp);
  c.overwrite = true;
  EXPECT_NO_THROW(distill(c));
}

TEST(DistillCli, ErrorsAreOneLineAndARunPrintsItsSummary) {
  test::TempDir tmp;
  const auto rrss = make_teacher(tmp.path, "RRSS");
  const std::string base = "distill --data synthetic --image-size 32 --train-limit 8 --test-limit 8 --epochs 1 --quiet "
                           "--checkpoint " + rrss + " --out " + (tmp.path / "out").string();
  int status = 0;
  auto log = run(base + " --attn-pattern RLHH", &status);
  EXPECT_NE(status, 0) << log;
  EXPECT_NE(log.find("rala: error: --attn-pattern 'RLHH': stage 1 is rala (R) in the teacher and linear (L) here"),
            std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  log = run(base, &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_NE(log.find("RRSS -> RRHH, distilled layers 2.0, 2.1, 3.0: held-out xent"), std::string::npos) << log;
  EXPECT_NE(log.find("checkpoint " + (tmp.path / "out" / "checkpoint.pth").string()), std::string::npos) << log;
}

TEST(DistillCli, TrainedTeacherConvertsFineTunesAndPredicts) {
  if (!fashion_mnist_available()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  test::TempDir tmp;
  const auto teacher_dir = (tmp.path / "teacher").string(), out = (tmp.path / "hh").string();
  int status = 0;
  auto log = run("train --model ravlt_micro --attn-pattern RRSS --train-limit 128 --test-limit 64 --epochs 1 "
                 "--batch-size 32 --warmup-epochs 0 --quiet --out " + teacher_dir,
                 &status);
  ASSERT_EQ(status, 0) << log;
  // Data and image size come from the teacher's training config.
  log = run("distill --checkpoint " + teacher_dir + "/checkpoint.pth --train-limit 128 --test-limit 64 --epochs 1 "
            "--batch-size 32 --finetune-epochs 1 --quiet --out " + out,
            &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_NE(log.find("RRSS -> RRHH, distilled layers 2.0, 2.1, 3.0"), std::string::npos) << log;
  EXPECT_NE(log.find("fine-tuned: teacher agreement"), std::string::npos) << log;
  h5::File f(out + "/metrics.h5", h5::Mode::read);
  auto table = ResultsTable::read_h5(f);
  ASSERT_EQ(table.rows(), 3);
  EXPECT_EQ(table.column("phase").texts, (std::vector<std::string>{"distill", "distill", "finetune"}));
  EXPECT_TRUE(std::isnan(table.column("xent").numbers[2]));
  EXPECT_FALSE(std::isnan(table.column("student_top1").numbers[2]));
  EXPECT_NE(f.attr_string("/", "dataset").find("fashion-mnist:train:128@28"), std::string::npos);
  // The fine-tuning trained every parameter (the distilled checkpoint keeps the teacher's projections).
  auto distilled = read_checkpoint(out + "/checkpoint.pth").state;
  auto tuned = read_checkpoint(out + "/finetune/checkpoint.pth").state;
  auto teacher = read_checkpoint(teacher_dir + "/checkpoint.pth").state;
  const std::string qkvo = "layers.2.blocks.0.attn.qkvo.weight";
  EXPECT_TRUE(torch::equal(distilled.at(qkvo), teacher.at(qkvo)));
  EXPECT_FALSE(torch::equal(tuned.at(qkvo), teacher.at(qkvo)));
  // ... starting from the distilled weights (--init-weights), not from a new random init.
  EXPECT_LT((tuned.at(qkvo) - distilled.at(qkvo)).norm().item<double>(), 0.1 * distilled.at(qkvo).norm().item<double>());
  EXPECT_FALSE(torch::equal(tuned.at("layers.2.blocks.0.attn.feature_map_q.mlp.layer"),
                            distilled.at("layers.2.blocks.0.attn.feature_map_q.mlp.layer")));
  // Both checkpoints predict through the ordinary loader.
  for (const std::string& ckpt : {out + "/checkpoint.pth", out + "/finetune/checkpoint.pth"}) {
    const auto logits = (tmp.path / "logits.h5").string();
    log = run("predict --model ravlt_micro --checkpoint " + ckpt + " --input-h5 " +
                  test::data_path("ravlt_micro_rrss.h5") + " --output-h5 " + logits,
              &status);
    ASSERT_EQ(status, 0) << log;
    h5::File p(logits, h5::Mode::read);
    EXPECT_EQ(p.attr_string("/", "attn_pattern"), "RRHH");
  }
}

TEST(Distill, ATimmDeitCheckpointKeepsItsDepth) {
  // timm's DeiT reduced to 2 blocks (tests/data/make_timm_deit_golden.py): the student has the teacher's 2 blocks,
  // both converted, every teacher weight kept, the feature maps new.
  test::TempDir tmp;
  DistillConfig c;
  c.checkpoint = test::data_path("timm_deit_tiny_depth2.pth");
  c.model = "deit_tiny";
  c.data = "synthetic";
  c.image_size = 64;  // a 4×4 patch grid: the position embedding resampled as timm does
  c.train_limit = c.test_limit = 4;
  c.batch_size = 4;
  c.epochs = 1;
  c.out = (tmp.path / "out").string();
  c.quiet = true;
  const DistillResult r = distill(c);
  EXPECT_EQ(r.teacher_pattern, "S");
  EXPECT_EQ(r.pattern, "H");
  EXPECT_EQ(r.layers, (std::vector<std::string>{"0.0", "0.1"}));
  const auto student = read_checkpoint(r.checkpoint).state;
  const auto teacher = read_checkpoint(c.checkpoint).state;
  EXPECT_FALSE(student.count("blocks.2.norm1.weight"));
  for (const auto& [key, t] : teacher) {
    ASSERT_TRUE(student.count(key)) << key;
    EXPECT_TRUE(torch::equal(student.at(key), t)) << key;
  }
}

}  // namespace
}  // namespace rala
