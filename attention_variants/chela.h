#pragma once
/// \file chela.h
/// K — CHELA (Liu et al., ICML 2024, "Short-Long Convolutions Help Hardware-Efficient Linear Attention to Focus on Long
/// Sequences", arXiv 2406.08128), vision form. A RECONSTRUCTION: no official code has been published (searched: code
/// index, repositories, issues, pages; only the abstract and third-party summaries are readable, which name the pieces
/// but not the equations). What is verified is the block CHELA modifies, MEGA's `MovingAverageGatedAttention`
/// (facebookresearch/mega @ aeaa4b4, fairseq/modules/moving_average_gated_attention.py); CHELA replaces its EMA by
/// short-long convolutions and its softmax attention by linear attention computed tile by tile. Everything below that
/// is not MEGA's is our choice (listed after the formula). Public descriptions read (equations not retrievable from
/// any): the abstract (arXiv 2406.08128, sciencestack.ai, tldr.takara.ai); liner.com's review (Fig. 2: "the CHELA
/// layer", short-long convolutions and a tiled "flash" linear attention); emergentmind.com's topic "hybrid linear
/// attention architecture" (short conv → SiLU → long conv; queries, keys and values "using" that representation; an
/// output gate; the block output with a residual). The last leaves open whether v is taken from x (MEGA) or from the
/// convolved representation: setting value_input.
///
/// On the mixer's input x (B, C, H, W), tokens l = row·W + col, h heads from the harness:
///   v  = silu(v_proj(x))                                          (B, N, hdim)        MEGA (value_input=conv: of mx)
///   mx = LongConv(silu(ShortConv(x)))                             (B, C, H, W)        CHELA (MEGA: mx = EMA(x))
///   u, zr, hx = split(mx_proj(mx), [C, zdim + hdim, C]);  u = σ(u);  z, r = split(silu(zr), [zdim, hdim])   MEGA
///   q = z ⊙ γ₀ + β₀,  k = z ⊙ γ₁ + β₁                            (B, N, zdim)        MEGA (gamma, beta: (2, zdim))
///   per head n (q, k: zdim/h channels; v, r: hdim/h):                                 CHELA: linear attention
///     o_i = φ(q_i) Σ_j φ(k_j)ᵀ v_j / (φ(q_i) · Σ_j φ(k_j) + 1e-6)    (normalizer=sum; mean: both sums ÷ N)
///     computed tile by tile: kv and Σφ(k) accumulated over key tiles, then the outputs over query tiles
///   h  = silu(hx + h_proj(o ⊙ r))                                 (B, N, C)           MEGA
///   out = u ⊙ (h − x)       (output=interpolate, default)   MEGA: x_in + u ⊙ (h − x_in), the residual x_in added
///   out = u ⊙ h             (output=gate)                   by the harness (y + γ·mixer(norm1(y)))
///
/// Our choices (the paper/summaries leave them open; each is a setting where it is a choice):
///  - 2-D form: ShortConv = depthwise short_kernel × short_kernel conv (3; the paper's multi-kernel short conv merged
///    by structural re-parameterisation is, at inference, one kernel of the largest size: we learn that merged kernel);
///    LongConv = depthwise large-kernel conv with zero padding (a linear, not circular, convolution):
///      long_conv=global (default): kernel (2·long_grid − 1)², reaching every token of any grid up to long_grid ×
///        long_grid (16; larger grids see that reach); a kernel larger than (2H−1)×(2W−1) is cropped to its centre,
///        which is exact (the 1-D long-conv convention `k[:L]`); computed by FFT (rfft2 of size ≥ (H+kh−1, W+kw−1),
///        rounded up to 2·3·5-smooth lengths);
///      long_conv=local: a long_kernel × long_kernel kernel (7), computed by direct convolution;
///      long_method=direct|fft forces either path (they agree to rounding: a test holds them to 1e-10 in float64).
///  - φ = 1+elu (phi=relu available), ε = 1e-6 on φ(q)·Σφ(k) (normalizer=mean: on φ(q)·mean φ(k)); non-causal.
///  - Heads: MEGA's attention is single-head; here q, k, v split into the harness's h heads (zdim, hdim must be
///    divisible by h). zdim = 0 → C/4 rounded down to a multiple of h (at least h), hdim = 0 → 2C: the MEGA README's
///    "z-dim … 1/4 of embed-dim", "hidden-dim … 2 times embed-dim".
///  - Residual: the harness adds the residual outside the mixer, so the mixer returns MEGA's increment u ⊙ (h − x)
///    with x its own (already normalised) input; output=gate returns u ⊙ h instead.
///  - Not carried over from MEGA: its internal prenorm (the harness's norm1 plays that role), the relative position
///    bias (it is added to the N×N score matrix, which linear attention never forms), dropouts.
///  - Tiles: tile = tokens per tile (64; 0 = one tile); the result does not depend on it beyond rounding.
/// Parameters keep MEGA's names (v_proj, mx_proj, h_proj: Linear; gamma, beta: (2, zdim)) plus short_conv, long_conv
/// (depthwise Conv2d with bias). Init: MEGA's reset_parameters (Linear weights and gamma N(0, 0.02), biases and beta
/// 0); the convs keep LibTorch's default.
///
/// Probes: kv_buffer (B, h, zdim/h, hdim/h) = Σ_j φ(k_j)ᵀ v_j as multiplied (÷N with normalizer=mean); normalizer_z
/// (B, h, N); feature_q, feature_k (B, h, N, zdim/h) = φ(q), φ(k); output (B, h, N, hdim/h) = o; output_gated = o ⊙ r
/// (before h_proj); attention (B, h, N, N) the implied map. Internals: "short_conv" = silu(ShortConv(x)) and
/// "long_conv" = mx, "update_gate" = u, each (B, C, H, W).
///
/// Prefix tokens (DeiT's cls token; attention.h): the linear attention runs over all P + N tokens; the short-long
/// convolutions (and the SiLU between them) are bound to the grid, so the cls token's mx is the token itself.
///
/// Usage:
///   rala::ChelaAttention attn(rala::AttentionOptions(64, 2));                              // global FFT long conv
///   rala::ChelaAttention local(rala::AttentionOptions(64, 2).set("long_conv", "local").set("long_kernel", 11));

