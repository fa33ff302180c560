// Data-parallel `rala train` on c10d (Gloo, 127.0.0.1): 2 and 3 processes of one thread each train like one
// process on the same global batches; a run resumes on another process count; a rank that dies or hangs stops the
// others with one line; a non-finite loss on one rank stops all; torchrun launches the binary. Plus the pieces:
// the launcher environment, SyncBatchNorm against LibTorch's BatchNorm on the whole batch, and each rank's share of
// a global batch against the whole batch.
//
// Every process is started with a bounded wait (kRunTimeout) and killed if it overruns, so a hang fails the test
// instead of stalling ctest.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "attention_variants/batch_norm.h"
#include "experiments/data/image_folder.h"
#include "experiments/train/distributed.h"
#include "experiments/train/train_loop.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"

extern char** environ;

namespace rala {
namespace {

namespace fs = std::filesystem;

constexpr double kRunTimeout = 240;  // seconds any one launch may take before it is killed and the test fails

// ---------------------------------------------------------------------------------------------------------------
// Launching processes

struct Launch {
  std::vector<int> status;        ///< exit code per process (-1: killed after the timeout, or by a signal)
  std::vector<std::string> logs;  ///< stdout + stderr per process
  double seconds = 0;             ///< until every process ended
};

/// A TCP port that was free a moment ago on 127.0.0.1.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The environment of this process without any launcher variable, plus `extra`.
std::vector<std::string> clean_environment(const std::map<std::string, std::string>& extra) {
  static const char* kLauncher[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                    "MASTER_PORT", "SLURM_", "OMPI_COMM_WORLD_", "PMI_", "TORCHELASTIC_",
                                    "GLOO_SOCKET_IFNAME"};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    bool drop = false;
    for (const char* p : kLauncher) drop |= kv.rfind(p, 0) == 0 && (kv[std::strlen(p)] == '=' || p[std::strlen(p) - 1] == '_');
    if (!drop) env.push_back(kv);
  }
  for (const auto& [k, v] : extra) env.push_back(k + "=" + v);
  return env;
}

pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env, const fs::path& log) {
  std::vector<char*> argv, envp;
  std::vector<std::string> a = args, e = env;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : e) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "cannot start " << args[0];
  return pid;
}

/// Waits for every pid (killing what is still running after `timeout` seconds); exit codes in order.
std::vector<int> wait_all(const std::vector<pid_t>& pids, double timeout, double* seconds,
                          const std::vector<pid_t>& kill_when_others_end = {}) {
  std::vector<int> status(pids.size(), -2);
  const auto t0 = std::chrono::steady_clock::now();
  size_t left = pids.size();
  while (left > 0) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (status[i] != -2) continue;
      int st = 0;
      if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        --left;
      }
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (seconds != nullptr && left == kill_when_others_end.size()) {
      // every process but the deliberately stopped ones has ended: note the time, then stop those
      *seconds = elapsed;
      for (size_t i = 0; i < pids.size(); ++i)
        if (status[i] == -2) ::kill(pids[i], SIGKILL);
      seconds = nullptr;
    }
    if (elapsed > timeout) {
      for (size_t i = 0; i < pids.size(); ++i)
        if (status[i] == -2) ::kill(pids[i], SIGKILL);
    }
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (seconds != nullptr)
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return status;
}

/// `world` processes of `rala --threads 1 <args>` with torchrun's variables on 127.0.0.1 (world 1: no variables).
Launch launch(int world, const std::vector<std::string>& args, const fs::path& logdir, int hang_rank = -1,
              double timeout = kRunTimeout) {
  fs::create_directories(logdir);
  const int port = free_port();
  std::vector<pid_t> pids, stopped;
  Launch l;
  for (int r = 0; r < world; ++r) {
    std::map<std::string, std::string> extra;
    if (world > 1)
      extra = {{"RANK", std::to_string(r)},        {"WORLD_SIZE", std::to_string(world)},
               {"LOCAL_RANK", std::to_string(r)},  {"LOCAL_WORLD_SIZE", std::to_string(world)},
               {"MASTER_ADDR", "127.0.0.1"},       {"MASTER_PORT", std::to_string(port)}};
    std::vector<std::string> argv = {RALA_BINARY, "--threads", "1"};
    argv.insert(argv.end(), args.begin(), args.end());
    pids.push_back(spawn(argv, clean_environment(extra), logdir / ("rank" + std::to_string(r) + ".log")));
    if (r == hang_rank) stopped.push_back(pids.back());
  }
  l.status = wait_all(pids, timeout, &l.seconds, stopped);
  for (int r = 0; r < world; ++r) l.logs.push_back(slurp(logdir / ("rank" + std::to_string(r) + ".log")));
  return l;
}

