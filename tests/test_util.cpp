#include "tests/test_util.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>

#include "analysis/h5_store.h"

namespace rala::test {

std::string data_path(const std::string& name) { return std::string(RALA_TEST_DATA) + "/" + name; }

torch::Tensor golden(const std::string& file, const std::string& dataset) {
  return h5::read_tensor(data_path(file), dataset);
}

void load_state(torch::nn::Module& module, const std::string& file, const std::string& group,
                const std::map<std::string, std::string>& rename) {
  h5::File f(data_path(file), h5::Mode::read);
  torch::NoGradGuard no_grad;
  auto entries = module.named_parameters();
  for (auto& b : module.named_buffers()) entries.insert(b.key(), b.value());
  // Strict: the file holds exactly the module's parameters and buffers.
  EXPECT_EQ(f.list(group).size(), entries.size()) << file << ": " << group << " entries vs module state";
  for (auto& item : entries) {
    std::string key = item.key();
    auto it = rename.find(key);
    if (it != rename.end()) key = it->second;
    const std::string path = group + "/" + key;
    ASSERT_TRUE(f.exists(path)) << "golden file " << file << " has no " << path;
    auto t = f.read(path);
    ASSERT_EQ(t.numel(), item.value().numel()) << path << " has shape " << t.sizes() << ", module wants "
                                               << item.value().sizes();
    item.value().copy_(t.reshape(item.value().sizes()));
  }
}

void randomize(torch::nn::Module& module, uint64_t seed, double std) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : module.parameters()) p.copy_(at::normal(0.0, std, p.sizes(), gen, p.options()));
}

double max_abs_err(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

double max_ulp_err(const torch::Tensor& a, const torch::Tensor& b, double floor) {
  return max_ulp_err(a, b, torch::full({}, floor, torch::kFloat64));
}

double max_ulp_err(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& magnitude) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const int mantissa = a.scalar_type() == torch::kBFloat16 ? 7 : a.scalar_type() == torch::kFloat64 ? 52 : 23;
  auto ref = b.to(torch::kFloat64);
  auto mag = torch::clamp_min(torch::maximum(ref.abs(), magnitude.to(torch::kFloat64).abs()), 1.17549435e-38);
  auto ulp = torch::exp2(torch::floor(torch::log2(mag)) - mantissa);
  return ((a.to(torch::kFloat64) - ref).abs() / ulp).max().item<double>();
}

double max_rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.to(torch::kFloat64).abs().max().item<double>(), 1e-300);
  return max_abs_err(a, b) / scale;
}

torch::Tensor param(torch::nn::Module& module, const std::string& name) {
  auto params = module.named_parameters();
  auto* p = params.find(name);
  TORCH_CHECK(p != nullptr, "module has no parameter ", name);
  return p->detach();
}

torch::Tensor naive_conv1x1(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  auto xd = x.to(torch::kFloat64).flatten(2);                              // (B, C, N)
  auto w = weight.to(torch::kFloat64).reshape({weight.size(0), -1});       // (O, C)
  auto y = torch::einsum("oc,bcn->bon", {w, xd});
  return y + bias.to(torch::kFloat64).view({1, -1, 1});
}

torch::Tensor head_tokens(const torch::Tensor& proj, int64_t b, int64_t c0, int64_t C, int64_t heads, int64_t head) {
  const int64_t d = C / heads;
  return proj[b].narrow(0, c0 + head * d, d).transpose(0, 1).contiguous();  // (N, d)
}

torch::Tensor naive_rope(const torch::Tensor& x, int64_t height, int64_t width) {
  const int64_t N = x.size(0), d = x.size(1), quarter = d / 4;
  auto out = x.clone();
  auto xa = x.accessor<double, 2>();
  auto oa = out.accessor<double, 2>();
  for (int64_t l = 0; l < N; ++l) {
    const int64_t row = l / width, col = l % width;
    for (int64_t p = 0; p < d / 2; ++p) {
      const int64_t a = p % quarter;
      const double theta = quarter > 1 ? std::pow(10000.0, -static_cast<double>(a) / (quarter - 1)) : 1.0;
      const double angle = static_cast<double>(p < quarter ? row : col) * theta;
      const double x0 = xa[l][2 * p], x1 = xa[l][2 * p + 1];
      oa[l][2 * p] = x0 * std::cos(angle) - x1 * std::sin(angle);
      oa[l][2 * p + 1] = x1 * std::cos(angle) + x0 * std::sin(angle);
    }
  }
  (void)height;
  return out;
}

