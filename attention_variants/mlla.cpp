#include "attention_variants/mlla.h"

#include <map>
#include <mutex>
#include <tuple>

#include "attention_variants/registry.h"

namespace rala {

namespace {

void check_rope_channels(int64_t channels) {
  TORCH_CHECK(channels > 0 && channels % 4 == 0, "MLLA: RoPE over the full C needs channels divisible by 4, got ",
              channels, " (rope=0 runs without it)");
}

/// (H, W, C/2) float64: cat[row·θ, col·θ], θ_k = 10000^(−k/K), K = C/4 (official RoPE.__init__).
torch::Tensor rope_angles(int64_t channels, int64_t height, int64_t width) {
  check_rope_channels(channels);
  TORCH_CHECK(height > 0 && width > 0, "MLLA: RoPE grid must be non-empty, got ", height, "x", width);
  const int64_t K = channels / 4;
  auto theta = torch::pow(10000.0, -torch::arange(K, torch::kFloat64) / static_cast<double>(K));        // (K,)
  auto rows = (torch::arange(height, torch::kFloat64).unsqueeze(1) * theta).unsqueeze(1);  // (H, 1, K)
  auto cols = (torch::arange(width, torch::kFloat64).unsqueeze(1) * theta).unsqueeze(0);   // (1, W, K)
  return torch::cat({rows.expand({height, width, K}), cols.expand({height, width, K})}, -1);  // (H, W, C/2)
}

}  // namespace

torch::Tensor mlla_rope_rotations(int64_t channels, int64_t height, int64_t width,
                                  const torch::TensorOptions& options) {
  auto angles = rope_angles(channels, height, width);
  return torch::stack({angles.cos(), angles.sin()}, -1).to(options).contiguous();  // (H, W, C/2, 2)
}

RopeTables mlla_rope_tables(int64_t channels, int64_t height, int64_t width, const torch::TensorOptions& options) {
  auto angles = rope_angles(channels, height, width).reshape({height * width, channels / 2, 1});
  auto pairs = [&](const torch::Tensor& t) {  // (N, C/2, 1) → (N, C): angle j at channels 2j and 2j+1
    return t.expand({height * width, channels / 2, 2}).reshape({height * width, channels}).to(options).contiguous();
  };
  return {pairs(angles.sin()), pairs(angles.cos())};
}

RopeTables cached_mlla_rope_tables(int64_t channels, int64_t height, int64_t width,
                                   const torch::TensorOptions& options) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int, std::string>;
  static std::mutex mutex;
  static std::map<Key, RopeTables> cache;
  Key key{channels, height, width, static_cast<int>(c10::typeMetaToScalarType(options.dtype())),
          options.device().str()};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) {
    // Normal (not inference) tensors without history, as in cached_rope_tables.
    c10::InferenceMode not_inference(false);
    torch::NoGradGuard no_grad;
    it = cache.emplace(key, mlla_rope_tables(channels, height, width, options.requires_grad(false))).first;
  }
  return it->second;
}

const SettingsSchema& MllaAttentionImpl::schema() {
  static const SettingsSchema s = {
      flag_setting("mixer", true,
                   "MLLA block's token mixer around the attention: SiLU(dwc(in_proj)) input, SiLU(act_proj) gate, "
                   "out_proj (off: the bare LinearAttention, v = x, no output projection)"),
      flag_setting("rope", true, "complex 2-D RoPE over the full C on φ(q), φ(k) in the numerator"),
      flag_setting("lepe", true, "3×3 depthwise LePE on v added to the output"),
      flag_setting("qkv_bias", true, "bias of the qk projection"),
      integer_setting("rotations_h", 8, 1, int64_t{1} << 16,
                      "rows of the stored rope.rotations buffer (official input_resolution; the forward regenerates "
                      "the rotations for each call's grid)"),
      integer_setting("rotations_w", 8, 1, int64_t{1} << 16,
                      "columns of the stored rope.rotations buffer (official input_resolution)")};
  return s;
}

std::vector<SettingPair> MllaAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  std::vector<SettingPair> out;
  const bool mixer = shapes.count("in_proj.weight") > 0;
  const std::string prefix = mixer ? "attn." : "";
  if (!mixer && shapes.count("qk.weight") == 0) return out;  // not an MLLA state dict
  out.emplace_back("mixer", mixer ? "1" : "0");
  out.emplace_back("qkv_bias", shapes.count(prefix + "qk.bias") ? "1" : "0");
  out.emplace_back("lepe", shapes.count(prefix + "lepe.weight") ? "1" : "0");
  auto it = shapes.find(prefix + "rope.rotations");
  out.emplace_back("rope", it != shapes.end() ? "1" : "0");
  if (it != shapes.end() && it->second.size() == 4) {
    out.emplace_back("rotations_h", std::to_string(it->second[0]));
    out.emplace_back("rotations_w", std::to_string(it->second[1]));
  }
  return out;
}

