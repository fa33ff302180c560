#include "experiments/train/distributed.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>

#ifdef RALA_DISTRIBUTED
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RALA_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

#include "experiments/runtime.h"

namespace rala {

// ---------------------------------------------------------------------------------------------------------------
// The launch, from the environment

namespace {

using Getenv = std::function<const char*(const char*)>;

std::string var(const Getenv& getenv, const char* name) {
  const char* v = getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

int64_t parse_count(const Getenv& getenv, const char* name, int64_t min_value, int64_t max_value) {
  const std::string s = var(getenv, name);
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(!s.empty() && used > 0 && s.find_first_not_of(" \t", used) == std::string::npos && v >= min_value &&
                  v <= max_value,
              "environment variable ", name, "='", s, "' must be an integer in [", min_value, ", ", max_value, "]");
  return v;
}

/// The leading count of a Slurm per-node list such as "4(x2),3" (this node's count comes first only for node 0, so
/// this is used for the thread split only, never for ranks).
int64_t leading_count(const std::string& s) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  return end != s.c_str() && v > 0 ? v : 1;
}

/// The first host of a Slurm host list: "gn[10,20-25]" → "gn10", "node-[001-004]x" → "node-001x", "a,b" → "a".
std::string first_host(const std::string& list) {
  size_t depth = 0, end = list.size();
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i] == '[') ++depth;
    if (list[i] == ']' && depth > 0) --depth;
    if (list[i] == ',' && depth == 0) {
      end = i;
      break;
    }
  }
  const std::string host = list.substr(0, end);
  const size_t open = host.find('['), close = host.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return host;
  std::string inside = host.substr(open + 1, close - open - 1);
  inside = inside.substr(0, inside.find(','));
  inside = inside.substr(0, inside.find('-'));
  return host.substr(0, open) + inside + host.substr(close + 1);
}

}  // namespace

std::string DistEnv::describe() const {
  return "rank " + std::to_string(rank) + "/" + std::to_string(world_size) + " (local " + std::to_string(local_rank) +
         "/" + std::to_string(local_size) + ", launched by " + launcher + "), store " + master_addr + ":" +
         std::to_string(master_port) + (agent_store ? " (torchrun's agent store)" : "");
}