torch::Tensor naive_elu1(const torch::Tensor& x) {
  auto out = x.clone();
  auto* p = out.data_ptr<double>();
  for (int64_t i = 0; i < out.numel(); ++i) p[i] = p[i] > 0 ? p[i] + 1.0 : std::exp(p[i]);
  return out;
}

torch::Tensor naive_softmax(const torch::Tensor& x) {
  auto xc = x.contiguous();
  auto out = torch::empty_like(xc);
  const double* in = xc.data_ptr<double>();
  double* o = out.data_ptr<double>();
  double m = -INFINITY, s = 0;
  for (int64_t i = 0; i < xc.numel(); ++i) m = std::max(m, in[i]);
  for (int64_t i = 0; i < xc.numel(); ++i) s += (o[i] = std::exp(in[i] - m));
  for (int64_t i = 0; i < xc.numel(); ++i) o[i] /= s;
  return out;
}

std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

void expect_golden(const std::string& name, const torch::Tensor& got, const torch::Tensor& ref, double rel) {
  ASSERT_EQ(got.sizes(), ref.sizes()) << name;
  const double dev = max_abs_err(got, ref), scale = std::max(1.0, ref.abs().max().item<double>());
  ::testing::Test::RecordProperty("golden_" + name, std::to_string(dev));
  std::printf("  golden %-24s max|Δ| = %.3g  (bound %.3g)\n", name.c_str(), dev, rel * scale);
  EXPECT_LE(dev, rel * scale) << name;
}

std::string run_command(const std::string& command, int* status) {
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    *status = -1;
    return out;
  }
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), static_cast<int>(buf.size()), pipe)) out += buf.data();
  *status = pclose(pipe);
  return out;
}

TempDir::TempDir(const std::string& prefix) {
  static std::atomic<int> counter{0};
  path = std::filesystem::temp_directory_path() /
         (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

torch::Tensor random_input(int64_t B, int64_t C, int64_t H, int64_t W, uint64_t seed, torch::Dtype dtype) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::normal(0.0, 1.0, {B, C, H, W}, gen, torch::TensorOptions().dtype(dtype));
}

NaiveResult naive_attention(ProjectedAttention& module, const torch::Tensor& x, const AttentionFormula& formula,
                            const std::function<torch::Tensor(const torch::Tensor& proj)>& extra) {
  const auto& o = module.options();
  const int64_t B = x.size(0), C = o.dim(), h = o.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  auto proj = naive_conv1x1(x, module.qkv_projection()->weight.detach(), module.qkv_projection()->bias.detach());
  NaiveResult r;
  r.attention = torch::zeros({B, h, N, N}, torch::kFloat64);
  r.output = torch::zeros({B, h, N, d}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t n = 0; n < h; ++n) {
      auto A = formula(b, n, proj);
      auto V = head_tokens(proj, b, 2 * C, C, h, n);
      r.attention[b][n] = A;
      r.output[b][n] = torch::matmul(A, V);
    }
  }
  auto y = r.output.permute({0, 1, 3, 2}).reshape({B, C, H, W});  // channel n·d + i
  auto v_map = proj.narrow(1, 2 * C, C).reshape({B, C, H, W});
  if (module.has_lepe())
    y = y + torch::conv2d(v_map, module.lepe()->weight.detach().to(torch::kFloat64),
                          module.lepe()->bias.detach().to(torch::kFloat64), 1, 2, 1, C);
  if (extra) y = y + extra(proj);
  if (module.gated()) y = y * proj.narrow(1, 3 * C, C).reshape({B, C, H, W});
  r.final = naive_conv1x1(y, module.proj()->weight.detach(), module.proj()->bias.detach()).reshape({B, C, H, W});
  return r;
}

}  // namespace rala::test
