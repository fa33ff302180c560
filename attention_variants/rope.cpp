#include "attention_variants/rope.h"

#include <map>
#include <mutex>
#include <tuple>

namespace rala {

torch::Tensor rope_angle(int64_t head_dim, const torch::TensorOptions& options) {
  TORCH_CHECK(head_dim > 0 && head_dim % 4 == 0, "RoPE needs a head dim divisible by 4, got head dim ", head_dim);
  auto angle = 1.0 / torch::pow(10000.0, torch::linspace(0, 1, head_dim / 4, torch::kFloat64));
  return angle.unsqueeze(-1).repeat({1, 2}).flatten().to(options);  // (d/2,) θ0,θ0,θ1,θ1,…
}

RopeTables rope_tables(int64_t head_dim, int64_t height, int64_t width, const torch::TensorOptions& options) {
  TORCH_CHECK(height > 0 && width > 0, "RoPE grid must be non-empty, got ", height, "x", width);
  auto angle = rope_angle(head_dim, torch::kFloat64);
  auto rows = torch::arange(height, torch::kFloat64).unsqueeze(1) * angle.unsqueeze(0);  // (H, d/2)
  auto cols = torch::arange(width, torch::kFloat64).unsqueeze(1) * angle.unsqueeze(0);   // (W, d/2)
  auto grid = [&](const torch::Tensor& r, const torch::Tensor& c) {
    auto rh = r.unsqueeze(1).expand({height, width, head_dim / 2});
    auto cw = c.unsqueeze(0).expand({height, width, head_dim / 2});
    return torch::cat({rh, cw}, -1).reshape({height * width, head_dim}).to(options).contiguous();  // (N, d)
  };
  return {grid(rows.sin(), cols.sin()), grid(rows.cos(), cols.cos())};
}

RopeTables cached_rope_tables(int64_t head_dim, int64_t height, int64_t width, const torch::TensorOptions& options) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int, std::string>;
  static std::mutex mutex;
  static std::map<Key, RopeTables> cache;
  Key key{head_dim, height, width, static_cast<int>(c10::typeMetaToScalarType(options.dtype())), options.device().str()};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) {
    // Built as normal tensors even when the first caller runs under c10::InferenceMode: an inference tensor in the
    // cache could not be saved for backward by a later training forward.
    c10::InferenceMode not_inference(false);
    torch::NoGradGuard no_grad;
    it = cache.emplace(key, rope_tables(head_dim, height, width, options)).first;
  }
  return it->second;
}

torch::Tensor rotate_every_two(const torch::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes.back() /= 2;
  sizes.push_back(2);
  auto pairs = x.reshape(sizes);  // (…, d/2, 2)
  auto x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
  return torch::stack({-x1, x0}, -1).flatten(-2);
}

torch::Tensor theta_shift(const torch::Tensor& x, const torch::Tensor& sin, const torch::Tensor& cos) {
  // rotate_every_two(x)·sin = swap_pairs(x)·sin± with sin± = (−s0, s1, −s2, s3, …): the sign moves onto the (N, d)
  // table (exact: (−a)·b = −(a·b) in IEEE arithmetic), so there is no negated copy and no stack of x; the product and
  // the sum are one addcmul pass. Same values as x·cos + rotate_every_two(x)·sin.
  const int64_t d = x.size(-1);
  auto sign = torch::ones({d / 2, 2}, sin.options());
  sign.select(-1, 0).fill_(-1);
  auto sin_signed = sin * sign.flatten();                            // (N, d), tiny next to x
  auto swapped = x.unflatten(-1, {d / 2, 2}).flip(-1).flatten(-2);  // (x1, x0, x3, x2, …)
  return torch::addcmul(x * cos, swapped, sin_signed);
}

}  // namespace rala