DistEnv read_dist_env(const Getenv& getenv) {
  DistEnv e;
  constexpr int64_t kMaxWorld = 1 << 20;
  auto has = [&](const char* name) { return !var(getenv, name).empty(); };
  bool single_node = false;
  if (has("RANK") && has("WORLD_SIZE")) {
    e.launcher = "torchrun/env";
    e.world_size = parse_count(getenv, "WORLD_SIZE", 1, kMaxWorld);
    e.rank = parse_count(getenv, "RANK", 0, e.world_size - 1);
    e.local_rank = has("LOCAL_RANK") ? parse_count(getenv, "LOCAL_RANK", 0, e.world_size - 1) : e.rank;
    e.local_size = has("LOCAL_WORLD_SIZE") ? parse_count(getenv, "LOCAL_WORLD_SIZE", 1, e.world_size)
                                           : (has("LOCAL_RANK") ? 1 : e.world_size);
    single_node = !has("LOCAL_RANK") || e.local_size == e.world_size;
    e.agent_store = var(getenv, "TORCHELASTIC_USE_AGENT_STORE") == "True";
    if (has("TORCHELASTIC_RESTART_COUNT"))
      e.restart_count = parse_count(getenv, "TORCHELASTIC_RESTART_COUNT", 0, 1 << 30);
  } else if (has("SLURM_PROCID") && has("SLURM_STEP_NUM_TASKS")) {  // inside srun (the batch script has no step)
    e.launcher = "slurm";
    e.world_size = parse_count(getenv, "SLURM_STEP_NUM_TASKS", 1, kMaxWorld);
    e.rank = parse_count(getenv, "SLURM_PROCID", 0, e.world_size - 1);
    e.local_rank = has("SLURM_LOCALID") ? parse_count(getenv, "SLURM_LOCALID", 0, e.world_size - 1) : 0;
    e.local_size = has("SLURM_STEP_TASKS_PER_NODE") ? leading_count(var(getenv, "SLURM_STEP_TASKS_PER_NODE")) : 1;
    single_node = var(getenv, "SLURM_STEP_NUM_NODES") == "1";
    if (!has("MASTER_ADDR") && has("SLURM_STEP_NODELIST")) {
      e.master_addr = first_host(var(getenv, "SLURM_STEP_NODELIST"));
    }
    if (!has("MASTER_PORT") && has("SLURM_JOB_ID"))
      e.master_port = 20000 + parse_count(getenv, "SLURM_JOB_ID", 0, INT64_MAX) % 10000;
  } else if (has("OMPI_COMM_WORLD_RANK") && has("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "openmpi";
    e.world_size = parse_count(getenv, "OMPI_COMM_WORLD_SIZE", 1, kMaxWorld);
    e.rank = parse_count(getenv, "OMPI_COMM_WORLD_RANK", 0, e.world_size - 1);
    e.local_rank = has("OMPI_COMM_WORLD_LOCAL_RANK") ? parse_count(getenv, "OMPI_COMM_WORLD_LOCAL_RANK", 0, e.world_size - 1) : 0;
    e.local_size = has("OMPI_COMM_WORLD_LOCAL_SIZE") ? parse_count(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE", 1, e.world_size) : 1;
    single_node = e.local_size == e.world_size;
  } else if (has("PMI_RANK") && has("PMI_SIZE")) {
    e.launcher = "pmi";
    e.world_size = parse_count(getenv, "PMI_SIZE", 1, kMaxWorld);
    e.rank = parse_count(getenv, "PMI_RANK", 0, e.world_size - 1);
    e.local_rank = has("MPI_LOCALRANKID") ? parse_count(getenv, "MPI_LOCALRANKID", 0, e.world_size - 1) : 0;
    e.local_size = has("MPI_LOCALNRANKS") ? parse_count(getenv, "MPI_LOCALNRANKS", 1, e.world_size) : 1;
    single_node = e.local_size == e.world_size;
  } else {
    return e;  // a single process
  }
  if (has("MASTER_ADDR")) e.master_addr = var(getenv, "MASTER_ADDR");
  if (has("MASTER_PORT")) e.master_port = parse_count(getenv, "MASTER_PORT", 1, 65535);
  TORCH_CHECK(e.world_size == 1 || has("MASTER_ADDR") || single_node || e.master_addr != "127.0.0.1",
              "a ", e.world_size, "-process launch by ", e.launcher,
              " across several nodes needs MASTER_ADDR (the host of rank 0), e.g. export MASTER_ADDR=$(hostname) on "
              "the first node (mpirun: -x MASTER_ADDR)");
  return e;
}

DistEnv read_dist_env() {
  return read_dist_env([](const char* name) { return std::getenv(name); });
}

torch::Tensor rank_share(int64_t n, int64_t rank, int64_t world) {
  if (rank >= n) return torch::empty({0}, torch::kInt64);
  return torch::arange(rank, n, world, torch::kInt64);
}

// ---------------------------------------------------------------------------------------------------------------
// The process group

bool distributed_available() {
#ifdef RALA_DISTRIBUTED
  return true;
#else
  return false;
#endif
}

std::string distributed_unavailable_reason() {
#ifdef RALA_DISTRIBUTED
  return "";
#else
  return "this rala was built without c10d's Gloo backend (CMake found no Gloo headers — Debian package libgloo-dev — "
         "or the LibTorch in use has no USE_C10D_GLOO); install them and reconfigure";
#endif
}

struct Distributed::Impl {
#ifdef RALA_DISTRIBUTED
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef RALA_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  /// Calls f(process group): NCCL when it is the backend, else Gloo. Both have the same collective signatures.
  template <class F>
  auto with_group(F&& f) {
#ifdef RALA_WITH_NCCL
    if (nccl) return f(*nccl);
#endif
    return f(*gloo);
  }
#endif
  torch::Device comm_device = torch::kCPU;  ///< where small helper tensors (flags, lengths) live: CUDA for NCCL
};

namespace {

std::mutex& world_mutex() {
  static std::mutex m;
  return m;
}

/// Flat buckets of tensors with one dtype and device each, at most `bucket_bytes` (a tensor larger than that gets a
/// bucket of its own).
std::vector<std::vector<torch::Tensor>> make_buckets(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<std::vector<torch::Tensor>> buckets;
  std::vector<int64_t> bytes;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
    bool placed = false;
    for (size_t b = 0; b < buckets.size() && !placed; ++b) {
      const auto& first = buckets[b].front();
      if (first.scalar_type() == t.scalar_type() && first.device() == t.device() && bytes[b] + size <= bucket_bytes) {
        buckets[b].push_back(t);
        bytes[b] += size;
        placed = true;
      }
    }
    if (!placed) {
      buckets.push_back({t});
      bytes.push_back(size);
    }
  }
  return buckets;
}

torch::Tensor flatten(const std::vector<torch::Tensor>& bucket) {
  std::vector<torch::Tensor> flat;
  flat.reserve(bucket.size());
  for (const auto& t : bucket) flat.push_back(t.detach().reshape({-1}));
  return torch::cat(flat);
}

void unflatten_into(const torch::Tensor& flat, const std::vector<torch::Tensor>& bucket) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& t : bucket) {
    t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

}  // namespace

Distributed* Distributed::world(const DistOptions& options) {
  std::lock_guard<std::mutex> lock(world_mutex());
  static bool initialised = false;
  static Distributed* instance = nullptr;  // never destroyed: the group lives until the process exits
  if (initialised) return instance;
  const DistEnv env = read_dist_env();
  if (env.world_size > 1) {
    TORCH_CHECK(distributed_available(), env.describe(), ": ", distributed_unavailable_reason());
    instance = new Distributed(env, options);
  }
  initialised = true;
  return instance;
}

Distributed::Distributed(DistEnv env, const DistOptions& options)
    : env_(std::move(env)), timeout_(options.timeout), impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(options.timeout.count() > 0, "--dist-timeout must be > 0 seconds, got ", options.timeout.count());
  const bool cuda = options.device.is_cuda();
#ifdef RALA_WITH_NCCL
  const bool have_nccl = true;
#else
  const bool have_nccl = false;
#endif
  backend_ = options.backend;
  if (backend_ == "auto") backend_ = cuda && have_nccl ? "nccl" : "gloo";
  TORCH_CHECK(backend_ == "gloo" || backend_ == "nccl", "--dist-backend must be auto, gloo or nccl, got '", backend_, "'");
  TORCH_CHECK(backend_ != "nccl" || have_nccl, "--dist-backend nccl: this rala was built without NCCL (",
              "it needs a CUDA LibTorch with USE_C10D_NCCL and nccl.h at configure time); use gloo");
  TORCH_CHECK(backend_ != "nccl" || cuda, "--dist-backend nccl needs --device cuda (NCCL reduces CUDA tensors only)");
#ifdef RALA_DISTRIBUTED
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout_);
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(env_.master_port);
    o.isServer = env_.rank == 0 && !env_.agent_store;  // under torchrun's static rendezvous the agent hosts it
    // Every rank names the world size: in 1.13 a client only checks in (so the server's wait ends) when it knows it.
    o.numWorkers = static_cast<size_t>(env_.world_size);
    o.waitWorkers = true;
    o.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, o);
    if (env_.agent_store)  // the key namespace of Python's env:// rendezvous under torchrun
      impl_->store = c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(env_.restart_count), impl_->store);
    if (backend_ == "nccl") {
#ifdef RALA_WITH_NCCL
      c10::cuda::set_device(options.device.index());
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, static_cast<int>(env_.rank),
                                                                static_cast<int>(env_.world_size), nccl_options);
      impl_->comm_device = options.device;
