// `rala predict` end to end: an official-format checkpoint (made from the golden micro model's weights) and an HDF5
// input reproduce the official logits; image files print top-k; bad input gives one clear line and no output file.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "analysis/h5_store.h"
#include "experiments/model_loading.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

std::string run(const std::string& cmd, int* status) { return test::run_command(cmd, status); }

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("rala_predict") {}
};

TEST(Predict, OfficialCheckpointAndH5InputReproduceOfficialLogits) {
  TempDir tmp;
  const auto out = (tmp.path / "logits.h5").string();
  int status = 0;
  for (const char* key : {"", " --checkpoint-key model"}) {
    auto log = run(std::string(RALA_BINARY) + " predict --model ravlt_micro --attn-pattern RRSS --checkpoint " +
                       test::data_path("checkpoint_official_micro.pth") + key + " --input-h5 " +
                       test::data_path("ravlt_micro_rrss.h5") + " --output-h5 " + out,
                   &status);
    ASSERT_EQ(status, 0) << log;
    auto logits = h5::read_tensor(out, "logits");
    auto ref = test::golden("ravlt_micro_rrss.h5", "logits");
    EXPECT_LE(test::max_abs_err(logits, ref), 1e-4 * std::max(1.0, ref.abs().max().item<double>()));
    h5::File f(out, h5::Mode::read);
    EXPECT_NE(f.attr_string("/", "command_line").find("--input-h5"), std::string::npos);
    EXPECT_EQ(f.attr_string("/", "attn_pattern"), "RRSS");
    EXPECT_FALSE(fs::exists(out + ".partial"));
  }
  // The EMA weights of the fixture are 0.5× the model's: different logits.
  auto log = run(std::string(RALA_BINARY) + " predict --model ravlt_micro --checkpoint " +
                     test::data_path("checkpoint_official_micro.pth") + " --checkpoint-key model_ema --input-h5 " +
                     test::data_path("ravlt_micro_rrss.h5") + " --output-h5 " + out,
                 &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_GT(test::max_abs_err(h5::read_tensor(out, "logits"), test::golden("ravlt_micro_rrss.h5", "logits")), 1e-3);
}

TEST(Predict, OwnCheckpointCarriesPatternSettingsAndClasses) {
  TempDir tmp;
  AnyModel model("ravlt_micro", "RRRR", {"alpha=0"}, 3);
  const auto ckpt = (tmp.path / "own.pth").string(), out = (tmp.path / "logits.h5").string();
  save_checkpoint(ckpt, state_dict(*model.module()), 7, model_meta_json(model, {"cat", "dog", "bird"}));
  int status = 0;
  auto log = run(std::string(RALA_BINARY) + " predict --model ravlt_micro --checkpoint " + ckpt + " --input-h5 " +
                     test::data_path("ravlt_micro_rrss.h5") + " --output-h5 " + out,
                 &status);
  ASSERT_EQ(status, 0) << log;
  h5::File f(out, h5::Mode::read);
  EXPECT_EQ(f.attr_string("/", "attn_pattern"), "RRRR");  // from the checkpoint's meta, not the preset's RRSS
  auto logits = f.read("logits");
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3}));
  model.module()->eval();
  torch::NoGradGuard no_grad;
  auto ref = model.forward(test::golden("ravlt_micro_rrss.h5", "input"));
  EXPECT_LE(test::max_abs_err(logits, ref), 1e-6);
  log = run(std::string(RALA_BINARY) + " predict --model ravlt_micro --checkpoint " + ckpt + " " +
                test::data_path("images/rgb_3x2.png"),
            &status);
  ASSERT_EQ(status, 0) << log;
  const bool named = log.find("1. cat") != std::string::npos || log.find("1. dog") != std::string::npos ||
                     log.find("1. bird") != std::string::npos;
  EXPECT_TRUE(named) << log;  // class names from the checkpoint's meta
}

TEST(Predict, ImagesPrintTopK) {
  std::vector<std::string> images;
  for (const auto& e : fs::recursive_directory_iterator(test::data_path("images")))
    if (e.is_regular_file() && (e.path().extension() == ".png" || e.path().extension() == ".jpg") &&
        e.path().string().find("corrupt") == std::string::npos && e.path().string().find("truncated") == std::string::npos)
      images.push_back(e.path().string());
  ASSERT_FALSE(images.empty());
  images.resize(std::min<size_t>(images.size(), 2));
  std::string cmd = std::string(RALA_BINARY) + " predict --model ravlt_micro --top-k 3";
  for (const auto& i : images) cmd += " " + i;
  int status = 0;
  auto out = run(cmd, &status);
  ASSERT_EQ(status, 0) << out;
  for (const auto& i : images) EXPECT_NE(out.find(i + "\n  1. class "), std::string::npos) << out;
  EXPECT_NE(out.find("  3. class "), std::string::npos) << out;
  EXPECT_EQ(out.find("  4. class "), std::string::npos) << out;
}

TEST(Predict, BadInputIsOneLineAndLeavesNoFile) {
  TempDir tmp;
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " predict --model ravlt_micro " + (tmp.path / "missing.png").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("missing.png"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  // An input of the wrong shape: refused, and nothing at the output path.
  const auto bad = (tmp.path / "bad.h5").string(), target = (tmp.path / "out.h5").string();
  h5::write_tensor(bad, "input", torch::zeros({2, 1, 8, 8}));
  out = run(std::string(RALA_BINARY) + " predict --model ravlt_micro --input-h5 " + bad + " --output-h5 " + target,
            &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("must be (N, 3, H, W)"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(target));
  EXPECT_FALSE(fs::exists(target + ".partial"));
  // A checkpoint that does not fit the model: names the checkpoint and the mismatch.
  out = run(std::string(RALA_BINARY) + " predict --model ravlt_t --checkpoint " +
                test::data_path("checkpoint_official_micro.pth") + " --input-h5 " +
                test::data_path("ravlt_micro_rrss.h5") + " --output-h5 " + target,
            &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("does not fit ravlt_t"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(target));
}

}  // namespace
}  // namespace rala