std::string describe(const Launch& l) {
  std::string s;
  for (size_t r = 0; r < l.logs.size(); ++r)
    s += "--- rank " + std::to_string(r) + " (exit " + std::to_string(l.status[r]) + ")\n" + l.logs[r];
  return s;
}

/// A small training run: ravlt_micro (BatchNorm in stem, downsampling and head) on 98 synthetic 28×28 images in
/// global batches of 32 (the last one of 2 images: on 3 processes one rank runs a placeholder), augmentation, EMA,
/// clipping and label smoothing on.
/// `linear_adam`: AdamW with eps 1 and lr 0.3 instead of eps 1e-8 and lr 1e-3 (see kLinearAdam).
std::vector<std::string> train_args(const fs::path& out, int epochs, bool linear_adam = false) {
  std::vector<std::string> a = {
      "train",         "--model",      "ravlt_micro", "--attn-pattern", "RRSS",       "--data",
      "synthetic",     "--train-limit", "98",         "--test-limit",   "40",         "--batch-size",
      "32",            "--epochs",     std::to_string(epochs), "--warmup-epochs", "0.5", "--lr",
      linear_adam ? "0.3" : "1e-3", "--ema-decay",  "0.9", "--clip-grad", "1.0",      "--seed",
      "3",             "--out",        out.string(),  "--quiet"};
  if (linear_adam) a.insert(a.end(), {"--adam-eps", "1"});
  return a;
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

/// ‖a − b‖ / ‖b‖ over all floating-point tensors of two checkpoints' state together (`key`: model or model_ema);
/// integer tensors (BatchNorm's num_batches_tracked) must be equal.
///
/// Why the whole state and not tensor by tensor: a conv bias that feeds a BatchNorm (ravlt_micro's stem, its
/// downsampling and its projection) has an exact gradient of zero — the BatchNorm subtracts it again — so its
/// computed gradient is rounding noise, different for every summation order, and such a tensor has no scale of its own
/// to be relative to (it is that noise, summed). Over the whole state it is negligible.
double checkpoint_rel_diff(const fs::path& a, const fs::path& b, const std::string& key = "model") {
  const auto sa = read_checkpoint(a.string(), key).state, sb = read_checkpoint(b.string(), key).state;
  EXPECT_EQ(sa.size(), sb.size());
  double diff2 = 0, norm2 = 0;
  for (const auto& [name, t] : sb) {
    if (!t.is_floating_point()) {
      EXPECT_TRUE(torch::equal(sa.at(name), t)) << name;
      continue;
    }
    const auto x = sa.at(name).to(torch::kFloat64), y = t.to(torch::kFloat64);
    diff2 += (x - y).pow(2).sum().item<double>();
    norm2 += y.pow(2).sum().item<double>();
  }
  return std::sqrt(diff2 / norm2);
}

bool checkpoints_equal(const fs::path& a, const fs::path& b) {
  for (const std::string key : {"model", "model_ema"}) {
    const auto sa = read_checkpoint(a.string(), key).state, sb = read_checkpoint(b.string(), key).state;
    if (sa.size() != sb.size()) return false;
    for (const auto& [name, t] : sb)
      if (!torch::equal(sa.at(name), t)) return false;
  }
  return true;
}

int count_error_lines(const std::string& log) {
  int n = 0;
  for (size_t p = log.find("rala: error:"); p != std::string::npos; p = log.find("rala: error:", p + 1)) ++n;
  return n;
}

bool distributed_build() { return distributed_available(); }

#define REQUIRE_DISTRIBUTED() \
  if (!distributed_build()) GTEST_SKIP() << distributed_unavailable_reason()

// ---------------------------------------------------------------------------------------------------------------
// Whole runs

// The operations that make a data-parallel run inexact relative to one process, all rounding only: the loss and
// gradient sums are split per rank and summed by the allreduce (another summation order); BatchNorm's statistics are
// summed per rank in float64 around the running mean instead of LibTorch's per-batch kernel; evaluation sums per
// rank. Data order, augmentation draws, label smoothing, clipping, AdamW, EMA are the same operations on the same
// values. (Drop path would not be: its masks are drawn per rank; it is off here.)
//
// And AdamW: its update g/(√v + eps) with eps 1e-8 turns a gradient component that is only rounding noise (the
// conv biases in front of a BatchNorm, whose exact gradient is zero; small gradients generally) into a ±lr step, so
// with PyTorch's default eps two summation orders already differ by ~2.6e-4 (‖Δθ‖/‖θ‖, measured: 4 steps of this
// run at lr 1e-3) — as two single-process runs with different thread counts do. With eps 1 the update is linear in
// the gradient (≈ lr·m) and the comparison tests the gradient sync itself: measured 3e-6.
TEST(DataParallel, TwoAndThreeProcessesTrainLikeOne) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  const auto one = launch(1, train_args(dir.path / "w1", 1, true), dir.path / "log1");
  ASSERT_EQ(one.status[0], 0) << describe(one);
  for (int world : {2, 3}) {
    const auto out = dir.path / ("w" + std::to_string(world));
    const auto l = launch(world, train_args(out, 1, true), dir.path / ("log" + std::to_string(world)));
    for (int r = 0; r < world; ++r) ASSERT_EQ(l.status[r], 0) << describe(l);
    // every rank's weights are checked bit-identical to rank 0's after each epoch inside the run (a failure is an
    // error, see WeightsThatDivergeAreCaught); rank 0's equal the single process's:
    const double model = checkpoint_rel_diff(out / "checkpoint.pth", dir.path / "w1" / "checkpoint.pth");
    const double ema = checkpoint_rel_diff(out / "checkpoint.pth", dir.path / "w1" / "checkpoint.pth", "model_ema");
    EXPECT_LE(model, 1e-5) << world << " processes";
    EXPECT_LE(ema, 1e-5) << world << " processes";
    EXPECT_GT(model, 0.0) << "bit-identical would mean the processes did not split the batch";
    h5::File f((out / "metrics.h5").string(), h5::Mode::read);
    const auto t = ResultsTable::read_h5(f);
    h5::File f1((dir.path / "w1" / "metrics.h5").string(), h5::Mode::read);
    const auto t1 = ResultsTable::read_h5(f1);
    EXPECT_EQ(t.column("processes").numbers[0], world);
    EXPECT_GT(t.column("comm_seconds").numbers[0], 0.0);
    EXPECT_NEAR(t.column("train_loss").numbers[0], t1.column("train_loss").numbers[0], 1e-5);
    EXPECT_EQ(t.column("train_top1").numbers[0], t1.column("train_top1").numbers[0]);
    EXPECT_EQ(t.column("test_top1").numbers[0], t1.column("test_top1").numbers[0]);
    EXPECT_NEAR(t.column("test_loss").numbers[0], t1.column("test_loss").numbers[0], 1e-5);
    EXPECT_EQ(f.attr_int("/", "processes"), world);
  }
}