#endif
    } else {
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
      // The interface(s) to talk on: GLOO_SOCKET_IFNAME (a comma list), as Python's binding reads it; else loopback
      // when every rank is on this node, else the address this host's name resolves to.
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        std::string list = ifname;
        size_t start = 0;
        while (start <= list.size()) {
          const size_t comma = list.find(',', start);
          const std::string name = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
          if (!name.empty()) gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
      } else if (env_.local_size == env_.world_size && env_.master_addr == "127.0.0.1") {
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, static_cast<int>(env_.rank),
                                                                static_cast<int>(env_.world_size), gloo_options);
    }
  } catch (const std::exception& e) {
    TORCH_CHECK(false, env_.describe(), ": could not form the ", backend_, " process group within ", timeout_.count(),
                " s (is every rank started, and MASTER_ADDR:MASTER_PORT reachable and free?): ", error_line(e));
  }
#endif
}

void Distributed::run(const std::string& what, const std::function<void()>& body) {
  TORCH_CHECK(!broken_, "rank ", env_.rank, "/", env_.world_size, ": ", what,
              ": the process group already failed in an earlier collective");
  const auto t0 = std::chrono::steady_clock::now();
  try {
    body();
  } catch (const std::exception& e) {
    broken_ = true;
    std::string cause = error_line(e);
    for (auto& ch : cause)
      if (ch == '\n' || ch == '\r') ch = ' ';
    TORCH_CHECK(false, "rank ", env_.rank, "/", env_.world_size, ": ", what,
                " failed: another process of the job exited or did not answer within --dist-timeout ",
                timeout_.count(), " s (", cause, ")");
  }
  comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++comm_calls_;
}

