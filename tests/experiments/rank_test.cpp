// `rala rank` as a user runs it: files per pattern and a table; refusal to overwrite; no file after a mid-run error;
// clear errors for unknown probes and pattern letters.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "analysis/h5_store.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

std::string run(const std::string& cmd, int* status) { return test::run_command(cmd, status); }

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("rala_rank") {}
};

const std::string kBase = std::string(RALA_BINARY) + " rank --model ravlt_micro --quiet --batch-size 2 ";

TEST(RankCommand, OneFilePerPatternAndAComparisonTable) {
  TempDir tmp;
  int status = 0;
  auto out = run(kBase + "--attn-pattern RRSS --attn-pattern LLSS --data synthetic --num-images 3 --out " +
                     tmp.path.string(),
                 &status);
  ASSERT_EQ(status, 0) << out;
  for (const char* p : {"RRSS", "LLSS"}) {
    const auto file = (tmp.path / (std::string("ravlt_micro_") + p + ".h5")).string();
    ASSERT_TRUE(fs::exists(file)) << file;
    h5::File f(file, h5::Mode::read);
    EXPECT_EQ(f.attr_int("/", "schema_version"), 1);
    EXPECT_EQ(f.attr_int("/", "num_images"), 3);
    EXPECT_EQ(f.attr_string("/", "attn_pattern"), p);
    EXPECT_EQ(f.read_strings("/images/names").size(), 3u);
    EXPECT_EQ(f.read("/layers/0.0/kv_buffer/rank").size(0), 3);
    EXPECT_NE(f.attr_string("/", "command_line").find("rank"), std::string::npos);
  }
  EXPECT_NE(out.find("kv_buffer: numerical rank | effective rank"), std::string::npos) << out;
  EXPECT_NE(out.find("| RRSS"), std::string::npos) << out;
  EXPECT_NE(out.find("| LLSS"), std::string::npos) << out;
}

TEST(RankCommand, RefusesToOverwriteAndLeavesTheFileUntouched) {
  TempDir tmp;
  const auto file = tmp.path / "ravlt_micro_RRSS.h5";
  { std::ofstream(file) << "precious"; }
  const auto before = fs::last_write_time(file);
  int status = 0;
  auto out = run(kBase + "--attn-pattern RRSS --data synthetic --num-images 2 --out " + tmp.path.string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("exists; pass --overwrite"), std::string::npos) << out;
  std::ifstream in(file);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "precious");
  EXPECT_EQ(fs::last_write_time(file), before);
  out = run(kBase + "--attn-pattern RRSS --data synthetic --num-images 2 --overwrite --out " + tmp.path.string(), &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(h5::File(file.string(), h5::Mode::read).attr_int("/", "num_images"), 2);
}

