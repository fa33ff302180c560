// Tests shared by every variant: registry, gradients, bad input, probe sinks, options.
#include <gtest/gtest.h>

#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {



class EveryVariant : public ::testing::TestWithParam<Variant> {};

TEST_P(EveryVariant, BackwardGivesFiniteGradientsForEveryParameter) {
  auto attn = make_attention(GetParam(), AttentionOptions(32, 2));
  test::randomize(*attn, 2, 0.2);
  auto x = test::random_input(2, 32, 5, 6, 3, torch::kFloat32).requires_grad_(true);
  auto y = attn->forward(x, AttentionContext::for_input(x, 16));
  ASSERT_EQ(y.sizes(), x.sizes());
  (y * y).sum().backward();
  for (const auto& p : attn->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key() << " gets no gradient";
  }
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
}

TEST_P(EveryVariant, AttachingASinkDoesNotChangeTheOutput) {
  auto attn = make_attention(GetParam(), AttentionOptions(32, 2));
  test::randomize(*attn, 4, 0.2);
  auto x = test::random_input(2, 32, 4, 5, 3, torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto plain = attn->forward(x, AttentionContext::for_input(x, 16));
  ProbeCollector all({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::alpha, Probe::attention,
                      Probe::normalizer_z});
  auto probed = attn->forward(x, AttentionContext::for_input(x, 16, &all));
  EXPECT_TRUE(torch::equal(plain, probed));
  EXPECT_TRUE(all.has(Probe::output));
  EXPECT_TRUE(all.has(Probe::output_gated));
  EXPECT_TRUE(all.has(Probe::attention));
  EXPECT_EQ(all.has(Probe::kv_buffer), variant_info(GetParam()).buffer);
  EXPECT_EQ(all.has(Probe::alpha), GetParam() == Variant::rala);
  // (B, h', N, d'): h' = h and d' = d for most variants (LiteMLA adds its multi-scale heads; Vicinity reduces d).
  const auto& out = all.get(Probe::output);
  ASSERT_EQ(out.dim(), 4);
  EXPECT_EQ(out.size(0), 2);
  EXPECT_EQ(out.size(2), 20);
  EXPECT_EQ(all.get(Probe::attention).sizes(), (std::vector<int64_t>{2, out.size(1), 20, 20}));
}

/// Counts what it is offered; wants nothing.
struct DeafSink : ProbeSink {
  bool wants(Probe) const override { return false; }
  void receive(Probe, const torch::Tensor&) override { ++received; }
  int received = 0;
};

TEST_P(EveryVariant, ASinkThatWantsNothingReceivesNothing) {
  auto attn = make_attention(GetParam(), AttentionOptions(32, 2));
  auto x = test::random_input(1, 32, 3, 3, 3, torch::kFloat32);
  DeafSink sink;
  torch::NoGradGuard no_grad;
  attn->forward(x, AttentionContext::for_input(x, 16, &sink));
  EXPECT_EQ(sink.received, 0);
}

TEST_P(EveryVariant, BadInputGivesClearErrors) {
  const auto v = GetParam();
  auto attn = make_attention(v, AttentionOptions(32, 2));
  auto x3 = torch::randn({2, 32, 9});
  EXPECT_ERROR_MENTIONS(attn->forward(x3, AttentionContext{}), "must be (B, C, H, W), got a 3-D tensor");
  auto wrong_c = torch::randn({1, 16, 3, 3});
  EXPECT_ERROR_MENTIONS(attn->forward(wrong_c, AttentionContext::for_input(wrong_c, 16)),
                        "input has 16 channels, the layer expects 32");
  auto empty = torch::randn({1, 32, 0, 4});
  EXPECT_ERROR_MENTIONS(attn->forward(empty, AttentionContext::for_input(empty, 16)), "grid must be non-empty");
  EXPECT_ERROR_MENTIONS(make_attention(v, AttentionOptions(30, 4)), "channels (30) must be divisible by heads (4)");
}

std::vector<Variant> all_variants() {
  std::vector<Variant> v;
  for (const auto& info : kVariants) v.push_back(info.variant);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Registry, EveryVariant, ::testing::ValuesIn(all_variants()),
                         [](const auto& info) { return std::string(variant_info(info.param).name); });

TEST(RopeVariants, HeadDimMustBeDivisibleBy4WhenRopeIsOn) {
  for (auto v : {Variant::rala, Variant::softmax}) {
    EXPECT_ERROR_MENTIONS(make_attention(v, AttentionOptions(36, 2)), "head dim divisible by 4, got 18");
    EXPECT_NO_THROW(make_attention(v, AttentionOptions(36, 2).set("rope", false)));
  }
}

TEST(Registry, NamesLettersAndPatterns) {
  EXPECT_EQ(variant_from_name("rala"), Variant::rala);
  EXPECT_EQ(variant_from_name("R"), Variant::rala);
  EXPECT_EQ(variant_from_name("Softmax"), Variant::softmax);
  EXPECT_EQ(variant_from_letter('c'), Variant::cosformer);
  const std::vector<Variant> rrss{Variant::rala, Variant::rala, Variant::softmax, Variant::softmax};
  EXPECT_EQ(parse_pattern("RRSS", 4), rrss);
  EXPECT_EQ(parse_pattern("rala,rala,softmax,softmax", 4), rrss);
  EXPECT_EQ(parse_pattern("R, rala ,S,softmax", 4), rrss);  // letters and names mixed, spaces trimmed
  EXPECT_EQ(parse_pattern("cosformer", 1), std::vector<Variant>{Variant::cosformer});
  EXPECT_EQ(pattern_letters(rrss), "RRSS");
  for (const auto& info : kVariants) {
    EXPECT_EQ(variant_from_name(info.name), info.variant);
    EXPECT_EQ(make_attention(info.variant, AttentionOptions(32, 2))->variant(), info.variant);
  }
  EXPECT_ERROR_MENTIONS(variant_from_name("performer"), "unknown attention variant 'performer'");
  EXPECT_ERROR_MENTIONS(parse_pattern("RRQS", 4), "unknown attention pattern letter 'Q'");
  EXPECT_ERROR_MENTIONS(parse_pattern("RRS", 4), "has 3 entries, the model has 4 stages");
  EXPECT_ERROR_MENTIONS(parse_pattern("rala,rala,performer,softmax", 4), "unknown variant 'performer'");
  EXPECT_ERROR_MENTIONS(parse_pattern("rala,,softmax,softmax", 4), "has an empty entry");
}

TEST(Settings, EveryVariantOwnsItsSettingsWithValidDefaults) {
  for (const auto& info : kVariants) {
    const auto& schema = settings_schema(info.variant);
    Settings s(info.name, &schema);
    for (const auto& spec : schema) {
      EXPECT_NO_THROW(s.set(spec.key, spec.default_value)) << info.name << "." << spec.key;
      EXPECT_EQ(s.text(spec.key), spec.default_value) << info.name << "." << spec.key << " is not canonical";
      EXPECT_FALSE(spec.help.empty()) << info.name << "." << spec.key;
    }
    // The built layer reports exactly the defaults.
    EXPECT_EQ(make_attention(info.variant, AttentionOptions(32, 2))->settings().describe(), s.describe());
  }
}

TEST(Settings, ValuesAreValidatedAndCanonical) {
  auto attn = make_attention(Variant::rala, AttentionOptions(64, 2).set("alpha", "off").set("gate", "false"));
  EXPECT_EQ(attn->settings().describe(), "alpha=0 gate=0 rope=1 lepe=1");
  EXPECT_EQ(make_attention(Variant::focused, AttentionOptions(64, 2).set("focusing_factor", "4"))
                ->settings()
                .integer("focusing_factor"),
            4);
  EXPECT_ERROR_MENTIONS(make_attention(Variant::rala, AttentionOptions(64, 2).set("alhpa", "0")),
                        "unknown setting 'alhpa' for attention variant rala (rala has: alpha, gate, rope, lepe)");
  EXPECT_ERROR_MENTIONS(make_attention(Variant::rala, AttentionOptions(64, 2).set("alpha", "maybe")),
                        "setting 'alpha' of attention variant rala expects a boolean");
  EXPECT_ERROR_MENTIONS(make_attention(Variant::focused, AttentionOptions(64, 2).set("dwc_kernel", "4")),
                        "setting 'dwc_kernel' of attention variant focused expects an odd integer in [1, 31], got '4'");
  EXPECT_ERROR_MENTIONS(make_attention(Variant::focused, AttentionOptions(64, 2).set("focusing_factor", "3x")),
                        "expects an integer in [1, 64], got '3x'");
  EXPECT_ERROR_MENTIONS(make_attention(Variant::linear, AttentionOptions(64, 2).set("normalizer", "avg")),
                        "expects one of: sum, mean, sum_clamp, got 'avg'");
  EXPECT_ERROR_MENTIONS(split_setting("alpha"), "must have the form key=value");
  EXPECT_ERROR_MENTIONS(probe_from_name("kv"), "unknown probe 'kv'");
  EXPECT_EQ(probe_from_name("kv_buffer"), Probe::kv_buffer);
}

TEST(Settings, DistributedOverAPatternByKeyAndScope) {
  const std::vector<Variant> rrss{Variant::rala, Variant::rala, Variant::softmax, Variant::softmax};
  // An unscoped key reaches every stage whose variant has it; a scoped one only that variant's stages.
  auto per_stage = distribute_settings(rrss, {"gate=0", "rala.alpha=0", "S.rope=off"});
  EXPECT_EQ(per_stage[0], (std::vector<SettingPair>{{"gate", "0"}, {"alpha", "0"}}));
  EXPECT_EQ(per_stage[1], per_stage[0]);
  EXPECT_EQ(per_stage[2], (std::vector<SettingPair>{{"gate", "0"}, {"rope", "off"}}));
  // Harness defaults apply where the key exists and never complain.
  per_stage = distribute_settings({Variant::linear}, {}, {"softmax.gate=0", "gate=0", "normalizer=mean"});
  EXPECT_EQ(per_stage[0], (std::vector<SettingPair>{{"normalizer", "mean"}}));
  EXPECT_ERROR_MENTIONS(distribute_settings(rrss, {"cosformer_index=raster_1d"}),
                        "'cosformer_index=raster_1d' applies to no layer of pattern 'RRSS': 'cosformer_index' is a "
                        "setting of cosformer");
  EXPECT_ERROR_MENTIONS(distribute_settings(rrss, {"chunk=4"}), "'chunk' is a setting of transnormer_diag");
  EXPECT_ERROR_MENTIONS(distribute_settings(rrss, {"chnuk=4"}), "unknown attention setting 'chnuk' (no variant has it");
  EXPECT_ERROR_MENTIONS(distribute_settings(rrss, {"linear.normalizer=mean"}), "the pattern 'RRSS' has no linear layer");
  EXPECT_ERROR_MENTIONS(distribute_settings(rrss, {"softmax.alpha=0"}), "unknown setting 'alpha' for attention variant softmax");
  EXPECT_ERROR_MENTIONS(distribute_settings(rrss, {"performer.alpha=0"}), "unknown variant 'performer' before the '.'");
  EXPECT_ERROR_MENTIONS(distribute_settings(rrss, {"alpha=2"}), "setting 'alpha' of attention variant rala expects a boolean");
}

}  // namespace
}  // namespace rala
