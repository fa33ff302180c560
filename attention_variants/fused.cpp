#include "attention_variants/fused.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <mutex>

#include "attention_variants/fused_kernels.h"

namespace rala::fused {

namespace {

using detail::DType;
using detail::KernelTable;

struct Build {
  const char* name;
  const KernelTable* (*table)();
  bool (*supported)();
};

const KernelTable* default_table() { return &detail::DEFAULT::kernel_table(); }
#ifdef RALA_FUSED_X86
const KernelTable* avx2_table() { return &detail::AVX2::kernel_table(); }
const KernelTable* avx512_table() { return &detail::AVX512::kernel_table(); }
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && has_avx2();
}
#endif

const std::vector<Build>& builds() {
  static const std::vector<Build> b = {
      {"DEFAULT", default_table, [] { return true; }},
#ifdef RALA_FUSED_X86
      {"AVX2", avx2_table, has_avx2},
      {"AVX512", avx512_table, has_avx512},
#endif
  };
  return b;
}

std::string upper(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

const Build* find_build(const std::string& name) {
  for (const auto& b : builds())
    if (upper(name) == b.name && b.supported()) return &b;
  return nullptr;
}

std::string available_list() {
  std::string out;
  for (const auto& n : available_capabilities()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

struct State {
  std::atomic<bool> enabled{true};
  std::atomic<const Build*> build{nullptr};
  State() {
    const char* on = std::getenv("RALA_FUSED");
    if (on != nullptr) {
      const std::string v = upper(on);
      enabled = !(v == "0" || v == "OFF" || v == "FALSE" || v == "NO");
    }
    const Build* best = nullptr;
    for (const auto& b : builds())
      if (b.supported()) best = &b;
    const char* cap = std::getenv("RALA_CPU_CAPABILITY");
    if (cap != nullptr && *cap != '\0') {
      const Build* chosen = find_build(cap);
      TORCH_CHECK(chosen != nullptr, "RALA_CPU_CAPABILITY=", cap, " is not available here (available: ",
                  available_list(), ")");
      best = chosen;
    }
    build = best;
  }
};

State& state() {
  static State s;
  return s;
}

const KernelTable& kernels() { return *state().build.load()->table(); }

/// A profiler scope named after the fused kernel (so `rala bench --trace` shows the kernels' time as their own rows).
#define RALA_FUSED_SCOPE(name) RECORD_FUNCTION("rala::fused::" name, std::vector<c10::IValue>())

DType dtype_of(const torch::Tensor& x) { return x.scalar_type() == torch::kBFloat16 ? DType::bf16 : DType::f32; }

const void* ptr_or_null(const torch::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

/// A parameter as a dense tensor of x's dtype (a no-op when it already is one).
torch::Tensor dense(const torch::Tensor& t, const torch::Tensor& like) {
  if (!t.defined()) return t;
  return t.to(like.scalar_type()).contiguous();
}

torch::Tensor empty_cl(const torch::Tensor& like) {
  return torch::empty(like.sizes(), like.options().memory_format(torch::MemoryFormat::ChannelsLast));
}

void check_map(const torch::Tensor& x, const char* what) {
  TORCH_CHECK(x.defined() && x.dim() == 4, "fused ", what, ": expected a (B, C, H, W) tensor, got ",
              x.defined() ? x.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(channels_last(x), "fused ", what, ": the tensor must be channels-last (dense (B, H, W, C) storage)");
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16),
              "fused ", what, ": expected a float32 or bfloat16 CPU tensor, got ", x.scalar_type(), " on ",
              x.device());
}

void check_channels(const torch::Tensor& t, int64_t C, const char* what, const char* name) {
  if (!t.defined()) return;
  TORCH_CHECK(t.numel() == C, "fused ", what, ": ", name, " must have ", C, " elements, got ", t.numel());
}

}  // namespace

bool enabled() { return state().enabled; }
void set_enabled(bool on) { state().enabled = on; }
std::string capability() { return state().build.load()->name; }

std::vector<std::string> available_capabilities() {
  std::vector<std::string> out;
  for (const auto& b : builds())
    if (b.supported()) out.push_back(b.name);
  return out;
}

void set_capability(const std::string& name) {
  const Build* b = find_build(name);
  TORCH_CHECK(b != nullptr, "CPU capability '", name, "' is not available here (available: ", available_list(), ")");
  state().build = b;
}

bool applies(std::initializer_list<torch::Tensor> tensors) {
  if (!enabled()) return false;
  const bool grad = torch::GradMode::is_enabled();
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    if (!t.device().is_cpu()) return false;
    if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kBFloat16) return false;
    if (dtype == c10::ScalarType::Undefined) dtype = t.scalar_type();
    if (t.scalar_type() != dtype) return false;
    if (grad && t.requires_grad()) return false;
  }
  return dtype != c10::ScalarType::Undefined;
}

bool channels_last(const torch::Tensor& x) {
  return x.dim() == 4 && x.is_contiguous(torch::MemoryFormat::ChannelsLast);
}

torch::Tensor layer_norm_channels_last(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                       double eps) {
  RALA_FUSED_SCOPE("layer_norm");
  check_map(x, "layer_norm");
  const int64_t C = x.size(1);
  check_channels(w, C, "layer_norm", "weight");
  check_channels(b, C, "layer_norm", "bias");
  auto out = empty_cl(x);
  const auto wd = dense(w, x), bd = dense(b, x);
  detail::RowsArgs a{dtype_of(x), x.numel() / std::max<int64_t>(C, 1), C, x.data_ptr(), nullptr, nullptr, nullptr,
                     ptr_or_null(wd), ptr_or_null(bd), static_cast<float>(eps), out.data_ptr()};
  kernels().rows(a);
  return out;
}

torch::Tensor residual(const torch::Tensor& y, const torch::Tensor& gamma, const torch::Tensor& a) {
  RALA_FUSED_SCOPE("residual");
  check_map(y, "residual");
  check_map(a, "residual");
  TORCH_CHECK(y.sizes() == a.sizes() && y.scalar_type() == a.scalar_type(), "fused residual: y ", y.sizes(), " and a ",
              a.sizes(), " must have the same shape and dtype");
  const int64_t C = y.size(1);
  check_channels(gamma, C, "residual", "gamma");
  auto out = empty_cl(y);
  const auto g = dense(gamma, y);
  detail::RowsArgs r{dtype_of(y), y.numel() / std::max<int64_t>(C, 1), C, y.data_ptr(), ptr_or_null(g), a.data_ptr(),
                     out.data_ptr(), nullptr, nullptr, 0.0f, nullptr};
  kernels().rows(r);
  return out;
}

std::pair<torch::Tensor, torch::Tensor> residual_layer_norm(const torch::Tensor& y, const torch::Tensor& gamma,
                                                            const torch::Tensor& a, const torch::Tensor& w,
                                                            const torch::Tensor& b, double eps) {
  RALA_FUSED_SCOPE("residual_layer_norm");
  check_map(y, "residual_layer_norm");
  check_map(a, "residual_layer_norm");
  TORCH_CHECK(y.sizes() == a.sizes() && y.scalar_type() == a.scalar_type(), "fused residual_layer_norm: y ",
              y.sizes(), " and a ", a.sizes(), " must have the same shape and dtype");
  const int64_t C = y.size(1);
  check_channels(gamma, C, "residual_layer_norm", "gamma");
  check_channels(w, C, "residual_layer_norm", "weight");
  check_channels(b, C, "residual_layer_norm", "bias");
  auto u = empty_cl(y), n = empty_cl(y);
  const auto g = dense(gamma, y), wd = dense(w, y), bd = dense(b, y);
  detail::RowsArgs r{dtype_of(y), y.numel() / std::max<int64_t>(C, 1), C, y.data_ptr(), ptr_or_null(g), a.data_ptr(),
                     u.data_ptr(), ptr_or_null(wd), ptr_or_null(bd), static_cast<float>(eps), n.data_ptr()};
  kernels().rows(r);
  return {u, n};
}

namespace {

void check_depthwise(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, const char* what) {
  const int64_t C = x.size(1);
  TORCH_CHECK(weight.defined() && weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1 && weight.size(2) <= 15,
              "fused ", what, ": depthwise weight must be (C, 1, k, k) with odd k ≤ 15 and C = ", C, ", got ",
              weight.defined() ? weight.sizes() : c10::IntArrayRef{});
  check_channels(bias, C, what, "bias");
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> dwconv_residual_layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                                                                   const torch::Tensor& bias, const torch::Tensor& w,
                                                                   const torch::Tensor& b, double eps) {
  RALA_FUSED_SCOPE("dwconv_residual_layer_norm");
  check_map(x, "dwconv_residual_layer_norm");
  check_depthwise(x, weight, bias, "dwconv_residual_layer_norm");
  const int64_t C = x.size(1);
  check_channels(w, C, "dwconv_residual_layer_norm", "weight");
  check_channels(b, C, "dwconv_residual_layer_norm", "bias");
  const bool norm = w.defined() || b.defined();
  auto y = empty_cl(x);
  torch::Tensor n = norm ? empty_cl(x) : torch::Tensor();
  const auto wt = dense(weight, x), bs = dense(bias, x), lw = dense(w, x), lb = dense(b, x);
  detail::DwArgs a{dtype_of(x), x.size(0), x.size(2), x.size(3), C, weight.size(2), x.data_ptr(), wt.data_ptr(),
                   ptr_or_null(bs), false, y.data_ptr(), ptr_or_null(lw), ptr_or_null(lb), static_cast<float>(eps),
                   norm ? n.data_ptr() : nullptr};
  kernels().dwconv(a);
  return {y, n};
}

torch::Tensor gelu_dwconv_residual(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  RALA_FUSED_SCOPE("gelu_dwconv_residual");
  check_map(x, "gelu_dwconv_residual");
  check_depthwise(x, weight, bias, "gelu_dwconv_residual");
  auto y = empty_cl(x);
  const auto wt = dense(weight, x), bs = dense(bias, x);
  detail::DwArgs a{dtype_of(x), x.size(0), x.size(2), x.size(3), x.size(1), weight.size(2), x.data_ptr(),
                   wt.data_ptr(), ptr_or_null(bs), true, y.data_ptr(), nullptr, nullptr, 0.0f, nullptr};
  kernels().dwconv(a);
  return y;
}

void affine_(torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& shift, bool gelu) {
  RALA_FUSED_SCOPE("affine_");
  check_map(x, "affine_");
  const int64_t C = x.size(1);
  check_channels(scale, C, "affine_", "scale");
  check_channels(shift, C, "affine_", "shift");
  TORCH_CHECK(scale.scalar_type() == torch::kFloat32 && shift.scalar_type() == torch::kFloat32,
              "fused affine_: scale and shift must be float32");
  const auto s = scale.contiguous(), t = shift.contiguous();
  detail::AffineArgs a{dtype_of(x), x.numel() / std::max<int64_t>(C, 1), C, x.data_ptr(), s.data_ptr<float>(),
                       t.data_ptr<float>(), gelu};
  kernels().affine(a);
}

namespace {
template <typename BN>
std::pair<torch::Tensor, torch::Tensor> batch_norm_affine_of(const BN& bn) {
  const auto f = torch::kFloat32;
  auto invstd = 1.0 / torch::sqrt(bn.running_var.to(f) + bn.options.eps());
  auto scale = bn.options.affine() ? invstd * bn.weight.to(f) : invstd;
  auto shift = bn.options.affine() ? bn.bias.to(f) - bn.running_mean.to(f) * scale : -bn.running_mean.to(f) * scale;
  return {scale.contiguous(), shift.contiguous()};
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> batch_norm_affine(const torch::nn::BatchNorm2dImpl& bn) {
  return batch_norm_affine_of(bn);
}
std::pair<torch::Tensor, torch::Tensor> batch_norm_affine(const rala::BatchNorm2dImpl& bn) {
  return batch_norm_affine_of(bn);
}

namespace {

struct ProjectionView {
  int64_t B, C, H, W, N, ld, heads, d;
};

ProjectionView check_projection(const torch::Tensor& all, int64_t C, int64_t heads, bool gated,
                                const torch::Tensor& sin, const torch::Tensor& lepe_w, const char* what) {
  check_map(all, what);
  TORCH_CHECK(C > 0 && heads > 0 && C % heads == 0, "fused ", what, ": channels (", C,
              ") must be a positive multiple of heads (", heads, ")");
  const int64_t ld = all.size(1);
  TORCH_CHECK(ld == (gated ? 4 : 3) * C, "fused ", what, ": the projection has ", ld, " channels, expected ",
              (gated ? 4 : 3) * C, " (", gated ? "q, k, v, o" : "q, k, v", " of ", C, ")");
  ProjectionView v{all.size(0), C, all.size(2), all.size(3), all.size(2) * all.size(3), ld, heads, C / heads};
  if (sin.defined())
    TORCH_CHECK(sin.dim() == 2 && sin.size(0) == v.N && sin.size(1) == v.d && v.d % 2 == 0, "fused ", what,
                ": RoPE tables must be (N, d) = (", v.N, ", ", v.d, "), got ", sin.sizes());
  if (lepe_w.defined()) {
    TORCH_CHECK(lepe_w.dim() == 4 && lepe_w.size(0) == C && lepe_w.size(1) == 1 && lepe_w.size(2) == lepe_w.size(3) &&
                    lepe_w.size(2) % 2 == 1,
                "fused ", what, ": LePE weight must be (C, 1, k, k) with odd k, got ", lepe_w.sizes());
  }
  return v;
}

/// (B, N, ld) token view of a channels-last (B, ld, H, W) tensor (no copy).
torch::Tensor token_rows(const torch::Tensor& all) {
  return all.permute({0, 2, 3, 1}).reshape({all.size(0), all.size(2) * all.size(3), all.size(1)});
}

}  // namespace

RalaResult rala_attention(const torch::Tensor& all, int64_t channels, int64_t heads, const RalaSwitches& s,
                          const torch::Tensor& sin, const torch::Tensor& cos, const torch::Tensor& lepe_w,
                          const torch::Tensor& lepe_b, double eps) {
  RALA_FUSED_SCOPE("rala_attention");
  const auto v = check_projection(all, channels, heads, s.gated, s.rope ? sin : torch::Tensor(), lepe_w, "rala_attention");
  TORCH_CHECK(!s.rope || (sin.defined() && cos.defined() && cos.sizes() == sin.sizes()),
              "fused rala_attention: RoPE needs sin and cos tables of the same shape");
  const int64_t BH = v.B * v.heads, d = v.d, N = v.N;
  // Token chunks of the reductions: fixed by N alone, so the sums (and the result) do not depend on the threads.
  const int64_t chunk = 256, chunks = (N + chunk - 1) / chunk;
  const auto f32 = all.options().dtype(torch::kFloat32);
  auto part = torch::empty({BH * chunks * (d + 2)}, f32);
  auto qmean = torch::empty({BH, d}, f32);
  auto alpha = torch::empty({v.B, v.heads, N}, f32);
  auto kmean = torch::empty({BH, d}, f32);
  auto kr = torch::empty({BH, N, d}, all.options());
  const auto sn = s.rope ? dense(sin, all) : torch::Tensor(), cs = s.rope ? dense(cos, all) : torch::Tensor();
  const auto lw = dense(lepe_w, all), lb = dense(lepe_b, all);
  detail::RalaArgs a{};
  a.dt = dtype_of(all);
  a.B = v.B;
  a.H = v.H;
  a.W = v.W;
  a.C = v.C;
  a.heads = v.heads;
  a.d = d;
  a.ld = v.ld;
  a.all = all.data_ptr();
  a.alpha = s.alpha;
  a.rope = s.rope;
  a.gated = s.gated;
  a.lepe = lw.defined();
  a.sin = ptr_or_null(sn);
  a.cos = ptr_or_null(cs);
  a.lepe_w = ptr_or_null(lw);
  a.lepe_b = ptr_or_null(lb);
  a.lepe_k = lw.defined() ? lw.size(2) : 0;
  a.scale = static_cast<float>(std::pow(static_cast<double>(d), -0.5));
  a.eps = static_cast<float>(eps);
  a.chunk = chunk;
  a.chunks = chunks;
  a.part = part.data_ptr<float>();
  a.qmean = qmean.data_ptr<float>();
  a.alpha_out = alpha.data_ptr<float>();
  a.kr = kr.data_ptr();
  a.kmean = kmean.data_ptr<float>();
  kernels().rala_prepare(a);

  // kv = Σ_j kr_jᵀ v_j per (image, head): a GEMM on the BLAS (v read in place from the projection). Long sequences
  // are cut into fixed slabs whose partial products are summed in order (parallel even for one image and head).
  const auto tokens = token_rows(all);
  RalaResult r;
  r.kv = torch::empty({v.B, v.heads, d, d}, all.options());
  const int64_t slab = 4096, slabs = (N + slab - 1) / slab;
  auto v_of = [&](int64_t bh, int64_t n0, int64_t len) {
    return tokens.select(0, bh / v.heads).narrow(0, n0, len).narrow(1, 2 * v.C + (bh % v.heads) * d, d);
  };
  // ATen ops on OpenMP worker threads: those threads do not inherit the caller's InferenceMode (thread-local), and
  // writing into an inference tensor outside it is an error; so each worker takes the caller's mode.
  const bool inference = c10::InferenceMode::is_enabled();
  if (slabs == 1) {
    at::parallel_for(0, BH, 1, [&](int64_t b0, int64_t b1) {
      c10::InferenceMode mode(inference);
      torch::NoGradGuard no_grad;
      for (int64_t bh = b0; bh < b1; ++bh) {
        auto out = r.kv.select(0, bh / v.heads).select(0, bh % v.heads);
        at::mm_out(out, kr.select(0, bh).t(), v_of(bh, 0, N));
      }
    });
  } else {
    auto partial = torch::empty({BH, slabs, d, d}, all.options());
    at::parallel_for(0, BH * slabs, 1, [&](int64_t i0, int64_t i1) {
      c10::InferenceMode mode(inference);
      torch::NoGradGuard no_grad;
      for (int64_t it = i0; it < i1; ++it) {
        const int64_t bh = it / slabs, n0 = (it % slabs) * slab, len = std::min(slab, N - n0);
        auto out = partial.select(0, bh).select(0, it % slabs);
        at::mm_out(out, kr.select(0, bh).narrow(0, n0, len).t(), v_of(bh, n0, len));
      }
    });
    r.kv.copy_(partial.sum({1}, false, torch::kFloat32).view({v.B, v.heads, d, d}));
  }
  const auto kv_f = r.kv.to(torch::kFloat32).contiguous();
  a.kv = kv_f.data_ptr<float>();
  r.y = torch::empty({v.B, v.C, v.H, v.W}, all.options().memory_format(torch::MemoryFormat::ChannelsLast));
  a.y = r.y.data_ptr();
  torch::Tensor z;
  if (s.want_z) {
    z = torch::empty({v.B, v.heads, N}, f32);
    a.z_out = z.data_ptr<float>();
  }
  if (s.want_output) {
    r.output = torch::empty({v.B, v.heads, N, d}, all.options());
    a.out_pre = r.output.data_ptr();
  }
  kernels().rala_finish(a);
  if (s.want_alpha) r.alpha = alpha.to(all.scalar_type());
  if (s.want_z) r.z = z.to(all.scalar_type());
  return r;
}

torch::Tensor softmax_attention(const torch::Tensor& all, int64_t channels, int64_t heads, bool gated,
                                const torch::Tensor& sin, const torch::Tensor& cos, const torch::Tensor& lepe_w,
                                const torch::Tensor& lepe_b, torch::Tensor* attention, torch::Tensor* output) {
  RALA_FUSED_SCOPE("softmax_attention");
  const auto v = check_projection(all, channels, heads, gated, sin, lepe_w, "softmax_attention");
  TORCH_CHECK(!sin.defined() || (cos.defined() && cos.sizes() == sin.sizes()),
              "fused softmax_attention: RoPE needs sin and cos tables of the same shape");
  const int64_t d = v.d, N = v.N;
  const bool rope = sin.defined();
  const auto sn = rope ? dense(sin, all) : torch::Tensor(), cs = rope ? dense(cos, all) : torch::Tensor();
  auto q = torch::empty({v.B, v.heads, N, d}, all.options()), k = torch::empty({v.B, v.heads, N, d}, all.options());
  detail::RopeArgs ra{dtype_of(all), v.B, N, v.C, v.heads, d, v.ld, 0, all.data_ptr(), ptr_or_null(sn),
                      ptr_or_null(cs), rope, static_cast<float>(std::pow(static_cast<double>(d), -0.5)),
                      q.data_ptr()};
  kernels().rope_scale(ra);
  ra.c0 = v.C;
  ra.scale = 1.0f;
  ra.dst = k.data_ptr();
  kernels().rope_scale(ra);
  const auto tokens = token_rows(all);
  auto vv = tokens.narrow(2, 2 * v.C, v.C).unflatten(2, {v.heads, d}).transpose(1, 2);  // (B, h, N, d) view
  // Per (image, head), in parallel: S = q kᵀ, A = softmax(S), A·v — the same GEMM and softmax calls LibTorch's bmm
  // and softmax make (bmm runs its batch serially, and OpenBLAS is single-threaded inside LibTorch's threads), with the
  // N×N map of a task still in cache for the second product.
  const int64_t BH = v.B * v.heads;
  auto res = torch::empty({v.B, v.heads, N, d}, all.options());
  torch::Tensor attn = attention != nullptr ? torch::empty({v.B, v.heads, N, N}, all.options()) : torch::Tensor();
  const auto q3 = q.view({BH, N, d}), k3 = k.view({BH, N, d}), r3 = res.view({BH, N, d});
  const auto a3 = attn.defined() ? attn.view({BH, N, N}) : torch::Tensor();
  const at::ThreadLocalState tls;  // inference mode / grad mode of the caller, for the ATen calls in the workers
  at::parallel_for(0, BH, 1, [&](int64_t i0, int64_t i1) {
    const at::ThreadLocalStateGuard tls_guard(tls);
    auto s = torch::empty({N, N}, all.options());
    auto p = a3.defined() ? torch::Tensor() : torch::empty({N, N}, all.options());
    for (int64_t i = i0; i < i1; ++i) {
      at::mm_out(s, q3.select(0, i), k3.select(0, i).t());
      auto pi = a3.defined() ? a3.select(0, i) : p;
      at::_softmax_out(pi, s, 1, false);
      auto ri = r3.select(0, i);
      at::mm_out(ri, pi, vv.select(0, i / v.heads).select(0, i % v.heads));
    }
  });
  const auto lw = dense(lepe_w, all), lb = dense(lepe_b, all);
  auto y = torch::empty({v.B, v.C, v.H, v.W}, all.options().memory_format(torch::MemoryFormat::ChannelsLast));
  detail::GateArgs ga{dtype_of(all), v.B, v.H, v.W, v.C, v.heads, d, v.ld, all.data_ptr(), gated, lw.defined(),
                      ptr_or_null(lw), ptr_or_null(lb), lw.defined() ? lw.size(2) : 0, res.data_ptr(), y.data_ptr()};
  kernels().gate_finish(ga);
  if (attention != nullptr) *attention = attn;
  if (output != nullptr) *output = res;
  return y;
}

}  // namespace rala::fused