TEST(DataParallel, CheckpointOfTwoProcessesResumesOnThreeAndOnOne) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  const auto straight = launch(2, train_args(dir.path / "straight", 2, true), dir.path / "log_s");
  ASSERT_EQ(straight.status, std::vector<int>({0, 0})) << describe(straight);
  for (int resume_world : {3, 1}) {
    const auto out = dir.path / ("resumed_on_" + std::to_string(resume_world));
    const auto first = launch(2, with(train_args(out, 2, true), {"--stop-after-epochs", "1"}), dir.path / "log_a");
    ASSERT_EQ(first.status, std::vector<int>({0, 0})) << describe(first);
    EXPECT_EQ(read_checkpoint((out / "checkpoint.pth").string()).epoch, 1);
    const auto second = launch(resume_world, {"train", "--out", out.string(), "--resume", "--adam-eps", "1", "--quiet"},
                               dir.path / ("log_b" + std::to_string(resume_world)));
    for (int s : second.status) ASSERT_EQ(s, 0) << describe(second);
    EXPECT_EQ(read_checkpoint((out / "checkpoint.pth").string()).epoch, 2);
    EXPECT_LE(checkpoint_rel_diff(out / "checkpoint.pth", dir.path / "straight" / "checkpoint.pth"), 1e-5)
        << "resumed on " << resume_world;
    EXPECT_LE(checkpoint_rel_diff(out / "checkpoint.pth", dir.path / "straight" / "checkpoint.pth", "model_ema"), 1e-5);
    h5::File f((out / "metrics.h5").string(), h5::Mode::read);
    const auto t = ResultsTable::read_h5(f);
    ASSERT_EQ(t.rows(), 2);
    EXPECT_EQ(t.column("processes").numbers, std::vector<double>({2.0, static_cast<double>(resume_world)}));
  }
  // The same process count resumed: the same operations in the same order, so bit for bit.
  const auto out = dir.path / "resumed_on_2";
  ASSERT_EQ(launch(2, with(train_args(out, 2, true), {"--stop-after-epochs", "1"}), dir.path / "log_c").status,
            std::vector<int>({0, 0}));
  ASSERT_EQ(launch(2, {"train", "--out", out.string(), "--resume", "--adam-eps", "1", "--quiet"}, dir.path / "log_d").status,
            std::vector<int>({0, 0}));
  EXPECT_TRUE(checkpoints_equal(out / "checkpoint.pth", dir.path / "straight" / "checkpoint.pth"));
}

