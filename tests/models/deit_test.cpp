// DeiT harness: timm's DeiT. timm's own VisionTransformer made the golden and the checkpoint fixtures
// (tests/data/make_timm_deit_golden.py); both checkpoint formats load with strict matching and give timm's logits at
// 224² and at a non-square size; the position embedding resamples as timm's resample_abs_pos_embed; parameter counts,
// key names and shapes are timm's; every variant takes the cls token; rejections are one line.
#include <gtest/gtest.h>

#include <cstdio>

#include "analysis/h5_store.h"
#include "experiments/model_loading.h"
#include "models/checkpoint.h"
#include "models/deit.h"
#include "models/macs.h"
#include "tests/test_util.h"

namespace rala {
namespace {

constexpr const char* kGolden = "timm_deit_tiny_depth2.h5";

/// The golden's configuration: deit_tiny widths, depth 2, 10 classes.
Deit golden_model() {
  Deit model(deit_tiny().depth(2).num_classes(10));
  model->eval();
  return model;
}

/// max |ours − timm| / max |timm logit|, printed for the README.
double logit_deviation(Deit& model, const std::string& input, const std::string& logits, const char* what) {
  torch::NoGradGuard no_grad;
  auto ref = test::golden(kGolden, logits);
  auto y = model->forward(test::golden(kGolden, input));
  const double dev = test::max_abs_err(y, ref) / ref.abs().max().item<double>();
  std::printf("[ deviation ] %s %s: max|ours - timm| / max|timm| = %.3g\n", what, input.c_str(), dev);
  return dev;
}

TEST(Deit, PlainSoftmaxHasTimmParameterCounts) {
  EXPECT_EQ(count_parameters(*Deit(deit_tiny())), 5717416);   // timm deit_tiny_patch16_224
  EXPECT_EQ(count_parameters(*Deit(deit_small())), 22050664); // timm deit_small_patch16_224
}

TEST(Deit, TimmKeyNamesAndShapes) {
  // Every entry of timm's state dict, with timm's shape, and nothing else.
  auto timm = read_checkpoint(test::data_path("timm_deit_tiny_depth2.pth")).state;
  auto ours = state_dict(*golden_model());
  ASSERT_EQ(ours.size(), timm.size());
  for (const auto& [key, t] : timm) {
    ASSERT_TRUE(ours.count(key)) << key;
    EXPECT_EQ(ours.at(key).sizes(), t.sizes()) << key;
  }
  EXPECT_EQ(ours.at("blocks.1.attn.qkv.weight").sizes(), (std::vector<int64_t>{576, 192}));
  EXPECT_EQ(ours.at("blocks.1.attn.proj.weight").sizes(), (std::vector<int64_t>{192, 192}));
}

TEST(Deit, TimmCheckpointsGiveTimmLogitsAt224AndNonSquare) {
  for (const char* file : {"timm_deit_tiny_depth2.pth", "timm_deit_tiny_depth2.safetensors"}) {
    auto model = golden_model();
    load_state_dict(*model, read_checkpoint(test::data_path(file)).state);  // strict
    EXPECT_LE(logit_deviation(model, "input", "logits", file), 1e-4);
    EXPECT_LE(logit_deviation(model, "input_160x256", "logits_160x256", file), 1e-4);
  }
}

TEST(Deit, PositionEmbeddingResamplesAsTimm) {
  auto model = golden_model();
  load_state_dict(*model, read_checkpoint(test::data_path("timm_deit_tiny_depth2.safetensors")).state);
  torch::NoGradGuard no_grad;
  auto ours = resample_abs_pos_embed(model->pos_embed, 10, 16, 14, 14);
  auto ref = test::golden(kGolden, "pos_embed_160x256");
  EXPECT_LE(test::max_abs_err(ours, ref), 1e-6 * std::max(1.0, ref.abs().max().item<double>()));
  EXPECT_TRUE(torch::equal(ours.narrow(1, 0, 1), model->pos_embed.narrow(1, 0, 1)));  // the cls entry is kept
  EXPECT_TRUE(torch::equal(resample_abs_pos_embed(model->pos_embed, 14, 14, 14, 14), model->pos_embed));
  // Without antialias (the pre-0.9 timm rule) the downsampled rows differ: the rule is not a no-op here.
  namespace F = torch::nn::functional;
  auto plain = F::interpolate(model->pos_embed.narrow(1, 1, 196).reshape({1, 14, 14, 192}).permute({0, 3, 1, 2}),
                              F::InterpolateFuncOptions().size(std::vector<int64_t>{10, 16}).mode(torch::kBicubic)
                                  .align_corners(false));
  EXPECT_GT(test::max_abs_err(plain.permute({0, 2, 3, 1}).reshape({1, 160, 192}), ref.narrow(1, 1, 160)), 1e-3);
  EXPECT_NE(test::error_message([&] { resample_abs_pos_embed(model->pos_embed, 10, 16, 13, 14); }).find("must be (1, 1 + 13x14"),
            std::string::npos);
}

TEST(Deit, ClsTokenAttendsAndIsAttendedOverAllTokens) {
  auto model = golden_model();
  load_state_dict(*model, read_checkpoint(test::data_path("timm_deit_tiny_depth2.pth")).state);
  ProbeCollector probes({Probe::attention, Probe::output});
  model->probe_sinks = [&](int64_t, int64_t b) { return b == 0 ? &probes : nullptr; };
  torch::NoGradGuard no_grad;
  model->forward(test::golden(kGolden, "input_160x256"));
  const auto& a = probes.get(Probe::attention);
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{1, 3, 161, 161}));  // (1 + 10·16)² per head
  EXPECT_LE((a.sum(-1) - 1).abs().max().item<double>(), 1e-5);     // softmax rows over all 161 keys
  EXPECT_GT(a.select(3, 0).min().item<double>(), 0.0);               // every token attends the cls token
  EXPECT_EQ(probes.get(Probe::output).sizes(), (std::vector<int64_t>{1, 3, 161, 64}));
}

