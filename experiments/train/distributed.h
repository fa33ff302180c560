#pragma once
/// \file distributed.h
/// Data-parallel training across processes on PyTorch's own distributed engine, c10d: rendezvous through a TCPStore
/// (torchrun's agent store under torchrun's static rendezvous), collectives on ProcessGroupGloo (CPU tensors) or
/// ProcessGroupNCCL (CUDA tensors, when built against a CUDA LibTorch with NCCL). No Python, no MPI library: the
/// launcher (torchrun, srun, mpirun) only starts the processes and sets the environment this file reads.
///
/// World size 1 (no launcher variables) means no process group at all: Distributed::world() returns nullptr and the
/// training loop runs exactly its single-process path.
///
///   DistOptions o;                                  // backend auto, timeout 600 s, the run's device
///   if (Distributed* d = Distributed::world(o)) {   // nullptr in a single process
///     d->broadcast(params_and_buffers, 0, "initial weights");
///     ...
///     d->allreduce_sum(grads, "gradients");         // bucketed, every bucket in flight at once
///   }
///
/// Every collective must be called by every rank in the same order. A collective that fails (a peer died, closed its
/// connection, or did not answer within the timeout) throws one line naming this rank, the collective and the cause;
/// the process group is unusable afterwards.

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attention_variants/batch_norm.h"

namespace rala {

/// Where this process sits in a launch, read from the environment.
struct DistEnv {
  int64_t rank = 0, world_size = 1;        ///< global rank and number of processes
  int64_t local_rank = 0, local_size = 1;  ///< rank among, and number of, the processes on this node
  std::string launcher = "none";           ///< "torchrun" (RANK/WORLD_SIZE, also set by hand), "slurm", "openmpi", "pmi"
  std::string master_addr = "127.0.0.1";   ///< host of rank 0's TCPStore
  int64_t master_port = 29500;
  bool agent_store = false;                ///< torchrun's static rendezvous: its agent hosts the store already
  int64_t restart_count = 0;               ///< torchrun's TORCHELASTIC_RESTART_COUNT (the key prefix of the agent store)
  /// "rank 1/4 (local 1/2, launched by torchrun), store 10.0.0.1:29500".
  std::string describe() const;
};

/// Reads the launch from `getenv`, in this order: RANK + WORLD_SIZE (torchrun, or set by hand; LOCAL_RANK,
/// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT);
/// SLURM_PROCID + SLURM_STEP_NUM_TASKS (inside `srun`, not in the batch script itself; SLURM_LOCALID,
/// SLURM_STEP_TASKS_PER_NODE; MASTER_ADDR defaults to the first host of SLURM_STEP_NODELIST and MASTER_PORT to
/// 20000 + SLURM_JOB_ID mod 10000); OMPI_COMM_WORLD_RANK + _SIZE (Open MPI's mpirun; _LOCAL_RANK, _LOCAL_SIZE);
/// PMI_RANK + PMI_SIZE (MPICH / Intel MPI; MPI_LOCALRANKID, MPI_LOCALNRANKS). Without any: world size 1. Throws one
/// line naming the variable when a value is not a number or out of range, or when a multi-node launch leaves
/// MASTER_ADDR unknown.
DistEnv read_dist_env(const std::function<const char*(const char*)>& getenv);
/// read_dist_env(std::getenv).
DistEnv read_dist_env();

/// How the process group is built (used when Distributed::world() first creates it).
struct DistOptions {
  std::string backend = "auto";               ///< auto (nccl for CUDA when built with it, else gloo) | gloo | nccl
  std::chrono::seconds timeout{600};          ///< rendezvous and every collective
  torch::Device device = torch::kCPU;         ///< where gradients live
};

/// The process group of this process (one per process, created on first use, never destroyed: it lives until exit).
class Distributed : public BatchNormSync {
 public:
  /// The group of this launch, created on the first call from read_dist_env() and `options` (later calls return the
  /// same group and ignore `options`); nullptr when the world size is 1. Blocks until every rank has joined (or the
  /// timeout passes: one line naming the store address and the ranks that are missing).
  static Distributed* world(const DistOptions& options = DistOptions());

  int64_t rank() const { return env_.rank; }
  int64_t world_size() const { return env_.world_size; }
  int64_t local_rank() const { return env_.local_rank; }
  bool is_main() const { return env_.rank == 0; }
  const DistEnv& env() const { return env_; }
  /// "gloo" or "nccl".
  const std::string& backend() const { return backend_; }
  std::chrono::seconds timeout() const { return timeout_; }

  /// Copies `tensors` of rank `root` into every rank's tensors (in place; no autograd), coalesced into flat buckets.
  void broadcast(const std::vector<torch::Tensor>& tensors, int64_t root, const std::string& what);
  /// Sums `tensors` over all ranks, in place: flattened into buckets of at most `bucket_bytes` per dtype and device,
  /// every bucket's allreduce in flight at once, then copied back.
  void allreduce_sum(const std::vector<torch::Tensor>& tensors, const std::string& what,
                     int64_t bucket_bytes = 25 << 20);
  /// Sums one tensor over all ranks, in place (BatchNormSync: the statistics of a synchronised BatchNorm).
  void all_sum(torch::Tensor& tensor) override;
  /// Waits until every rank arrives.
  void barrier(const std::string& what);
  /// Rank `root`'s bytes on every rank.
  std::string broadcast_bytes(const std::string& bytes, int64_t root, const std::string& what);
  /// Makes a decision collective: every rank passes its own error ("" = fine); if any rank failed, every rank throws
  /// the error of the lowest failed rank, prefixed "rank R: " when it is another rank's.
  void agree(const std::string& local_error, const std::string& what);

  /// Seconds spent inside collectives (from launch to completion) since the last reset, and how many ran.
  double comm_seconds() const { return comm_seconds_; }
  int64_t comm_calls() const { return comm_calls_; }
  void reset_comm_stats() { comm_seconds_ = 0, comm_calls_ = 0; }

 private:
  struct Impl;
  Distributed(DistEnv env, const DistOptions& options);
  /// Runs a collective; a failure throws one line naming this rank, `what` and the cause, and marks the group broken.
  void run(const std::string& what, const std::function<void()>& body);
  DistEnv env_;
  std::string backend_;
  std::chrono::seconds timeout_;
  std::unique_ptr<Impl> impl_;
  bool broken_ = false;
  double comm_seconds_ = 0;
  int64_t comm_calls_ = 0;
};

/// Whether this build can form a process group (c10d with Gloo was found at configure time), and why not.
bool distributed_available();
std::string distributed_unavailable_reason();

/// The rows of a global batch of `n` that rank `rank` of `world` takes: rank, rank + world, … (empty when n ≤ rank).
torch::Tensor rank_share(int64_t n, int64_t rank, int64_t world);

}  // namespace rala