// A rank that dies: its sockets close, so the others' next collective fails at once (well inside the timeout).
TEST(DataParallel, ARankThatDiesStopsTheOthersWithOneLine) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  const auto l = launch(3, with(train_args(dir.path / "run", 1), {"--inject-fault", "exit:1:2", "--dist-timeout", "60"}),
                        dir.path / "log");
  EXPECT_EQ(l.status[1], 3) << describe(l);  // the injected exit
  for (int r : {0, 2}) {
    EXPECT_EQ(l.status[r], 1) << describe(l);
    EXPECT_EQ(count_error_lines(l.logs[r]), 1) << l.logs[r];
    // the first collective of step 3 that rank 1 misses: the stem's BatchNorm statistics in the forward
    EXPECT_NE(l.logs[r].find("rala: error: rank " + std::to_string(r) + "/3: BatchNorm statistics failed: another "
                             "process of the job exited"),
              std::string::npos)
        << l.logs[r];
  }
  EXPECT_LT(l.seconds, 60.0) << "the others should not wait for the timeout when a peer's connection closes";
  EXPECT_FALSE(fs::exists(dir.path / "run" / "checkpoint.pth"));
}

// A rank that stops answering (alive, sockets open): the others give up after --dist-timeout.
TEST(DataParallel, ARankThatHangsTimesTheOthersOut) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  const auto l = launch(2, with(train_args(dir.path / "run", 1), {"--inject-fault", "hang:1:1", "--dist-timeout", "5"}),
                        dir.path / "log", /*hang_rank=*/1);
  EXPECT_EQ(l.status[0], 1) << describe(l);
  EXPECT_EQ(count_error_lines(l.logs[0]), 1) << l.logs[0];
  EXPECT_NE(l.logs[0].find("rala: error: rank 0/2: BatchNorm statistics failed"), std::string::npos)
      << l.logs[0];
  EXPECT_NE(l.logs[0].find("--dist-timeout 5 s"), std::string::npos) << l.logs[0];
  EXPECT_GE(l.seconds, 5.0);
  EXPECT_LT(l.seconds, 60.0) << "rank 0 should have given up after about 5 s";
}

TEST(DataParallel, NonFiniteLossOnOneRankStopsEveryRankWithTheSameLine) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  const auto l = launch(
      2, with(train_args(dir.path / "run", 1), {"--inject-nonfinite-step", "1", "--inject-nonfinite-rank", "1"}),
      dir.path / "log");
  ASSERT_EQ(l.status, std::vector<int>({1, 1})) << describe(l);
  std::string lines[2];
  for (int r = 0; r < 2; ++r) {
    const auto p = l.logs[r].find("rala: error: ");
    ASSERT_NE(p, std::string::npos) << l.logs[r];
    lines[r] = l.logs[r].substr(p, l.logs[r].find('\n', p) - p);
    EXPECT_NE(lines[r].find("non-finite training loss"), std::string::npos) << lines[r];
    EXPECT_NE(lines[r].find("step 2 (lr"), std::string::npos) << lines[r];
    EXPECT_NE(lines[r].find("on rank 1;"), std::string::npos) << lines[r];
  }
  EXPECT_EQ(lines[0], lines[1]);
  EXPECT_FALSE(fs::exists(dir.path / "run" / "checkpoint.pth"));
}

