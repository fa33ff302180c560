// --device: one-line errors on a LibTorch without CUDA, `rala info`'s device list, the device recorded in results
// files; and, on a machine with CUDA, every variant, the models, a training step and the rank analysis on the GPU against
// the CPU (fp32, ≤ 1e-4 relative). scripts/gpu-check.sh runs this executable with a CUDA LibTorch.
#include <gtest/gtest.h>

#include <filesystem>

#include "analysis/h5_store.h"
#include "attention_variants/registry.h"
#include "experiments/device.h"
#include "experiments/runtime.h"
#include "models/presets.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

std::string run(const std::string& cmd, int* status) { return test::run_command(cmd, status); }

/// A sink that keeps every probe it is offered (all of them, attention maps included).
class KeepAll : public ProbeSink {
 public:
  bool wants(Probe) const override { return true; }
  void receive(Probe p, const torch::Tensor& value) override { values[p] = value; }
  std::map<Probe, torch::Tensor> values;
};

/// Every variant at its default settings: (C = 32, 2 heads) on an 6×5 grid, batch 2.
struct VariantCase {
  Variant variant;
  std::string name;
};
std::vector<VariantCase> all_variants() {
  std::vector<VariantCase> v;
  for (const auto& info : kVariants) v.push_back({info.variant, info.name});
  return v;
}

/// Models of both families, small inputs: every letter in a RAVLT stage, DeiT with a kernel variant.
std::vector<std::pair<std::string, std::string>> model_cases() {
  std::vector<std::pair<std::string, std::string>> cases;
  for (const auto& info : kVariants) {
    const std::string l(1, info.letter);
    cases.push_back({"ravlt_micro", l + l + "SS"});
  }
  cases.push_back({"deit_tiny", "R"});
  return cases;
}

int64_t side_of(const std::string& model) { return model == "deit_tiny" ? 32 : 28; }

TEST(Device, CudaWithoutCudaIsOneLineNamingTheLibTorch) {
  if (built_with_cuda()) GTEST_SKIP() << "this build has CUDA";
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " info --device cuda", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rala: error: --device cuda: this rala was built against LibTorch " + torch_version() +
                     " (CPU only) at /"),
            std::string::npos)
      << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  for (const std::string sub : {"train --out x", "rank --out x", "bench", "rank-merge a.h5 --out b.h5", "report x.h5 --out y"}) {
    out = run(std::string(RALA_BINARY) + " " + sub + " --device cuda:1", &status);
    EXPECT_NE(status, 0) << sub;
    EXPECT_NE(out.find("--device cuda:1: this rala was built against"), std::string::npos) << sub << ": " << out;
  }
  out = run(std::string(RALA_BINARY) + " info --device gpu0", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rala: error: --device must be cpu, cuda or cuda:N (N a device index), got 'gpu0'"),
            std::string::npos)
      << out;
}

TEST(Device, InfoListsTheDevicesAndResultsRecordTheDevice) {
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " info --device cpu", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("devices  cpu ("), std::string::npos) << out;
  EXPECT_NE(out.find("(this run: cpu)"), std::string::npos) << out;
  EXPECT_NE(out.find("multi-process training: "), std::string::npos) << out;
  if (!built_with_cuda()) {
    EXPECT_NE(out.find("cuda: not available (this LibTorch has no CUDA)"), std::string::npos) << out;
  }
  test::TempDir dir;
  out = run(std::string(RALA_BINARY) + " rank --device cpu --model ravlt_micro --data synthetic --num-images 1 "
                "--quiet --out " + dir.path.string(),
            &status);
  ASSERT_EQ(status, 0) << out;
  h5::File f((dir.path / "ravlt_micro_RRSS.h5").string(), h5::Mode::read);
  EXPECT_EQ(f.attr_string("/", "device"), "cpu");
}

// (A meta-device variant of the device-following check — every operator checks that its inputs share a device — does
// not work on LibTorch 1.13: Module::to(kMeta) fails in set_data. The CUDA parity tests below cover it on a GPU.)

#define REQUIRE_CUDA()                                                                       \
  if (!built_with_cuda() || !torch::cuda::is_available())                                    \
  GTEST_SKIP() << "no CUDA device (" << torch_build_description() << "); run scripts/gpu-check.sh on a GPU machine"

constexpr double kFp32Tolerance = 1e-4;  // max |gpu − cpu| / max |cpu|, fp32 (TF32 off)

void no_tf32() {
  at::globalContext().setAllowTF32CuBLAS(false);  // fp32 parity: tensor cores would round inputs to 10 bits
  at::globalContext().setAllowTF32CuDNN(false);
}