#include "attention_variants/common.h"

namespace rala {

class ChelaAttentionImpl : public AttentionBase {
 public:
  explicit ChelaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// zdim, hdim, short_kernel from gamma, v_proj and short_conv; long_kernel = k and long_grid = (k+1)/2 from the
  /// long_conv kernel (k × k), so that the shape fits whichever long_conv mode is chosen.
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// projections: v_proj C·hdim, mx_proj C·(2C+zdim+hdim), h_proj hdim·C per token, short conv k²·C per token, long
  /// conv: direct k_h·k_w·C per token with the kernel cropped to the grid, FFT an estimate 3·P·log₂P + 4·P_h·(P_w/2+1)
  /// per channel (three real 2-D transforms of P = P_h·P_w points, P_h ≥ H + k_h − 1 the transform length, and the
  /// complex product); matmuls: kv and φ(q)·kv 2·N·zdim·hdim/h, normaliser N·zdim. Element-wise gates are not counted.
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  /// The long convolution of s (B, C, H, W): by FFT when `fft`, else directly (forward() passes long_fft()).
  torch::Tensor long_convolution(const torch::Tensor& s, bool fft) const;
  /// Whether the settings select the FFT path.
  bool long_fft() const { return long_fft_; }
  int64_t zdim() const { return zdim_; }
  int64_t hdim() const { return hdim_; }

  static constexpr double kEps = 1e-6;

  torch::nn::Linear v_proj{nullptr}, mx_proj{nullptr}, h_proj{nullptr};
  torch::Tensor gamma, beta;  ///< (2, zdim)
  torch::nn::Conv2d short_conv{nullptr}, long_conv{nullptr};

 private:
  int64_t zdim_, hdim_, tile_;
  bool long_fft_, relu_phi_, interpolate_, value_from_conv_;
  Normalizer normalizer_;
};
TORCH_MODULE(ChelaAttention);

}  // namespace rala