TEST(DataParallel, WeightsThatDivergeAreCaught) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  const auto l = launch(2, with(train_args(dir.path / "run", 1), {"--inject-fault", "perturb:1:2"}), dir.path / "log");
  ASSERT_EQ(l.status, std::vector<int>({1, 1})) << describe(l);
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(l.logs[r].find("differ from rank 0's"), std::string::npos) << l.logs[r];
  EXPECT_FALSE(fs::exists(dir.path / "run" / "checkpoint.pth"));
}

// Errors found before training (here: an existing run on rank 0's --out) reach every rank as the same line.
TEST(DataParallel, SetupErrorsOfRankZeroReachEveryRank) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  fs::create_directories(dir.path / "run");
  { std::ofstream(dir.path / "run" / "checkpoint.pth") << "x"; }
  const auto l = launch(2, train_args(dir.path / "run", 1), dir.path / "log");
  ASSERT_EQ(l.status, std::vector<int>({1, 1})) << describe(l);
  EXPECT_NE(l.logs[0].find("rala: error: '"), std::string::npos) << l.logs[0];
  EXPECT_NE(l.logs[0].find("already holds a run"), std::string::npos) << l.logs[0];
  EXPECT_NE(l.logs[1].find("rala: error: rank 0: '"), std::string::npos) << l.logs[1];
  EXPECT_EQ(slurp(dir.path / "run" / "checkpoint.pth"), "x");
}

std::string torchrun_path() {
  for (const char* p : {"/usr/bin/torchrun", "/usr/local/bin/torchrun"})
    if (fs::exists(p)) return p;
  return "";
}

