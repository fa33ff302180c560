// Prefix tokens (DeiT's cls token) in every variant: the cls token attends and is attended; with the grid-bound terms
// neutralised, a layer with a prefix token is exactly the same layer on the flat token sequence (the cls token then
// being one more token): every global reduction includes it; the ViT layout is the same function as the RAVLT layout;
// the pooled fallback and the rejections.
#include <gtest/gtest.h>

#include "attention_variants/common.h"
#include "attention_variants/registry.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"

namespace rala {
namespace {

constexpr int64_t kC = 32, kHeads = 2, kH = 3, kW = 4, kN = kH * kW;

std::shared_ptr<AttentionBase> make_layer(Variant v, int64_t prefix, bool vit, const std::vector<SettingPair>& s = {}) {
  auto attn = make_attention(v, AttentionOptions(kC, kHeads).settings(s).prefix_tokens(prefix).vit_layout(vit));
  test::randomize(*attn, 5, 0.2);
  attn->to(torch::kFloat64);
  attn->eval();
  return attn;
}

AttentionContext grid_context(int64_t h, int64_t w, ProbeSink* probes = nullptr) {
  AttentionContext ctx;
  ctx.height = h;
  ctx.width = w;
  ctx.probes = probes;
  return ctx;
}

class EveryVariantWithPrefix : public ::testing::TestWithParam<Variant> {};

TEST_P(EveryVariantWithPrefix, TheClsTokenAttendsAndIsAttended) {
  for (bool vit : {true, false}) {
    auto attn = make_layer(GetParam(), 1, vit);
    EXPECT_EQ(attn->prefix_mode(), PrefixMode::joint);
    torch::NoGradGuard no_grad;
    auto tokens = test::random_input(2, 1 + kN, kC, 1, 3).squeeze(-1);  // (2, 13, C) float64
    ProbeCollector probes({Probe::output, Probe::attention});
    auto y = attn->forward_tokens(tokens, grid_context(kH, kW, &probes));
    ASSERT_EQ(y.sizes(), tokens.sizes());
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
    EXPECT_EQ(probes.get(Probe::output).size(2), 1 + kN);
    EXPECT_EQ(probes.get(Probe::attention).size(2), 1 + kN);
    EXPECT_EQ(probes.get(Probe::attention).size(3), 1 + kN);
    // The same call without a sink gives the same bits.
    EXPECT_TRUE(torch::equal(attn->forward_tokens(tokens, grid_context(kH, kW)), y));
    auto cls_moved = tokens.clone();
    cls_moved.select(1, 0).add_(1.0);
    auto y1 = attn->forward_tokens(cls_moved, grid_context(kH, kW));
    EXPECT_GT(test::max_abs_err(y1.narrow(1, 1, kN), y.narrow(1, 1, kN)), 1e-6) << "the grid does not read the cls token";
    auto patch_moved = tokens.clone();
    patch_moved.select(1, kN).add_(1.0);  // the last grid token
    auto y2 = attn->forward_tokens(patch_moved, grid_context(kH, kW));
    EXPECT_GT(test::max_abs_err(y2.select(1, 0), y.select(1, 0)), 1e-6) << "the cls token does not read the grid";
  }
}

TEST_P(EveryVariantWithPrefix, EveryParameterGetsAGradient) {
  auto attn = make_layer(GetParam(), 1, true);
  attn->train();
  auto tokens = test::random_input(2, 1 + kN, kC, 1, 4).squeeze(-1).requires_grad_(true);
  auto y = attn->forward_tokens(tokens, grid_context(kH, kW));
  (y * y).sum().backward();
  for (const auto& p : attn->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key() << " gets no gradient";
  }
  EXPECT_GT(tokens.grad().select(1, 0).abs().sum().item<double>(), 0.0);
}

TEST_P(EveryVariantWithPrefix, WrongPrefixCountsAreNamed) {
  auto attn = make_layer(GetParam(), 1, true);
  auto name = std::string(variant_info(GetParam()).name);
  EXPECT_NE(test::error_message([&] { attn->forward_tokens(torch::randn({1, kN, kC}, torch::kFloat64), grid_context(kH, kW)); })
                .find(name + ": tokens must be 1 prefix + 3x4 grid = 13, got 12"),
            std::string::npos);
  // A grid-only call (forward on the map) still works with the layer built for a prefix token: no prefix, no output.
  torch::NoGradGuard no_grad;
  auto x = test::random_input(1, kC, kH, kW, 2);
  EXPECT_EQ(attn->forward(x, AttentionContext::for_input(x, kC / kHeads)).sizes(), x.sizes());
  // A prefix the layer was not built for is refused, with its count.
  auto plain = make_layer(GetParam(), 0, true);
  AttentionContext ctx = AttentionContext::for_input(x, kC / kHeads);
  torch::Tensor out;
  ctx.prefix = torch::randn({1, 1, kC}, torch::kFloat64);
  ctx.prefix_output = &out;
  EXPECT_NE(test::error_message([&] { plain->forward(x, ctx); }).find("the call has 1 prefix tokens, the layer was built for 0"),
            std::string::npos);
}

std::vector<Variant> all_variants() {
  std::vector<Variant> v;
  for (const auto& info : kVariants) v.push_back(info.variant);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Registry, EveryVariantWithPrefix, ::testing::ValuesIn(all_variants()),
                         [](const auto& info) { return std::string(variant_info(info.param).name); });

// ------------------------------------------------------------------------------------------------
// With its grid-bound terms neutralised, a layer with a prefix token on an H×W grid is the same layer on the 1×(P + N)
// grid of the flat token sequence: the prefix token is a token of every global reduction.

void set_identity_depthwise(torch::Tensor w) {  // (C, 1, k, k) → the centre tap 1
  torch::NoGradGuard no_grad;
  w.zero_();
  w.select(2, w.size(2) / 2).select(2, w.size(3) / 2).fill_(1.0);
}

void zero_param(torch::Tensor t) {
  torch::NoGradGuard no_grad;
  t.zero_();
}

struct FlatCase {
  Variant variant;
  std::vector<SettingPair> settings;
  std::function<void(AttentionBase&)> neutralise;  ///< makes the grid-bound terms identities or zero
  bool middle = false;                              ///< the prefix sits in the middle of the scan (GLA)
};

std::vector<FlatCase> flat_cases() {
  const auto param = [](AttentionBase& m, const std::string& name) { return test::param(m, name); };
  return {
      {Variant::softmax, {{"rope", "0"}, {"lepe", "0"}}, {}},
      {Variant::linear, {}, {}},
      {Variant::focused, {}, [param](AttentionBase& m) { zero_param(param(m, "dwc.weight")), zero_param(param(m, "dwc.bias")); }},
      {Variant::rala, {{"rope", "0"}, {"lepe", "0"}}, {}},
      {Variant::transnormer, {}, {}},
      {Variant::hedgehog, {{"rope", "0"}, {"lepe", "0"}}, {}},
      {Variant::gla, {}, [param](AttentionBase& m) { set_identity_depthwise(param(m, "in_proj.0.weight")); }, true},
      {Variant::fixation, {{"neighbourhood", "off"}}, {}},
      {Variant::mlla, {{"rope", "0"}, {"lepe", "0"}},
       [param](AttentionBase& m) { set_identity_depthwise(param(m, "dwc.weight")), zero_param(param(m, "dwc.bias")); }},
      {Variant::pola, {{"pe_height", "0"}, {"pe_width", "0"}},
       [param](AttentionBase& m) { zero_param(param(m, "dwc.weight")), zero_param(param(m, "dwc.bias")); }},
      {Variant::inline_attention, {{"residual", "0"}}, {}},
      {Variant::mala, {{"rope", "0"}, {"lepe", "0"}}, {}},
      {Variant::litemla, {}, [param](AttentionBase& m) { set_identity_depthwise(param(m, "aggreg.0.0.weight")); }},
  };
}

TEST(PrefixTokens, WithGridTermsNeutralisedTheClsTokenIsOneMoreTokenOfTheFlatSequence) {
  for (const auto& c : flat_cases()) {
    SCOPED_TRACE(variant_info(c.variant).name);
    for (bool vit : {true, false}) {
      auto with_prefix = make_layer(c.variant, 1, vit, c.settings);
      if (c.neutralise) c.neutralise(*with_prefix);
      auto flat = make_layer(c.variant, 0, vit, c.settings);
      load_state_dict(*flat, state_dict(*with_prefix));
      torch::NoGradGuard no_grad;
      auto tokens = test::random_input(2, 1 + kN, kC, 1, 7).squeeze(-1);  // (2, 1 + N, C)
      auto y = with_prefix->forward_tokens(tokens, grid_context(kH, kW));
      // The flat sequence in the layer's scan order: the cls token first, or (GLA) at the middle of the grid.
      const int64_t mid = kN / 2;
      auto grid = tokens.narrow(1, 1, kN), cls = tokens.narrow(1, 0, 1);
      auto seq = c.middle ? torch::cat({grid.narrow(1, 0, mid), cls, grid.narrow(1, mid, kN - mid)}, 1) : tokens;
      auto out = map_to_tokens(flat->forward(tokens_to_map(seq, 1, 1 + kN), AttentionContext::for_input(
                                                                                tokens_to_map(seq, 1, 1 + kN), kC / kHeads)));
      if (c.middle) out = torch::cat({out.narrow(1, mid, 1), out.narrow(1, 0, mid), out.narrow(1, mid + 1, kN - mid)}, 1);
      EXPECT_LE(test::max_rel_err(y, out), 1e-10) << "vit_layout " << vit;
    }
  }
}

TEST(PrefixTokens, TheVitLayoutIsTheSameFunctionAsTheRavltLayout) {
  // The 1×1-conv weights (O, C, 1, 1) as Linear weights (O, C); Agent's and InLine's q + kv as one qkv.
  for (auto v : {Variant::rala, Variant::softmax, Variant::focused, Variant::agent, Variant::inline_attention}) {
    SCOPED_TRACE(variant_info(v).name);
    auto conv = make_layer(v, 1, false), linear = make_layer(v, 1, true);
    StateDict state;
    for (auto& [k, t] : state_dict(*conv)) {
      if (k == "q.weight" || k == "q.bias") continue;
      if (k == "kv.weight" || k == "kv.bias") {
        const auto suffix = k.substr(2);
        state["qkv" + suffix] = torch::cat({state_dict(*conv).at("q" + suffix), t});
      } else {
        state[k] = (k == "qkv.weight" || k == "qkvo.weight" || k == "proj.weight") && t.dim() == 4 ? t.flatten(1) : t;
      }
    }
    load_state_dict(*linear, state);
    torch::NoGradGuard no_grad;
    auto tokens = test::random_input(2, 1 + 64, kC, 1, 9).squeeze(-1);
    auto ctx = grid_context(8, 8);
    EXPECT_LE(test::max_rel_err(linear->forward_tokens(tokens, ctx), conv->forward_tokens(tokens, ctx)), 1e-12);
  }
}

/// A variant that knows nothing of prefix tokens: y = 2x on the grid.
class Doubling : public AttentionBase {
 public:
  Doubling() : AttentionBase(AttentionOptions(4, 1).prefix_tokens(2), Variant::linear) {}
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override {
    EXPECT_FALSE(ctx.prefix.defined());
    return 2 * x;
  }
  AttentionMacs macs(int64_t, int64_t) const override { return {}; }
};

TEST(PrefixTokens, ThePooledFallbackGivesEachPrefixTokenTheMeanOfTheGridOutputs) {
  Doubling layer;
  EXPECT_EQ(layer.prefix_mode(), PrefixMode::pooled);
  auto tokens = torch::randn({3, 2 + 6, 4}, torch::kFloat64);
  auto y = layer.forward_tokens(tokens, grid_context(2, 3));
  auto grid = tokens.narrow(1, 2, 6);
  EXPECT_TRUE(torch::allclose(y.narrow(1, 2, 6), 2 * grid));
  for (int64_t p = 0; p < 2; ++p) EXPECT_TRUE(torch::allclose(y.select(1, p), 2 * grid.mean(1)));
}

TEST(PrefixTokens, RopeLeavesThePrefixUnrotated) {
  auto x = torch::randn({1, 8, 3, 4});
  AttentionContext ctx = AttentionContext::for_input(x, 8);
  ctx.prefix = torch::randn({1, 2, 8});
  auto t = context_rope(ctx, 8, x);
  ASSERT_EQ(t.sin.sizes(), (std::vector<int64_t>{14, 8}));
  EXPECT_TRUE(torch::equal(t.sin.narrow(0, 0, 2), torch::zeros({2, 8})));
  EXPECT_TRUE(torch::equal(t.cos.narrow(0, 0, 2), torch::ones({2, 8})));
  EXPECT_TRUE(torch::equal(t.sin.narrow(0, 2, 12), ctx.rope_sin));
}

}  // namespace
}  // namespace rala
