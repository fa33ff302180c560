#include "experiments/device.h"

#include <dlfcn.h>

#include <cstdio>
#include <mutex>
#include <thread>

#ifdef RALA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "experiments/runtime.h"
#include "experiments/train/distributed.h"

namespace rala {

namespace {

std::mutex& device_mutex() {
  static std::mutex m;
  return m;
}

torch::Device& device_storage() {
  static torch::Device d(torch::kCPU);
  return d;
}

/// The shared library that holds LibTorch's CPU code, as mapped into this process.
std::string torch_library_path() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) != 0 && info.dli_fname != nullptr)
    return info.dli_fname;
  return "unknown location";
}

int64_t cuda_device_count() {
  return built_with_cuda() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
}

}  // namespace

bool built_with_cuda() {
#ifdef RALA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string torch_build_description() {
  std::string build = "CPU only";
#ifdef RALA_WITH_CUDA
#ifdef CUDA_VERSION
  build = "CUDA " + std::to_string(CUDA_VERSION / 1000) + "." + std::to_string(CUDA_VERSION % 1000 / 10);
#else
  build = "CUDA";
#endif
#endif
  return "LibTorch " + torch_version() + " (" + build + ") at " + torch_library_path();
}

torch::Device parse_device(const std::string& spec) {
  int64_t index = -1;
  if (spec == "cpu") return torch::Device(torch::kCPU);
  if (spec.rfind("cuda:", 0) == 0) {
    const std::string n = spec.substr(5);
    TORCH_CHECK(!n.empty() && n.size() <= 4 && n.find_first_not_of("0123456789") == std::string::npos,
                "--device must be cpu, cuda or cuda:N (N a device index), got '", spec, "'");
    index = std::stoll(n);
  } else {
    TORCH_CHECK(spec == "cuda", "--device must be cpu, cuda or cuda:N (N a device index), got '", spec, "'");
  }
  TORCH_CHECK(built_with_cuda(), "--device ", spec, ": this rala was built against ", torch_build_description(),
              ", which has no CUDA; configure with CMAKE_PREFIX_PATH set to a CUDA LibTorch (e.g. the output of python3 "
              "-c 'import torch; print(torch.utils.cmake_prefix_path)') and rebuild");
  const int64_t count = cuda_device_count();
  TORCH_CHECK(count > 0, "--device ", spec, ": ", torch_build_description(),
              " sees no CUDA device (no driver, or CUDA_VISIBLE_DEVICES hides them all)");
  if (index < 0) index = 0;
  TORCH_CHECK(index < count, "--device ", spec, ": LibTorch sees ", count, " CUDA device", count == 1 ? "" : "s",
              " (cuda:0", count > 1 ? " … cuda:" + std::to_string(count - 1) : std::string(), ")");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

torch::Device resolve_run_device(const std::string& spec) {
  torch::Device device = parse_device(spec);
  if (spec == "cuda") {
    const DistEnv env = read_dist_env();
    if (env.world_size > 1)
      device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank % cuda_device_count()));
  }
  return device;
}

void set_run_device(const torch::Device& device) {
  std::lock_guard<std::mutex> lock(device_mutex());
  device_storage() = device;
#ifdef RALA_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::set_device(device.index());  // kernels without an explicit device land here too
    // float32 means float32: no TF32 rounding of matmul and convolution inputs (LibTorch allows it in cuDNN by
    // default), so results on the GPU match the CPU's to fp32 rounding.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
#endif
}

torch::Device run_device() {
  std::lock_guard<std::mutex> lock(device_mutex());
  return device_storage();
}

std::string device_string(const torch::Device& device) {
  if (device.is_cpu()) return "cpu";
  return device.str();  // "cuda:0"
}

std::string device_description(const torch::Device& device) {
  if (!device.is_cuda()) return device_string(device);
#ifdef RALA_WITH_CUDA
  const auto* p = at::cuda::getDeviceProperties(device.index());
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s (%s, %.1f GiB)", device_string(device).c_str(), p->name,
                static_cast<double>(p->totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return buf;
#else
  return device_string(device);
#endif
}

std::vector<std::string> visible_devices() {
  std::vector<std::string> out;
  out.push_back("cpu (" + std::to_string(std::max(1u, std::thread::hardware_concurrency())) + " cores)");
  if (!built_with_cuda()) {
    out.push_back("cuda: not available (this LibTorch has no CUDA)");
    return out;
  }
  const int64_t count = cuda_device_count();
  if (count == 0) out.push_back("cuda: no device visible (no driver, or CUDA_VISIBLE_DEVICES hides them all)");
#ifdef RALA_WITH_CUDA
  for (int64_t i = 0; i < count; ++i) {
    const auto* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i));
    char buf[200];
    std::snprintf(buf, sizeof buf, "cuda:%lld %s, %.1f GiB, compute capability %d.%d", static_cast<long long>(i),
                  p->name, static_cast<double>(p->totalGlobalMem) / (1024.0 * 1024.0 * 1024.0), p->major, p->minor);
    out.push_back(buf);
  }
#endif
  return out;
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

int64_t device_peak_bytes(const torch::Device& device) {
#ifdef RALA_WITH_CUDA
  if (device.is_cuda()) {
    // allocated_bytes[0] is the aggregate over the small and large pools (StatType::AGGREGATE in 1.13 and 2.x).
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<int64_t>(stats.allocated_bytes[0].peak);
  }
#endif
  return -1;
}

void reset_device_peak(const torch::Device& device) {
#ifdef RALA_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
}

}  // namespace rala