TEST(Deit, TheOldPooledHarnessWouldMissTimmsLogits) {
  // The same weights through the pooled read-out (the cls token kept out of the mixer) are far from timm: the golden
  // can tell the two apart.
  auto model = golden_model();
  load_state_dict(*model, read_checkpoint(test::data_path("timm_deit_tiny_depth2.pth")).state);
  torch::NoGradGuard no_grad;
  auto x = test::golden(kGolden, "input");
  const int64_t C = 192;
  auto y = torch::cat({model->cls_token, model->patch_embed->forward(x).flatten(2).transpose(1, 2)}, 1) +
           model->pos_embed;
  for (auto& block : model->blocks) {
    auto h = block->norm1->forward(y);
    auto patches = tokens_to_map(h.narrow(1, 1, 196), 14, 14);
    AttentionContext ctx;
    ctx.height = ctx.width = 14;
    // the grid alone, then the mean of its outputs for the cls token: the layer's own projections
    auto grid_only = make_attention(Variant::softmax, AttentionOptions(C, 3).vit_layout(true).settings(
                                                         {{"gate", "0"}, {"rope", "0"}, {"lepe", "0"}}));
    load_state_dict(*grid_only, state_dict(*block->attn));
    auto mixed = map_to_tokens(grid_only->forward(patches, ctx));
    y = y + torch::cat({mixed.mean(1, true), mixed}, 1);
    y = y + block->fc2->forward(torch::gelu(block->fc1->forward(block->norm2->forward(y))));
  }
  auto pooled = model->head->forward(model->norm->forward(y).select(1, 0));
  auto ref = test::golden(kGolden, "logits");
  EXPECT_GT(test::max_abs_err(pooled, ref) / ref.abs().max().item<double>(), 1e-2);
}

