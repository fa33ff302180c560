#pragma once
/// \file hedgehog.h
/// H — Hedgehog (Zhang et al., ICLR 2024): linear attention whose feature maps are learned to mimic softmax attention.
/// Source: HazyResearch/lolcats @ 375df84 (the same first author): src/model/feature_map.py (`SoftmaxDim` ∘
/// `FeatureMapMLP`, "untied_head_einsum"), src/model/linear_attention/linear_attention.py (`quadratic_attention`,
/// `softmax_attention`, `LinearAttentionState`), src/trainer/distill_attention_xent_mse.py (the mimicry loss).
///
/// In the RAVLT harness it is the softmax block (softmax.h) with softmax(d^-½ q kᵀ) replaced by Hedgehog's linear
/// attention, so that a trained softmax layer converts to Hedgehog keeping its `qkvo`, `lepe` and `proj` weights:
///   q, k, v, o = qkvo(x);  q, k ← RoPE(q), RoPE(k)         (before φ, as lolcats applies RoPE before its maps)
///   u = x W_n  (W = feature_map_{q,k}.mlp.layer (h, d, f), per head n; no bias)
///   φ(x) = clamp_min(cat[softmax_f(u), softmax_f(−u)], 1e-12)                     (2f features, two softmaxes)
///   S = Σ_j φ(k_j) v_jᵀ (2f×d),  z = Σ_j φ(k_j) (2f),  y_i = φ(q_i)ᵀ S / (φ(q_i)·z + ε)
///   out = proj((y + LePE₅ₓ₅(v)) ⊙ o)
/// No 1/√d in the linear branch. The implied map A_ij = φ(q_i)·φ(k_j) / (Σ_m φ(q_i)·φ(k_m) + ε) is lolcats'
/// quadratic_attention(causal=False).
///
/// Settings: gate, rope, lepe (default on, as softmax), feature_dim f (0 = head_dim/2; lolcats' Llama config d = 128,
/// f = 64), feature_init (kaiming = lolcats' default kaiming_uniform_ on the (h, d, f) tensor, fan_in d·f; identity =
/// lolcats' zero_init: eye(d, f) per head), eps (1e-12).
/// Probes: kv_buffer S (B, h, 2f, d), feature_q / feature_k φ (B, h, N, 2f), normalizer_z 1/(φq·z + ε) (B, h, N),
/// output, output_gated, attention (the normalised linear map). Internals (golden names): `k_sum` z (B, h, 2f),
/// `attn_softmax` and `softmax_output` (the softmax teacher on the same q, k, v: (B, h, N, N), (B, h, N, d)).
///
/// Distillation ("attention transfer", lolcats' train_attention mode): with set_distillation(true) the forward
/// computes the teacher's softmax map and output (no grad) and the student's normalised map and output on the same
/// q, k, v, keeps the mimicry losses (last_mimicry(), with the autograd graph to the feature maps) and passes the
/// TEACHER's output on through LePE, gate and proj, so every layer learns on teacher hidden states. Probes in this mode:
/// `output` / `output_gated` (the teacher's, as passed on), `attention` (the student's map), and the internals
/// `attn_softmax` / `softmax_output`. `rala distill` (experiments/distill.h) drives it.
///
/// Prefix tokens (DeiT's cls token; attention.h): as softmax: the cls token is a query and a key of the learned-feature
/// linear attention over all P + N tokens; RoPE leaves it un-rotated, LePE adds to the grid tokens only, the gate
/// applies to every token.
///
/// Usage:
///   rala::HedgehogAttention attn(rala::AttentionOptions(64, 2));          // f = 16
///   auto y = attn->forward(x, rala::AttentionContext::for_input(x, 32));
///   auto r = attn->attend(q, k, v);                                       // the core on (B, h, N, d) q, k, v
///   auto m = attn->mimic(q, k, v);                                        // teacher, student, xent, mse

#include "attention_variants/projected.h"