TEST(DeviceParity, EveryVariantForwardBackwardAndProbesOnTheGpu) {
  REQUIRE_CUDA();
  no_tf32();
  const torch::Device cuda(torch::kCUDA, 0);
  for (const auto& c : all_variants()) {
    SCOPED_TRACE(c.name);
    torch::manual_seed(0);
    auto cpu = make_attention(c.variant, AttentionOptions(32, 2));
    test::randomize(*cpu, 7, 0.2);
    auto gpu = make_attention(c.variant, AttentionOptions(32, 2));
    {
      torch::NoGradGuard g;
      auto src = cpu->named_parameters(true), dst = gpu->named_parameters(true);
      for (const auto& p : src) dst[p.key()].copy_(p.value());
      auto sb = cpu->named_buffers(true), db = gpu->named_buffers(true);
      for (const auto& b : sb) db[b.key()].copy_(b.value());
    }
    gpu->to(cuda);
    const auto x = test::random_input(2, 32, 6, 5, 3, torch::kFloat32).requires_grad_(true);
    const auto xg = x.detach().to(cuda).requires_grad_(true);
    KeepAll pc, pg;
    const auto yc = cpu->forward(x, AttentionContext::for_input(x, 16, &pc));
    const auto yg = gpu->forward(xg, AttentionContext::for_input(xg, 16, &pg));
    EXPECT_EQ(yg.device(), cuda);
    EXPECT_LE(test::max_rel_err(yg.cpu(), yc), kFp32Tolerance);
    for (const auto& [p, v] : pc.values) {
      ASSERT_TRUE(pg.values.count(p)) << probe_name(p);
      EXPECT_LE(test::max_rel_err(pg.values.at(p).cpu(), v), kFp32Tolerance) << probe_name(p);
    }
    (yc * yc).sum().backward();
    (yg * yg).sum().backward();
    EXPECT_LE(test::max_rel_err(xg.grad().cpu(), x.grad()), kFp32Tolerance);
  }
}

TEST(DeviceParity, ModelsForwardAndBackwardOnTheGpu) {
  REQUIRE_CUDA();
  no_tf32();
  const torch::Device cuda(torch::kCUDA, 0);
  for (const auto& [preset, pattern] : model_cases()) {
    SCOPED_TRACE(preset + " " + pattern);
    torch::manual_seed(1);
    AnyModel cpu(preset, pattern, {}, 10), gpu(preset, pattern, {}, 10);
    {
      torch::NoGradGuard g;
      auto src = cpu.module()->named_parameters(true), dst = gpu.module()->named_parameters(true);
      for (const auto& p : src) dst[p.key()].copy_(p.value());
    }
    gpu.module()->to(cuda);
    const int64_t s = side_of(preset);
    const auto x = test::random_input(4, 3, s, s, 5, torch::kFloat32);
    for (bool training : {false, true}) {  // training: BatchNorm batch statistics, gradients
      cpu.module()->train(training);
      gpu.module()->train(training);
      const auto yc = cpu.forward(x), yg = gpu.forward(x.to(cuda));
      EXPECT_LE(test::max_rel_err(yg.detach().cpu(), yc.detach()), kFp32Tolerance) << training;
      if (!training) continue;
      yc.square().sum().backward();
      yg.square().sum().backward();
      auto gc = cpu.module()->named_parameters(true), gg = gpu.module()->named_parameters(true);
      double worst = 0;
      for (const auto& p : gc)
        if (p.value().grad().defined())
          worst = std::max(worst, test::max_rel_err(gg[p.key()].grad().cpu(), p.value().grad()));
      EXPECT_LE(worst, 10 * kFp32Tolerance) << "gradients (sums over the batch and the grid)";
    }
  }
}

// The whole rank analysis on the GPU (probes computed there, spectra in float64 on the CPU): the same files up to
// the probes' fp32 rounding.
TEST(DeviceParity, RankAnalysisOnTheGpuMatchesTheCpu) {
  REQUIRE_CUDA();
  test::TempDir dir;
  int status = 0;
  for (const std::string dev : {"cpu", "cuda"}) {
    auto out = run(std::string(RALA_BINARY) + " rank --device " + dev +
                       " --model ravlt_micro --attn-pattern RRSS --data synthetic --num-images 4 --quiet --out " +
                       (dir.path / dev).string(),
                   &status);
    ASSERT_EQ(status, 0) << out;
  }
  h5::File a((dir.path / "cpu" / "ravlt_micro_RRSS.h5").string(), h5::Mode::read);
  h5::File b((dir.path / "cuda" / "ravlt_micro_RRSS.h5").string(), h5::Mode::read);
  EXPECT_EQ(b.attr_string("/", "device"), "cuda:0");
  for (const std::string p : {"kv_buffer", "output", "output_gated"}) {
    const std::string d = "/layers/0.0/" + p + "/singular_values";
    EXPECT_LE(test::max_rel_err(b.read(d), a.read(d)), 1e-3) << p;
  }
}

}  // namespace
}  // namespace rala