TEST(Deit, CheckpointRejectionsAreOneLine) {
  auto good = read_checkpoint(test::data_path("timm_deit_tiny_depth2.safetensors")).state;
  auto expect_error = [&](StateDict state, const std::string& text) {
    auto model = golden_model();
    auto msg = test::error_message([&] { load_state_dict(*model, state); });
    EXPECT_NE(msg.find(text), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  };
  // The conv-shaped qkv of the old harness ([576, 192, 1, 1]) is named with both shapes.
  auto conv = good;
  conv["blocks.0.attn.qkv.weight"] = conv["blocks.0.attn.qkv.weight"].reshape({576, 192, 1, 1});
  expect_error(conv, "blocks.0.attn.qkv.weight");
  expect_error(conv, "[576, 192, 1, 1]");
  auto missing = good;
  missing.erase("blocks.1.attn.proj.bias");
  expect_error(missing, "blocks.1.attn.proj.bias");
  auto extra = good;
  extra["dist_token"] = torch::zeros({1, 1, 192});  // a distilled DeiT's entry
  expect_error(extra, "dist_token");
  // A depth taken from the checkpoint; a gap in the numbering is named.
  EXPECT_EQ(deit_depth_of(good, "x"), 2);
  auto gap = good;
  for (auto it = gap.begin(); it != gap.end();)
    it = it->first.rfind("blocks.0.", 0) == 0 ? gap.erase(it) : std::next(it);
  EXPECT_NE(test::error_message([&] { deit_depth_of(gap, "x.pth"); }).find("'x.pth': DeiT blocks must be numbered 0 to n-1"),
            std::string::npos);
}

TEST(Deit, LoadModelTakesTheDepthFromTheCheckpoint) {
  ModelFlags flags;
  flags.model = "deit_tiny";
  flags.checkpoint = test::data_path("timm_deit_tiny_depth2.pth");
  auto loaded = load_model(flags);
  EXPECT_EQ(loaded.model->attention_layers().size(), 2u);
  EXPECT_EQ(loaded.model->deit()->options().num_classes(), 10);
  torch::NoGradGuard no_grad;
  auto ref = test::golden(kGolden, "logits");
  EXPECT_LE(test::max_abs_err(loaded.model->forward(test::golden(kGolden, "input")), ref),
            1e-4 * ref.abs().max().item<double>());
  flags.depth = 3;
  EXPECT_NE(test::error_message([&] { load_model(flags); }).find("has 2 DeiT blocks, --depth asks for 3"), std::string::npos);
  flags.depth = 0;
  flags.model = "deit_small";  // 384 wide: the width-bound entries are named with both shapes (the first 20 of the
                               // 31, then the count), on one line
  auto msg = test::error_message([&] { load_model(flags); });
  EXPECT_NE(msg.find("does not fit deit_small"), std::string::npos) << msg;
  EXPECT_NE(msg.find("blocks.0.attn.qkv.weight: state [576, 192] vs module [1152, 384]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(31 in all)"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

TEST(Deit, EveryVariantTakesTheClsTokenOnSquareAndOtherSizes) {
  for (const auto& info : kVariants) {
    Deit model(deit_tiny().depth(2).num_classes(7).attn_pattern(std::string(1, info.letter)));
    model->eval();
    EXPECT_EQ(model->blocks[0]->attn->prefix_mode(), PrefixMode::joint) << info.name;
    torch::NoGradGuard no_grad;
    ProbeCollector probes({Probe::output});
    model->probe_sinks = [&](int64_t, int64_t b) { return b == 1 ? &probes : nullptr; };
    auto x = torch::randn({2, 3, 224, 224});
    auto y = model->forward(x);
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 7})) << info.name;
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << info.name;
    EXPECT_EQ(probes.get(Probe::output).size(2), 197) << info.name;
    model->probe_sinks = nullptr;
    EXPECT_EQ(model->forward(torch::randn({1, 3, 160, 256})).sizes(), (std::vector<int64_t>{1, 7})) << info.name;
  }
}

TEST(Deit, BadInputIsNamed) {
  Deit model(deit_tiny().depth(1));
  EXPECT_NE(test::error_message([&] { model->forward(torch::randn({1, 3, 100, 224})); })
                .find("100x224 must be a positive multiple of the patch size (16)"),
            std::string::npos);
  EXPECT_THROW(Deit(deit_tiny().attn_pattern("RS")), c10::Error);
  EXPECT_NE(test::error_message([] { AnyModel("ravlt_micro", "", {}, -1, -1, 2); }).find("applies to the DeiT presets only"),
            std::string::npos);
}

}  // namespace
}  // namespace rala