namespace rala {

/// φ(x) = clamp_min(cat[softmax(x W), softmax(−x W)], eps) per head: x (B, h, N, d), layer (h, d, f) → (B, h, N, 2f).
torch::Tensor hedgehog_feature_map(const torch::Tensor& x, const torch::Tensor& layer, double eps = 1e-12);

/// The normalised map of lolcats' quadratic_attention(causal=False): A_ij = φq_i·φk_j / (Σ_m φq_i·φk_m + eps).
/// phi_q, phi_k (B, h, N, F) → (B, h, N, N).
torch::Tensor hedgehog_quadratic_map(const torch::Tensor& phi_q, const torch::Tensor& phi_k, double eps = 1e-12);

/// The teacher: A = softmax(d^-½ q kᵀ) and y = A v (lolcats' softmax_attention(causal=False)).
struct SoftmaxTeacher {
  torch::Tensor attention;  ///< (B, h, N, N)
  torch::Tensor output;     ///< (B, h, N, d)
};
SoftmaxTeacher softmax_teacher(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

/// The attention-transfer losses of one layer (lolcats distill_attention_xent_mse, per layer):
///   xent = mean over rows of −Σ_j A_true,ij · log_softmax_j(log clamp_min(A_pred,ij, 1e-12))  (nn.CrossEntropyLoss
///          with soft targets on the rows of the (B·h·N, N) view)
///   mse  = mean (y_pred − y_true)²  (per-head outputs, before LePE / gate / proj)
struct MimicryLoss {
  torch::Tensor xent;  ///< scalar
  torch::Tensor mse;   ///< scalar
  /// xent_weight · xent + mse_weight · mse (lolcats' experiment: 1 and 1000).
  torch::Tensor total(double xent_weight, double mse_weight) const { return xent * xent_weight + mse * mse_weight; }
};
MimicryLoss attention_mimicry_loss(const torch::Tensor& attn_pred, const torch::Tensor& attn_true,
                                   const torch::Tensor& y_pred, const torch::Tensor& y_true);

/// `layer` (h, d, f) of lolcats' FeatureMapMLP, under `mlp` (key `feature_map_q.mlp.layer`).
class HedgehogMlpImpl : public torch::nn::Module {
 public:
  HedgehogMlpImpl(int64_t heads, int64_t head_dim, int64_t feature_dim);
  torch::Tensor layer;  ///< (h, d, f)
};
TORCH_MODULE(HedgehogMlp);

/// lolcats' FeatureMap holding its `mlp` (the SoftmaxDim activation has no parameters).
class HedgehogFeatureMapImpl : public torch::nn::Module {
 public:
  HedgehogFeatureMapImpl(int64_t heads, int64_t head_dim, int64_t feature_dim);
  /// x (B, h, N, d) → φ(x) (B, h, N, 2f).
  torch::Tensor forward(const torch::Tensor& x, double eps);
  HedgehogMlp mlp{nullptr};
};
TORCH_MODULE(HedgehogFeatureMap);

class HedgehogAttentionImpl : public ProjectedAttention {
 public:
  explicit HedgehogAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// feature_dim from an official state dict's `feature_map_q.mlp.layer` (h, d, f).
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  bool uses_rope() const override { return rope_; }

  /// The linear-attention core on per-head q, k, v (B, h, N, d) (already RoPE'd when the layer uses RoPE).
  struct Result {
    torch::Tensor output;  ///< (B, h, N, d) y
    torch::Tensor phi_q;   ///< (B, h, N, 2f)
    torch::Tensor phi_k;   ///< (B, h, N, 2f)
    torch::Tensor kv;      ///< (B, h, 2f, d) S = Σ_j φ(k_j) v_jᵀ
    torch::Tensor k_sum;   ///< (B, h, 2f) z = Σ_j φ(k_j)
    torch::Tensor z;       ///< (B, h, N, 1) 1 / (φ(q_i)·z + ε)
  };
  Result attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

  /// Teacher and student on the same q, k, v (B, h, N, d): the softmax map and output (computed without grad), the
  /// student's normalised map and output (with grad), and the mimicry losses.
  struct Mimicry {
    SoftmaxTeacher teacher;
    torch::Tensor attention;  ///< (B, h, N, N) student map A_pred
    torch::Tensor output;     ///< (B, h, N, d) student output A_pred v
    MimicryLoss loss;
  };
  Mimicry mimic(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

  /// Distillation mode (see the file comment). Off by default; independent of train()/eval().
  void set_distillation(bool on) { distillation_ = on; }
  bool distillation() const { return distillation_; }
  /// The losses of the last forward in distillation mode (undefined tensors before the first).
  const MimicryLoss& last_mimicry() const { return last_mimicry_; }

  int64_t feature_dim() const { return feature_dim_; }
  double eps() const { return eps_; }
  HedgehogFeatureMap feature_map_q{nullptr}, feature_map_k{nullptr};

 protected:
  int64_t matmul_macs(int64_t tokens) const override;
  int64_t extra_projection_macs(int64_t tokens) const override;

 private:
  bool rope_;
  int64_t feature_dim_;
  double eps_;
  bool distillation_ = false;
  MimicryLoss last_mimicry_;
};
TORCH_MODULE(HedgehogAttention);

}  // namespace rala