void Distributed::broadcast(const std::vector<torch::Tensor>& tensors, int64_t root, const std::string& what) {
  run(what, [&] {
#ifdef RALA_DISTRIBUTED
    torch::NoGradGuard no_grad;
    auto buckets = make_buckets(tensors, 25 << 20);
    std::vector<torch::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (const auto& b : buckets) {
      flats.push_back(flatten(b));
      std::vector<at::Tensor> one{flats.back()};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      works.push_back(impl_->with_group([&](auto& pg) { return pg.broadcast(one, o); }));
    }
    for (auto& w : works) w->wait();
    for (size_t i = 0; i < buckets.size(); ++i) unflatten_into(flats[i], buckets[i]);
#endif
  });
}

void Distributed::allreduce_sum(const std::vector<torch::Tensor>& tensors, const std::string& what,
                                int64_t bucket_bytes) {
  run(what, [&] {
#ifdef RALA_DISTRIBUTED
    torch::NoGradGuard no_grad;
    auto buckets = make_buckets(tensors, bucket_bytes);
    std::vector<torch::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (const auto& b : buckets) {  // every bucket in flight at once (Gloo runs them on its worker threads)
      flats.push_back(b.size() == 1 && b[0].is_contiguous() ? b[0].detach().view({-1}) : flatten(b));
      std::vector<at::Tensor> one{flats.back()};
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      works.push_back(impl_->with_group([&](auto& pg) { return pg.allreduce(one, o); }));
    }
    for (auto& w : works) w->wait();
    for (size_t i = 0; i < buckets.size(); ++i)
      if (!(buckets[i].size() == 1 && buckets[i][0].is_contiguous())) unflatten_into(flats[i], buckets[i]);
#endif
  });
}

void Distributed::all_sum(torch::Tensor& tensor) { allreduce_sum({tensor}, "BatchNorm statistics"); }

void Distributed::barrier(const std::string& what) {
  run(what, [&] {
#ifdef RALA_DISTRIBUTED
    // An allreduce of one element rather than c10d's barrier(): it needs no device guess under NCCL.
    std::vector<at::Tensor> one{torch::zeros({1}, torch::TensorOptions().device(impl_->comm_device))};
    impl_->with_group([&](auto& pg) { return pg.allreduce(one); })->wait();
    one[0].cpu();  // under NCCL, wait() only orders streams: this waits for the result
#endif
  });
}

std::string Distributed::broadcast_bytes(const std::string& bytes, int64_t root, const std::string& what) {
  auto length = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64).to(impl_->comm_device);
  broadcast({length}, root, what + " (length)");
  const int64_t n = length.cpu().item<int64_t>();
  if (n == 0) return "";
  auto data = torch::empty({n}, torch::kUInt8);
  if (env_.rank == root) std::memcpy(data.data_ptr<uint8_t>(), bytes.data(), static_cast<size_t>(n));
  auto on_device = data.to(impl_->comm_device);
  broadcast({on_device}, root, what);
  data = on_device.cpu();
  return std::string(reinterpret_cast<const char*>(data.data_ptr<uint8_t>()), static_cast<size_t>(n));
}

void Distributed::agree(const std::string& local_error, const std::string& what) {
  // The lowest failed rank (world size = nobody failed): an allreduce of −rank with max would need MIN; use SUM of
  // one-hot flags instead, which every backend supports for every dtype.
  auto flags = torch::zeros({env_.world_size}, torch::TensorOptions().dtype(torch::kFloat64).device(impl_->comm_device));
  if (!local_error.empty()) flags[env_.rank] = 1.0;
  allreduce_sum({flags}, what);
  const auto host = flags.cpu();
  int64_t failed = -1;
  for (int64_t r = 0; r < env_.world_size && failed < 0; ++r)
    if (host[r].item<double>() > 0) failed = r;
  if (failed < 0) return;
  const std::string message = broadcast_bytes(local_error, failed, what + " (error message)");
  TORCH_CHECK(false, failed == env_.rank ? message : "rank " + std::to_string(failed) + ": " + message);
}

}  // namespace rala
