// `rala layer` end to end: every golden file of the official code, rewritten into the layer-file format (attributes
// dim/heads/height/width, state_dict/<official key>, input (B, C, H, W)), run through the CLI, reproduces the golden
// output; bad files give one line and no output file.
#include <gtest/gtest.h>

#include <filesystem>

#include "analysis/h5_store.h"
#include "attention_variants/registry.h"
#include "experiments/layer.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

/// How a golden file holds its tokens.
enum class Layout { bchw, bnc, lbe };

struct GoldenLayer {
  const char* variant;
  const char* file;
  Layout layout;
  int64_t dim, heads, height, width;
  std::vector<std::string> settings;  ///< where the golden's configuration differs from the variant's defaults
  bool rope_tables = false;           ///< the file's rope_sin / rope_cos go to the layer
};

// ctest's listing prints each case by its golden file, not as 88 raw bytes.
void PrintTo(const GoldenLayer& layer, std::ostream* os) { *os << layer.file; }

std::vector<GoldenLayer> golden_layers() {
  return {
      {"rala", "rala_attention.h5", Layout::bchw, 64, 2, 7, 9, {}, true},
      {"softmax", "softmax_rope_attention.h5", Layout::bchw, 64, 2, 7, 9, {}, true},
      {"focused", "focused_linear_attention.h5", Layout::bnc, 64, 2, 8, 8, {}},
      {"cosformer", "cosformer_attention_1d.h5", Layout::lbe, 64, 2, 7, 9, {"cosformer_index=raster_1d"}},
      {"transnormer", "transnormer_norm_attention_t1.h5", Layout::lbe, 64, 2, 7, 9, {}},
      {"transnormer", "transnormer_norm_attention_t2.h5", Layout::lbe, 64, 2, 7, 9, {"phi=1+elu"}},
      {"transnormer", "transnormer_norm_attention_t1_urpe.h5", Layout::lbe, 64, 2, 7, 9, {}},  // urpe from the keys
      {"transnormer_diag", "transnormer_diag_attention_t1.h5", Layout::lbe, 64, 2, 7, 9, {"chunk=16"}},
      {"transnormer_diag", "transnormer_diag_attention_t2.h5", Layout::lbe, 64, 2, 7, 9,
       {"chunk=16", "kernel=softmax", "norm=0"}},
      {"vicinity", "vicinity_attention.h5", Layout::bnc, 64, 2, 7, 9, {}},
      {"vicinity", "vicinity_attention_sr2_prod.h5", Layout::bnc, 64, 2, 8, 6, {"form=product"}},  // sr, fr, se: keys
      {"vicinity", "vicinity_attention_clamp.h5", Layout::bnc, 64, 2, 7, 9, {}},
      {"gla", "gla2d_vig.h5", Layout::bchw, 64, 2, 7, 9, {}},
      {"mlla", "mlla_linear_attention.h5", Layout::bnc, 64, 2, 8, 8, {}},  // mixer=0 from the keys
      {"mala", "mala_attention.h5", Layout::bchw, 64, 2, 7, 9, {}, true},
      {"pola", "pola_linear_attention.h5", Layout::bnc, 64, 2, 7, 9, {}},
      {"inline", "inline_attention.h5", Layout::bnc, 64, 2, 7, 9, {}},
      {"agent", "agent_attention.h5", Layout::bnc, 64, 2, 8, 8, {}},
      {"litemla", "litemla_attention.h5", Layout::bchw, 64, 2, 7, 9, {}},
  };
}

/// (B, C, H, W) from the golden's layout.
torch::Tensor to_bchw(const torch::Tensor& t, Layout layout, int64_t H, int64_t W) {
  switch (layout) {
    case Layout::bchw: return t;
    case Layout::bnc: return t.transpose(1, 2).reshape({t.size(0), t.size(2), H, W});
    case Layout::lbe: return t.permute({1, 2, 0}).reshape({t.size(1), t.size(2), H, W});
  }
  return t;
}

/// Writes the layer-file form of a golden: the attributes, its state_dict, its input as (B, C, H, W).
void write_layer_file(const GoldenLayer& g, const std::string& path, const std::string& variant_attr = "") {
  h5::File in(test::data_path(g.file), h5::Mode::read);
  h5::File out(path, h5::Mode::truncate);
  out.set_attr("/", "dim", g.dim);
  out.set_attr("/", "heads", g.heads);
  out.set_attr("/", "height", g.height);
  out.set_attr("/", "width", g.width);
  if (!variant_attr.empty()) out.set_attr("/", "variant", variant_attr);
  for (const auto& key : in.list("state_dict")) out.write("state_dict/" + key, in.read("state_dict/" + key));
  out.write("input", to_bchw(in.read("input"), g.layout, g.height, g.width).contiguous());
  if (g.rope_tables) {
    out.write("rope_sin", in.read("rope_sin"));
    out.write("rope_cos", in.read("rope_cos"));
  }
}

std::string layer_command(const GoldenLayer& g, const std::string& in, const std::string& out) {
  std::string cmd = std::string(RALA_BINARY) + " layer --variant " + g.variant + " --input-h5 " + in + " --output-h5 " + out;
  for (const auto& s : g.settings) cmd += " --attn-opt " + s;
  return cmd;
}

