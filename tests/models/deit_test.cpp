// DeiT harness: timm's parameter counts with plain softmax attention, every variant runs, and bad sizes are named.
#include <gtest/gtest.h>

#include "models/deit.h"
#include "models/macs.h"

namespace rala {
namespace {

TEST(Deit, PlainSoftmaxHasTimmParameterCounts) {
  EXPECT_EQ(count_parameters(*Deit(deit_tiny())), 5717416);   // timm deit_tiny_patch16_224
  EXPECT_EQ(count_parameters(*Deit(deit_small())), 22050664); // timm deit_small_patch16_224
}

TEST(Deit, TimmKeyNames) {
  Deit model(deit_tiny().depth(1));
  auto params = model->named_parameters();
  for (const char* key : {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight",
                          "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.bias", "blocks.0.mlp.fc1.weight",
                          "blocks.0.mlp.fc2.bias", "norm.weight", "head.weight"})
    EXPECT_NE(params.find(key), nullptr) << key;
}

TEST(Deit, EveryVariantRunsOnPatchGridAndOtherSizes) {
  for (const auto& info : kVariants) {
    Deit model(deit_tiny().depth(2).num_classes(7).attn_pattern(std::string(1, info.letter)));
    model->eval();
    torch::NoGradGuard no_grad;
    auto y = model->forward(torch::randn({2, 3, 224, 224}));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 7})) << info.name;
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << info.name;
    EXPECT_EQ(model->forward(torch::randn({1, 3, 160, 256})).sizes(), (std::vector<int64_t>{1, 7})) << info.name;
  }
}

TEST(Deit, ClsTokenReadsThePatchesThroughAttention) {
  // Changing one patch changes the logits read from the cls token (through the pooled attention read-out).
  Deit model(deit_tiny().depth(1).num_classes(5));
  model->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({1, 3, 64, 64});
  auto y0 = model->forward(x);
  x.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(0, 16), torch::indexing::Slice(0, 16)}, 3.0);
  EXPECT_GT((model->forward(x) - y0).abs().max().item<double>(), 1e-6);
}

TEST(Deit, BadInputIsNamed) {
  Deit model(deit_tiny().depth(1));
  try {
    model->forward(torch::randn({1, 3, 100, 224}));
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("100x224 must be a positive multiple of the patch size (16)"),
              std::string::npos)
        << e.what_without_backtrace();
  }
  EXPECT_THROW(Deit(deit_tiny().attn_pattern("RS")), c10::Error);
}

}  // namespace
}  // namespace rala
