#pragma once
/// \file device.h
/// `--device cpu|cuda|cuda:N` for every subcommand: parsing with one-line errors that name the LibTorch that was
/// found, the process-wide device of this run (recorded in every results file), the devices LibTorch sees (for
/// `rala info`), and the few CUDA-only calls the subcommands need (synchronise, peak memory), compiled in only when
/// the LibTorch found by CMake has CUDA (RALA_WITH_CUDA).
///
///   torch::Device d = rala::parse_device("cuda:1");   // throws one line on a CPU-only LibTorch
///   rala::set_run_device(d);                          // main does this from --device
///   model->to(rala::run_device()); x = x.to(rala::run_device());

#include <torch/torch.h>

#include <string>
#include <vector>

namespace rala {

/// Parses a --device value: "cpu", "cuda" (= cuda:0, or the local rank's GPU in a distributed launch), "cuda:N".
/// Throws one line when the spelling is wrong, when this LibTorch has no CUDA (naming the LibTorch found: version,
/// build, library path), when it sees no CUDA device, or when N is out of range.
torch::Device parse_device(const std::string& spec);

/// parse_device(spec); under a launcher (torchrun, srun, mpirun), "cuda" without an index is the local rank's GPU
/// (local rank mod the number of GPUs), so that one command line serves every process of a node.
torch::Device resolve_run_device(const std::string& spec);

/// The device of this run: every model, input, RoPE table and probe of the subcommand lives there. Default cpu.
void set_run_device(const torch::Device& device);
torch::Device run_device();
/// "cpu" or "cuda:N" (what results files record as `device`).
std::string device_string(const torch::Device& device);
/// "cpu", or "cuda:0 (NVIDIA H200, 139.8 GiB)".
std::string device_description(const torch::Device& device);

/// The LibTorch this binary runs on: "LibTorch 1.13.1 (CPU only) at /usr/lib/x86_64-linux-gnu/libtorch_cpu.so.1.13".
std::string torch_build_description();
/// Whether this binary was built against a LibTorch with CUDA.
bool built_with_cuda();
/// One line per device LibTorch sees: "cpu (2 cores)", "cuda:0 NVIDIA H200, 139.8 GiB, compute capability 9.0".
std::vector<std::string> visible_devices();

/// Waits for all queued work on `device` (no-op on the CPU); timings of CUDA work must call it before reading a clock.
void synchronize(const torch::Device& device);
/// Peak bytes allocated by LibTorch's CUDA caching allocator on `device` since the last reset; -1 on the CPU.
int64_t device_peak_bytes(const torch::Device& device);
void reset_device_peak(const torch::Device& device);

}  // namespace rala