MllaAttentionImpl::MllaAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::mlla), mixer_(settings_.flag("mixer")), rope_(settings_.flag("rope")) {
  const int64_t C = options_.dim();
  check_head_split(C, options_.heads(), "MLLA");
  if (rope_) check_rope_channels(C);
  torch::nn::Module* core = this;  // LinearAttention's parameters: top level, or under "attn." inside the mixer
  if (mixer_) {
    in_proj = register_module("in_proj", torch::nn::Linear(C, C));
    act_proj = register_module("act_proj", torch::nn::Linear(C, C));
    dwc = register_module("dwc", depthwise(C, 3));
    core = register_module("attn", std::make_shared<torch::nn::Module>()).get();
  }
  qk = core->register_module("qk", torch::nn::Linear(torch::nn::LinearOptions(C, 2 * C).bias(settings_.flag("qkv_bias"))));
  if (settings_.flag("lepe")) lepe = core->register_module("lepe", depthwise(C, 3));
  if (rope_) {
    auto rope = core->register_module("rope", std::make_shared<torch::nn::Module>());
    rotations = rope->register_buffer(
        "rotations", mlla_rope_rotations(C, settings_.integer("rotations_h"), settings_.integer("rotations_w")));
  }
  if (mixer_) out_proj = register_module("out_proj", torch::nn::Linear(C, C));
}

torch::Tensor MllaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, "MLLA");
  auto prefix = context_prefix(ctx, options_, x, "MLLA");
  const int64_t C = options_.dim(), h = options_.heads(), H = x.size(2), W = x.size(3);
  const int64_t P = ctx.prefix_tokens(), N = P + H * W;  // all tokens, the prefix first
  auto v_map = x;                                       // (B, C, H, W): the grid's attention input a
  auto v_tokens = with_prefix(prefix, map_to_tokens(x));  // (B, N, C)
  torch::Tensor gate;
  if (mixer_) {
    gate = torch::silu(act_proj->forward(v_tokens));  // (B, N, C)
    emit_internal(ctx, "gate", gate);
    auto inner = in_proj->forward(v_tokens);                                                  // (B, N, C)
    v_map = torch::silu(dwc->forward(tokens_to_map(inner.narrow(1, P, H * W), H, W)));  // (B, C, H, W)
    // The depthwise conv is bound to the grid: a prefix token's attention input is SiLU(in_proj(x)).
    v_tokens = with_prefix(P > 0 ? torch::silu(inner.narrow(1, 0, P)) : torch::Tensor(), map_to_tokens(v_map));
    emit_internal(ctx, "attn_input", v_tokens);
  }
  auto qk_tokens = qk->forward(v_tokens);  // (B, N, 2C), rows [q | k]
  auto q = elu_feature(qk_tokens.narrow(-1, 0, C)), k = elu_feature(qk_tokens.narrow(-1, C, C));  // (B, N, C)
  auto q_num = q, k_num = k;
  if (rope_) {  // over the full C, before the head split; prefix tokens un-rotated
    auto tables = with_unrotated_prefix(cached_mlla_rope_tables(C, H, W, x.options()), P);
    q_num = theta_shift(q, tables.sin, tables.cos);
    k_num = theta_shift(k, tables.sin, tables.cos);
  }
  auto qh = token_heads(q, h), kh = token_heads(k, h);  // (B, h, N, d)
  auto qh_num = token_heads(q_num, h), kh_num = token_heads(k_num, h);
  emit_probe(ctx, Probe::feature_q, qh);
  emit_probe(ctx, Probe::feature_k, kh);
  emit_internal(ctx, "rope_q", qh_num);
  emit_internal(ctx, "rope_k", kh_num);
  auto r = linear_attention(qh_num, kh_num, qh, kh, token_heads(v_tokens, h), Normalizer::mean, kEps);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  emit_probe(ctx, Probe::output, r.output);
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention, implied_attention(qh_num, kh_num, r.z, Normalizer::mean));
  auto y = merge_token_heads(r.output);  // (B, N, C)
  if (!lepe.is_empty()) {  // on the grid tokens
    auto positional = map_to_tokens(lepe->forward(v_map));  // (B, H·W, C)
    emit_internal(ctx, "lepe", positional);
    y = P > 0 ? torch::cat({y.narrow(1, 0, P), y.narrow(1, P, H * W) + positional}, 1) : y + positional;
  }
  if (mixer_) {
    emit_internal(ctx, "attn_output", y);
    y = y * gate;
  }
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(y, h));
  if (mixer_) y = out_proj->forward(y);
  return finish_tokens(ctx, y, H, W);
}

AttentionMacs MllaAttentionImpl::macs(int64_t height, int64_t width) const {
  // Token-wise parts on T = P + H·W tokens, the depthwise convs on the grid's N.
  const int64_t C = options_.dim(), N = height * width, T = options_.prefix_tokens() + N, d = C / options_.heads();
  AttentionMacs m;
  m.projections = 2 * C * C * T + (lepe.is_empty() ? 0 : 9 * C * N);
  if (mixer_) m.projections += 3 * C * C * T + 9 * C * N;
  m.matmuls = 2 * T * d * C + T * C;
  return m;
}

}  // namespace rala