TEST(RankCommand, AnErrorMidRunLeavesNoFile) {
  TempDir tmp;
  const auto images = tmp.path / "images";
  fs::create_directories(images);
  fs::copy_file(test::data_path("images/rgb_3x2.png"), images / "a.png");
  fs::copy_file(test::data_path("images/rgb_3x2.png"), images / "b.png");
  fs::copy_file(test::data_path("images/corrupt.png"), images / "c.png");  // in the second batch
  int status = 0;
  auto out = run(kBase + "--data " + images.string() + " --out " + (tmp.path / "out").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("c.png"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(tmp.path / "out" / "ravlt_micro_RRSS.h5"));
  EXPECT_FALSE(fs::exists(tmp.path / "out" / "ravlt_micro_RRSS.h5.partial"));
}

TEST(RankCommand, UnknownProbeOrPatternLetterIsAClearError) {
  TempDir tmp;
  int status = 0;
  auto out = run(kBase + "--probes kv_buffer,kv --data synthetic --num-images 1 --out " + tmp.path.string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("unknown probe 'kv'"), std::string::npos) << out;
  out = run(kBase + "--attn-pattern RRQS --data synthetic --num-images 1 --out " + tmp.path.string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("unknown attention pattern letter 'Q'"), std::string::npos) << out;
  EXPECT_TRUE(fs::is_empty(tmp.path));
}

TEST(RankCommand, SpectraMethodIsAFlagAndRecordedPerProbe) {
  // Default gram, --spectra exact: the method is an attribute of every probe group, and on the same images and weights
  // the ranks agree wherever no exact σ lies within the Gram error (1e-4 relative) of numpy's threshold.
  TempDir tmp;
  int status = 0;
  const std::string args = "--attn-pattern RRSS --data synthetic --num-images 4 --probes kv_buffer,output,output_gated_all_heads ";
  auto out = run(kBase + args + "--out " + (tmp.path / "gram").string(), &status);
  ASSERT_EQ(status, 0) << out;
  out = run(kBase + args + "--spectra exact --out " + (tmp.path / "exact").string(), &status);
  ASSERT_EQ(status, 0) << out;
  h5::File g((tmp.path / "gram" / "ravlt_micro_RRSS.h5").string(), h5::Mode::read);
  h5::File e((tmp.path / "exact" / "ravlt_micro_RRSS.h5").string(), h5::Mode::read);
  int64_t compared = 0;
  for (const char* layer : {"0.0", "1.0", "2.0", "2.1", "3.0"})
    for (const char* probe : {"kv_buffer", "output", "output_gated_all_heads"}) {
      const std::string pg = std::string("/layers/") + layer + "/" + probe;
      if (!e.exists(pg)) continue;
      EXPECT_EQ(g.attr_string(pg, "spectra_method"), "gram-syevd") << pg;
      EXPECT_EQ(e.attr_string(pg, "spectra_method"), "qr-gesdd") << pg;
      auto sv = e.read(pg + "/singular_values");  // (n, heads, k)
      auto rank_e = e.read(pg + "/rank"), rank_g = g.read(pg + "/rank");
      const double eps = std::ldexp(1.0, -23);
      const double size = static_cast<double>(std::max(e.attr_int(pg, "rows"), e.attr_int(pg, "cols")));
      for (int64_t b = 0; b < sv.size(0); ++b)
        for (int64_t h = 0; h < sv.size(1); ++h) {
          auto s = sv[b][h];
          const double tau = s[0].item<double>() * size * eps;
          const bool band = (s - tau).abs().le(1e-4 * tau).any().item<bool>();
          if (band) continue;
          EXPECT_EQ(rank_g[b][h].item<int32_t>(), rank_e[b][h].item<int32_t>()) << pg << " " << b << " " << h;
          ++compared;
        }
    }
  EXPECT_GT(compared, 40);
  out = run(kBase + "--spectra svd --data synthetic --num-images 1 --out " + (tmp.path / "bad").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("--spectra"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(tmp.path / "bad"));
}

TEST(RankCommand, TimmDeitCheckpointsInBothFormats) {
  // timm's DeiT as timm saves it (.pth with 'model', model.safetensors), reduced to 2 blocks: the depth comes from the
  // checkpoint, the keys match strictly, the attention maps are (1 + N)² with the cls token.
  for (const char* file : {"timm_deit_tiny_depth2.pth", "timm_deit_tiny_depth2.safetensors"}) {
    TempDir tmp;
    int status = 0;
    auto out = run(std::string(RALA_BINARY) + " rank --model deit_tiny --quiet --batch-size 2 --checkpoint " +
                       test::data_path(file) + " --probes attention,output --data synthetic --num-images 2 --out " +
                       tmp.path.string(),
                   &status);
    ASSERT_EQ(status, 0) << out;
    h5::File f((tmp.path / "deit_tiny_S.h5").string(), h5::Mode::read);
    for (const char* layer : {"/layers/0.0", "/layers/0.1"}) {
      EXPECT_EQ(f.attr_int(layer, "tokens"), 197) << layer;
      EXPECT_EQ(f.attr_int(layer, "prefix_tokens"), 1) << layer;
      EXPECT_EQ(f.read(std::string(layer) + "/attention/rank").sizes(), (std::vector<int64_t>{2, 3})) << layer;
    }
    EXPECT_FALSE(f.exists("/layers/0.2"));
    EXPECT_NE(f.attr_string("/", "weights").find(file), std::string::npos);
  }
  // A checkpoint that does not fit: one line, nothing written.
  TempDir tmp;
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " rank --model deit_small --quiet --checkpoint " +
                     test::data_path("timm_deit_tiny_depth2.pth") + " --data synthetic --num-images 1 --out " +
                     tmp.path.string(),
                 &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("does not fit deit_small"), std::string::npos) << out;
  EXPECT_NE(out.find("blocks.0.attn.qkv.weight: state [576, 192] vs module [1152, 384]"), std::string::npos) << out;
  EXPECT_TRUE(fs::is_empty(tmp.path));
}

TEST(PredictCommand, TimmDeitGoldenLogits) {
  TempDir tmp;
  int status = 0;
  const auto logits = (tmp.path / "logits.h5").string();
  auto out = run(std::string(RALA_BINARY) + " predict --model deit_tiny --checkpoint " +
                     test::data_path("timm_deit_tiny_depth2.safetensors") + " --input-h5 " +
                     test::data_path("timm_deit_tiny_depth2.h5") + " --output-h5 " + logits,
                 &status);
  ASSERT_EQ(status, 0) << out;
  auto ref = test::golden("timm_deit_tiny_depth2.h5", "logits");
  EXPECT_LE(test::max_abs_err(h5::read_tensor(logits, "logits"), ref), 1e-4 * ref.abs().max().item<double>());
}

}  // namespace
}  // namespace rala