class LayerGolden : public ::testing::TestWithParam<GoldenLayer> {};

TEST_P(LayerGolden, CliReproducesTheOfficialOutput) {
  const auto& g = GetParam();
  test::TempDir tmp("rala_layer");
  const auto in = (tmp.path / "in.h5").string(), out = (tmp.path / "out.h5").string();
  write_layer_file(g, in, g.variant);
  int status = 0;
  auto log = test::run_command(layer_command(g, in, out), &status);
  ASSERT_EQ(status, 0) << log;
  auto y = h5::read_tensor(out, "output");
  auto ref = to_bchw(test::golden(g.file, "output"), g.layout, g.height, g.width);
  ASSERT_EQ(y.sizes(), ref.sizes());
  EXPECT_LE(test::max_abs_err(y, ref), 1e-5 * std::max(1.0, ref.abs().max().item<double>())) << g.file;
  h5::File f(out, h5::Mode::read);
  EXPECT_EQ(f.attr_string("/", "variant"), variant_info(variant_from_name(g.variant)).name);
  EXPECT_NE(f.attr_string("/", "command_line").find("layer --variant"), std::string::npos);
  EXPECT_FALSE(fs::exists(out + ".partial"));
}

INSTANTIATE_TEST_SUITE_P(Goldens, LayerGolden, ::testing::ValuesIn(golden_layers()), [](const auto& info) {
  std::string name = info.param.file;  // the golden file names the case
  return name.substr(0, name.find('.'));
});

TEST(Layer, LearnedTablesAreSizedFromTheStateDict) {
  // FLatten's positional encoding (1, 64, 64) sets position_tokens=64 with no setting given.
  const auto g = golden_layers()[2];
  ASSERT_STREQ(g.variant, "focused");
  test::TempDir tmp("rala_layer");
  const auto in = (tmp.path / "in.h5").string();
  write_layer_file(g, in);
  LayerArgs a{"focused", in, "", {}};
  EXPECT_NE(run_layer(a).settings.find("position_tokens=64"), std::string::npos);
}

TEST(Layer, BadFilesGiveOneLineAndNoOutput) {
  const auto g = golden_layers()[0];
  test::TempDir tmp("rala_layer");
  const auto good = (tmp.path / "good.h5").string(), out = (tmp.path / "out.h5").string();
  write_layer_file(g, good);
  auto expect_error = [&](const std::string& cmd, const std::string& text) {
    int status = 0;
    auto log = test::run_command(cmd, &status);
    EXPECT_NE(status, 0) << cmd;
    EXPECT_NE(log.find(text), std::string::npos) << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(out + ".partial"));
  };
  const std::string bin = std::string(RALA_BINARY) + " layer ";
  // The file says another variant.
  const auto tagged = (tmp.path / "tagged.h5").string();
  write_layer_file(g, tagged, "softmax");
  expect_error(bin + "--variant rala --input-h5 " + tagged + " --output-h5 " + out,
               "is for variant 'softmax', --variant is 'rala'");
  // A key missing, one extra, one of the wrong shape: one error naming them.
  const auto broken = (tmp.path / "broken.h5").string();
  fs::copy_file(good, broken);
  {
    h5::File f(broken, h5::Mode::read_write);
    f.write("state_dict/lepe.bias", torch::zeros({3}));
    f.write("state_dict/extra.weight", torch::zeros({2}));
  }
  expect_error(bin + "--variant rala --input-h5 " + broken + " --output-h5 " + out, "lepe.bias");
  // An attribute missing; the input not matching the attributes.
  const auto no_attr = (tmp.path / "no_attr.h5").string();
  {
    h5::File f(no_attr, h5::Mode::truncate);
    f.set_attr("/", "dim", int64_t{64});
    f.write("input", torch::zeros({1, 64, 7, 9}));
  }
  expect_error(bin + "--variant rala --input-h5 " + no_attr + " --output-h5 " + out, "has no root attribute 'heads'");
  const auto wrong_input = (tmp.path / "wrong_input.h5").string();
  fs::copy_file(good, wrong_input);
  h5::write_tensor(wrong_input, "input", torch::zeros({1, 64, 9, 7}));
  expect_error(bin + "--variant rala --input-h5 " + wrong_input + " --output-h5 " + out,
               "must be (B, 64, 7, 9) as the attributes say");
  // A setting the variant does not have; a setting scoped to another variant.
  expect_error(bin + "--variant rala --attn-opt chunk=4 --input-h5 " + good + " --output-h5 " + out,
               "unknown setting 'chunk' for attention variant rala");
  expect_error(bin + "--variant rala --attn-opt softmax.gate=0 --input-h5 " + good + " --output-h5 " + out,
               "scoped to another variant");
  // The gate switched off: the file's qkvo (4C rows) no longer fits the layer's qkv (3C rows).
  expect_error(bin + "--variant rala --attn-opt gate=0 --input-h5 " + good + " --output-h5 " + out, "qkv");
  expect_error(bin + "--variant performer --input-h5 " + good + " --output-h5 " + out,
               "unknown attention variant 'performer'");
}

}  // namespace
}  // namespace rala