// torchrun (Debian's python3-torch) starts the C++ binary with --no_python; "-r 1 -t 1 --log_dir" works around
// Debian's torchrun on Python 3.11 failing without a redirect. Its static rendezvous hosts the TCPStore itself.
TEST(DataParallel, TorchrunLaunchesTheBinary) {
  REQUIRE_DISTRIBUTED();
  const std::string torchrun = torchrun_path();
  if (torchrun.empty()) GTEST_SKIP() << "torchrun not installed (Debian package python3-torch)";
  if (std::system("/usr/bin/python3 -c 'import torch.distributed.run' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch.distributed.run (Debian package python3-torch)";
  test::TempDir dir;
  const auto env_launch = launch(2, train_args(dir.path / "env", 1), dir.path / "log_env");
  ASSERT_EQ(env_launch.status, std::vector<int>({0, 0})) << describe(env_launch);
  for (const std::string mode : {"standalone", "static"}) {
    std::vector<std::string> argv = {torchrun, "--nproc_per_node=2", "--no_python", "-r", "1", "-t", "1",
                                     "--log_dir", (dir.path / ("tlogs_" + mode)).string()};
    if (mode == "standalone") {
      argv.push_back("--standalone");
    } else {
      argv.insert(argv.end(), {"--nnodes=1", "--master_addr=127.0.0.1", "--master_port=" + std::to_string(free_port())});
    }
    argv.insert(argv.end(), {RALA_BINARY, "--threads", "1"});
    const auto args = train_args(dir.path / mode, 1);
    argv.insert(argv.end(), args.begin(), args.end());
    double seconds = 0;
    const pid_t pid = spawn(argv, clean_environment({}), dir.path / (mode + ".log"));
    const auto status = wait_all({pid}, kRunTimeout, &seconds);
    ASSERT_EQ(status[0], 0) << slurp(dir.path / (mode + ".log"));
    // the same two processes, the same operations: bit for bit the run launched through the environment
    EXPECT_TRUE(checkpoints_equal(dir.path / mode / "checkpoint.pth", dir.path / "env" / "checkpoint.pth")) << mode;
  }
}

// Under a launcher, `rala ablate` trains each configuration data-parallel across the processes, and rank 0 alone
// analyses and tabulates.
TEST(DataParallel, AblateUnderALauncherTrainsEachRunAcrossTheProcesses) {
  REQUIRE_DISTRIBUTED();
  test::TempDir dir;
  const auto grid = dir.path / "grid.yaml";
  std::ofstream(grid) << "name: two_processes\ndescription: one run on two processes\nmodel: ravlt_micro\n"
                         "data: synthetic\nimage_size: 28\nseeds: [0]\n"
                         "train: {train_limit: 64, test_limit: 32, epochs: 1, batch_size: 32, warmup_epochs: 0}\n"
                         "analysis: {images: 8, probes: [kv_buffer], summary_stages: [0], time_inference: false}\n"
                         "configs:\n  - {name: RRSS, pattern: RRSS}\n";
  const auto l = launch(2, {"ablate", "--grid", grid.string(), "--out", (dir.path / "out").string(), "--quiet"},
                        dir.path / "log");
  ASSERT_EQ(l.status, std::vector<int>({0, 0})) << describe(l);
  h5::File m((dir.path / "out" / "runs" / "RRSS_seed0" / "metrics.h5").string(), h5::Mode::read);
  EXPECT_EQ(ResultsTable::read_h5(m).column("processes").numbers, std::vector<double>({2.0}));
  h5::File t((dir.path / "out" / "ablation.h5").string(), h5::Mode::read);
  EXPECT_EQ(ResultsTable::read_h5(t).rows(), 1);
  EXPECT_NE(l.logs[0].find("| RRSS |"), std::string::npos) << l.logs[0];  // the table, from rank 0 only
  EXPECT_EQ(l.logs[1].find("| RRSS |"), std::string::npos) << l.logs[1];
}

// ---------------------------------------------------------------------------------------------------------------
// The launcher environment

DistEnv env_of(const std::map<std::string, std::string>& vars) {
  return read_dist_env([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string env_error(const std::map<std::string, std::string>& vars) {
  try {
    env_of(vars);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(DistEnv, TorchrunSlurmOpenMpiAndPmiVariables) {
  auto e = env_of({});
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.launcher, "none");

  e = env_of({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
              {"MASTER_ADDR", "10.1.2.3"}, {"MASTER_PORT", "29411"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
              {"TORCHELASTIC_RESTART_COUNT", "2"}});
  EXPECT_EQ(e.launcher, "torchrun/env");
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
  EXPECT_EQ(e.master_addr, "10.1.2.3");
  EXPECT_EQ(e.master_port, 29411);
  EXPECT_TRUE(e.agent_store);
  EXPECT_EQ(e.restart_count, 2);

  // srun: the first host of the step's node list hosts the store; the port follows the job id
  e = env_of({{"SLURM_PROCID", "5"}, {"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_LOCALID", "1"},
              {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"}, {"SLURM_STEP_NODELIST", "gpu-[017-018,020]"},
              {"SLURM_JOB_ID", "123456"}, {"SLURM_STEP_NUM_NODES", "2"}});
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 4);
  EXPECT_EQ(e.master_addr, "gpu-017");
  EXPECT_EQ(e.master_port, 20000 + 123456 % 10000);
  EXPECT_EQ(env_of({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_STEP_NODELIST", "a1,b2"}}).master_addr,
            "a1");
  // the batch script itself (no job step): one process, even with SLURM_NTASKS set
  EXPECT_EQ(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_ID", "7"}}).world_size, 1);

  e = env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
              {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(e.launcher, "openmpi");
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.master_addr, "127.0.0.1");  // one node: loopback
  e = env_of({{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "4"},
              {"MASTER_ADDR", "h0"}});
  EXPECT_EQ(e.launcher, "pmi");
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.master_addr, "h0");
  // RANK/WORLD_SIZE win over the others (torchrun inside an srun allocation)
  EXPECT_EQ(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "3"}, {"SLURM_STEP_NUM_TASKS", "4"}}).launcher,
            "torchrun/env");
}

TEST(DistEnv, BadValuesAreOneLineNamingTheVariable) {
  auto msg = env_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
  EXPECT_NE(msg.find("RANK='2' must be an integer in [0, 1]"), std::string::npos) << msg;
  msg = env_error({{"RANK", "0"}, {"WORLD_SIZE", "two"}});
  EXPECT_NE(msg.find("WORLD_SIZE='two'"), std::string::npos) << msg;
  msg = env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}});
  EXPECT_NE(msg.find("MASTER_PORT='70000' must be an integer in [1, 65535]"), std::string::npos) << msg;
  msg = env_error({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_NE(msg.find("needs MASTER_ADDR"), std::string::npos) << msg;
  for (const auto& m : {msg}) EXPECT_EQ(m.find('\n'), std::string::npos);
}

TEST(DistEnv, RankShareIsEveryWorldthRow) {
  EXPECT_TRUE(torch::equal(rank_share(7, 1, 3), torch::tensor({1, 4}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(rank_share(7, 0, 3), torch::tensor({0, 3, 6}, torch::kInt64)));
  EXPECT_EQ(rank_share(2, 2, 3).numel(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// SyncBatchNorm: W threads, each with its rows of one batch, against LibTorch's BatchNorm2d on the whole batch

/// A process group of `world` threads in one process: all_sum adds every thread's tensor.
class ThreadGroup {
 public:
  explicit ThreadGroup(int world) : world_(world) {}
  void all_sum(int rank, torch::Tensor& t) {
    std::unique_lock<std::mutex> lock(m_);
    const int64_t round = round_;
    if (arrived_ == 0) sum_ = torch::zeros_like(t);
    sum_ += t;
    if (++arrived_ == world_) {
      result_ = sum_.clone();
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return round_ != round; });
    }
    t.copy_(result_);
    (void)rank;
  }

 private:
  int world_, arrived_ = 0;
  int64_t round_ = 0;
  torch::Tensor sum_, result_;
  std::mutex m_;
  std::condition_variable cv_;
};

class ThreadSync : public BatchNormSync {
 public:
  ThreadSync(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
  void all_sum(torch::Tensor& t) override { g_.all_sum(rank_, t); }

 private:
  ThreadGroup& g_;
  int rank_;
};

TEST(SyncBatchNorm, RanksOfOneBatchEqualBatchNormOnTheWholeBatch) {
  const int64_t B = 7, C = 3;
  torch::manual_seed(0);
  const auto x = (torch::randn({B, C, 5, 4}, torch::kFloat64) * 3 + 2).to(torch::kFloat32);  // mean ≠ 0
  const auto dy = torch::randn({B, C, 5, 4});
  // the reference: LibTorch's BatchNorm2d, two training steps (running statistics move)
  BatchNorm2d ref(C);
  { torch::NoGradGuard g; ref->weight.uniform_(0.5, 1.5); ref->bias.uniform_(-1, 1); }
  ref->train();
  torch::Tensor ref_dx, ref_y;
  for (int step = 0; step < 2; ++step) {
    auto xr = x.clone().requires_grad_(true);
    ref_y = ref->forward(xr);
    ref->zero_grad();
    (ref_y * dy).sum().backward();
    ref_dx = xr.grad();
  }
  for (int world : {2, 3, 8}) {  // 8 > B: one thread has no rows and runs a placeholder row
    ThreadGroup group(world);
    std::vector<BatchNorm2d> bns;
    std::vector<torch::Tensor> ys(world), dxs(world), dws(world), dbs(world);
    for (int r = 0; r < world; ++r) {
      bns.emplace_back(C);
      torch::NoGradGuard g;
      bns[r]->weight.copy_(ref->weight);
      bns[r]->bias.copy_(ref->bias);
    }
    auto body = [&](int r) {
      at::set_num_threads(1);
      auto sync = std::make_shared<ThreadSync>(group, r);
      bns[r]->set_sync(sync);
      bns[r]->train();
      const auto rows = rank_share(B, r, world);
      const bool placeholder = rows.numel() == 0;
      sync->contributes = !placeholder;
      for (int step = 0; step < 2; ++step) {
        auto xr = (placeholder ? x.narrow(0, 0, 1) : x.index_select(0, rows)).clone().requires_grad_(true);
        auto y = bns[r]->forward(xr);
        bns[r]->zero_grad();
        ((placeholder ? y * 0 : y * dy.index_select(0, rows))).sum().backward();
        if (!placeholder) {
          ys[r] = y.detach();
          dxs[r] = xr.grad();
        }
        dws[r] = bns[r]->weight.grad().clone();
        dbs[r] = bns[r]->bias.grad().clone();
      }
    };
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) threads.emplace_back(body, r);
    for (auto& t : threads) t.join();
    auto y = torch::empty_like(ref_y), dx = torch::empty_like(ref_dx);
    for (int r = 0; r < world; ++r) {
      const auto rows = rank_share(B, r, world);
      if (rows.numel() == 0) continue;
      y.index_copy_(0, rows, ys[r]);
      dx.index_copy_(0, rows, dxs[r]);
    }
    EXPECT_LE(test::max_rel_err(y, ref_y.detach()), 1e-6) << world;
    EXPECT_LE(test::max_rel_err(dx, ref_dx), 1e-5) << world;
    // γ/β gradients are per rank; their sum (what the gradient allreduce makes) is the whole batch's
    EXPECT_LE(test::max_rel_err(torch::stack(dws).sum(0), ref->weight.grad()), 1e-5) << world;
    EXPECT_LE(test::max_rel_err(torch::stack(dbs).sum(0), ref->bias.grad()), 1e-5) << world;
    for (int r = 0; r < world; ++r) {
      EXPECT_LE(test::max_rel_err(bns[r]->running_mean, ref->running_mean), 1e-6) << world;
      EXPECT_LE(test::max_rel_err(bns[r]->running_var, ref->running_var), 1e-6) << world;
      EXPECT_TRUE(torch::equal(bns[r]->num_batches_tracked, ref->num_batches_tracked));
      EXPECT_TRUE(torch::equal(bns[r]->running_mean, bns[0]->running_mean)) << "ranks must stay identical";
    }
  }
}

TEST(SyncBatchNorm, WithoutASyncItIsLibTorchsBatchNormBitForBit) {
  torch::manual_seed(1);
  const auto x = torch::randn({4, 3, 6, 6});
  BatchNorm2d ours(3);
  torch::nn::BatchNorm2d theirs(3);
  for (bool training : {true, false}) {
    ours->train(training);
    theirs->train(training);
    EXPECT_TRUE(torch::equal(ours->forward(x), theirs->forward(x)));
    EXPECT_TRUE(torch::equal(ours->running_mean, theirs->running_mean));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A rank's share of a global batch

void write_png(const fs::path& path, int w, int h, int seed) {
  std::vector<unsigned char> px(static_cast<size_t>(w * h * 3));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<unsigned char>((i * 37 + seed * 101) % 251);
  ASSERT_NE(stbi_write_png(path.c_str(), w, h, 3, px.data(), w * 3), 0);
}

void expect_shares_are_rows(const LabeledSplit& split, const torch::Tensor& indices, bool augment, int world) {
  auto gen_full = at::make_generator<at::CPUGeneratorImpl>(11);
  const auto [x, y] = split.batch(indices, augment, gen_full);
  const auto after_full = torch::rand({1}, gen_full);
  for (int r = 0; r < world; ++r) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    const auto [xr, yr] = split.batch(indices, augment, gen, r, world);
    const auto rows = rank_share(indices.size(0), r, world);
    EXPECT_TRUE(torch::equal(xr, x.index_select(0, rows))) << "rank " << r << "/" << world;
    EXPECT_TRUE(torch::equal(yr, y.index_select(0, rows)));
    EXPECT_TRUE(torch::equal(torch::rand({1}, gen), after_full)) << "the generator must advance as by the whole batch";
  }
}

TEST(RankShare, EachRankGetsItsRowsOfTheWholeAugmentedBatch) {
  LabeledSplit synthetic("synthetic", true, 28, 40);
  const auto idx = torch::randperm(40, at::make_generator<at::CPUGeneratorImpl>(5), torch::kInt64).narrow(0, 0, 13);
  for (int world : {2, 3, 16}) {
    expect_shares_are_rows(synthetic, idx, true, world);
    expect_shares_are_rows(synthetic, idx, false, world);
  }
  // image folders: random resized crops whose draws depend on each image's size (read from the header for the
  // images another rank decodes)
  test::TempDir dir;
  for (const char* split : {"train", "val"})
    for (int c = 0; c < 2; ++c) {
      fs::create_directories(dir.path / split / ("class" + std::to_string(c)));
      for (int i = 0; i < 4; ++i)
        write_png(dir.path / split / ("class" + std::to_string(c)) / ("im" + std::to_string(i) + ".png"),
                  17 + 5 * i + c, 23 + 3 * i, c * 10 + i);
    }
  LabeledSplit folder(dir.path.string(), true, 16, -1);
  const auto fidx = torch::tensor({5, 0, 7, 2, 3, 6, 1}, torch::kInt64);
  for (int world : {2, 3}) {
    expect_shares_are_rows(folder, fidx, true, world);
    expect_shares_are_rows(folder, fidx, false, world);
  }
}

TEST(RankShare, ImageDimsReadsTheHeaderOfWhatDecodeImageReturns) {
  test::TempDir dir;
  write_png(dir.path / "a.png", 19, 7, 1);
  const auto [h, w] = data::image_dims((dir.path / "a.png").string());
  const auto img = data::decode_image((dir.path / "a.png").string());
  EXPECT_EQ(h, img.size(1));
  EXPECT_EQ(w, img.size(2));
  EXPECT_THROW(data::image_dims((dir.path / "missing.png").string()), c10::Error);
}

}  // namespace
}  // namespace rala
