// RAVLT harness: parity with the official model code on the golden micro models (official keys), and the official
// presets' exact parameter and state-dict entry counts.
#include <gtest/gtest.h>

#include "models/presets.h"
#include "tests/test_util.h"

namespace rala {
namespace {

class RavltGolden : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(RavltGolden, LogitsAndStageFeaturesMatchOfficialModel) {
  const auto [file, pattern] = GetParam();
  Ravlt model(ravlt_micro().attn_pattern(pattern));
  test::load_state(*model, file);
  model->eval();
  auto x = test::golden(file, "input");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> features;
  model->forward_features(x, &features);
  ASSERT_EQ(features.size(), 5u);
  for (size_t i = 0; i < features.size(); ++i) {
    auto ref = test::golden(file, "features/" + std::to_string(i));
    EXPECT_LE(test::max_abs_err(features[i], ref), 1e-4 * std::max(1.0, ref.abs().max().item<double>())) << i;
  }
  auto ref = test::golden(file, "logits");
  EXPECT_LE(test::max_abs_err(model->forward(x), ref), 1e-4 * std::max(1.0, ref.abs().max().item<double>()));
}

INSTANTIATE_TEST_SUITE_P(Micro, RavltGolden,
                         ::testing::Values(std::make_pair("ravlt_micro_rrss.h5", "RRSS"),
                                           std::make_pair("ravlt_micro_rrrr.h5", "RRRR")),
                         [](const auto& info) { return std::string(info.param.second); });

TEST(RavltPresets, ParameterAndEntryCountsAreTheOfficialOnes) {
  const std::vector<std::tuple<std::string, int64_t, size_t>> expected = {
      {"ravlt_t", 14897768, 302}, {"RAVLT_S", 25591208, 462}, {"ravlt_b", 48241288, 622}, {"ravlt_l", 95242440, 822}};
  for (const auto& [name, params, entries] : expected) {
    Ravlt model(ravlt_preset(name));
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    EXPECT_EQ(n, params) << name;
    EXPECT_EQ(model->named_parameters().size() + model->named_buffers().size(), entries) << name;
  }
}

TEST(RavltPresets, NonSquareInputAndBadNames) {
  Ravlt model(ravlt_micro());
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(model->forward(torch::randn({2, 3, 48, 80})).sizes(), (std::vector<int64_t>{2, 10}));
  try {
    ravlt_preset("ravlt_xl");
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("unknown model preset 'ravlt_xl'"), std::string::npos);
  }
}

}  // namespace
}  // namespace rala
