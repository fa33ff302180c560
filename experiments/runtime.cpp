#include "experiments/runtime.h"

#include <dlfcn.h>
#include <unistd.h>
#include <malloc.h>

#include <cstdlib>
#include <ctime>

#include <filesystem>
#include <limits>
#include <fstream>
#include <set>
#include <thread>

#include <torch/torch.h>

#include "analysis/h5_store.h"
#include "experiments/device.h"

namespace rala {

std::string tool_version() { return RALA_VERSION; }
std::string git_commit() { return RALA_GIT_COMMIT; }

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

int configure_threads(int requested) {
  TORCH_CHECK(requested >= 0, "--threads must be >= 0 (0 = all cores), got ", requested);
  int n = requested;
  if (n == 0) {
    // All cores, shared among the processes a launcher started on this node (torchrun, srun, mpirun set these).
    int local_processes = 1;
    for (const char* name : {"LOCAL_WORLD_SIZE", "SLURM_STEP_TASKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE"}) {
      const char* v = std::getenv(name);
      if (v == nullptr || *v == '\0') continue;
      char* end = nullptr;
      const long count = std::strtol(v, &end, 10);  // Slurm may write "4(x2)": the leading count is this node's
      if (end != v && count > 0) local_processes = static_cast<int>(count);
      break;
    }
    n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency() / static_cast<unsigned>(local_processes)));
  }
  at::set_num_threads(n);
  return at::get_num_threads();
}

void configure_allocator(const std::string& policy) {
  if (policy == "retain") {
    // glibc serves blocks ≥ 128 KiB–32 MiB by mmap and unmaps them on free, so every forward page-faults (and the
    // kernel zeroes) all its activations again. Keep freed memory in the heap instead: no mmap, no automatic trim.
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  } else {
    TORCH_CHECK(policy == "system", "--allocator must be retain or system, got '", policy, "'");
  }
}

int set_blas_threads(int threads) {
  using SetFn = void (*)(int);
  using GetFn = int (*)();
  if (auto set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
  if (auto get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) return get();
  return -1;
}

std::string better_blas_core(const std::string& chosen) {
#if defined(__x86_64__) && defined(__GNUC__)
  // The generic cores OpenBLAS falls back to for a CPU model it does not know.
  static const std::set<std::string> generic = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                                "Sandybridge", "Katmai", "Coppermine", "Northwood", "Banias"};
  if (!generic.count(chosen)) return "";
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return chosen == "Sandybridge" ? "" : "Haswell";
#else
  (void)chosen;
#endif
  return "";
}

std::string select_blas_kernels(char** argv) {
  using CoreFn = char* (*)();
  auto corename = reinterpret_cast<CoreFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!corename) return "";
  const std::string chosen = corename();
  const char* keep = std::getenv("RALA_BLAS_CORETYPE");
  if (std::getenv("OPENBLAS_CORETYPE") || (keep && std::string(keep) == "keep")) return chosen;
  const std::string better = better_blas_core(chosen);
  if (better.empty()) return chosen;
  // The re-executed process sees OPENBLAS_CORETYPE set and stops here; if exec fails we simply go on as we are.
  setenv("OPENBLAS_CORETYPE", better.c_str(), 1);
  execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE");
  return chosen;
}

std::string blas_info() {
  // The libraries actually mapped, not what the build linked against: Debian switches BLAS by alternatives.
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> libs;
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    auto name = std::filesystem::path(path).filename().string();
    if (name.find("blas") != std::string::npos || name.find("mkl") != std::string::npos) libs.insert(path);
  }
  std::string out;
  for (const auto& p : libs) out += (out.empty() ? "" : ", ") + p;
  if (out.empty()) out = "none mapped";
  using ConfigFn = char* (*)();
  if (auto fn = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) out += " [" + std::string(fn()) + "]";
  return out;
}

namespace {
std::string& command_line_storage() {
  static std::string value;
  return value;
}
}  // namespace

void set_command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    const bool quote = arg.empty() || arg.find_first_of(" \t\"'") != std::string::npos;
    s += (i ? " " : "") + (quote ? "'" + arg + "'" : arg);
  }
  command_line_storage() = s;
}

const std::string& command_line() { return command_line_storage(); }

std::string utc_now() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

void set_provenance(h5::File& file) {
  file.set_attr("/", "schema_version", int64_t{1});
  file.set_attr("/", "tool_version", tool_version());
  file.set_attr("/", "git_commit", git_commit());
  file.set_attr("/", "torch_version", torch_version());
  file.set_attr("/", "created_utc", utc_now());
  file.set_attr("/", "command_line", command_line());
  file.set_attr("/", "threads", static_cast<int64_t>(at::get_num_threads()));
  const torch::Device device = run_device();
  file.set_attr("/", "device", device_string(device));
  if (device.is_cuda()) file.set_attr("/", "device_name", device_description(device));
}

std::string error_line(const std::exception& e) {
  if (auto c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

}  // namespace rala
