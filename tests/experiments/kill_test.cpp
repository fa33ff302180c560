// Interrupted work (issue 17): `kill -9` of `rala rank`, `rala train`, `rala ablate` and `rala report` at random
// points. After every kill no file at a final path is partial (each is complete: it reads back whole, and where the
// command is deterministic it equals the uninterrupted run's file); `rala train --resume` and a re-run `rala ablate`
// then end with what an uninterrupted run gives (the trained weights and the loss / accuracy columns bit-identical, as
// Train.InterruptedAndResumedRunEndsBitIdentical proves in process).
//
// The whole process group is killed (the ablate parent and the `rala train` children it runs): what a crash, an OOM
// kill of the session or a power cut leaves. Kill points are drawn uniformly over the uninterrupted run's duration
// from a fixed seed (RALA_KILL_SEED overrides it; the seed is printed). Bounded: synthetic data, the micro model,
// three kills per command; about a minute in the Release build.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kKills = 3;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint32_t kill_seed() {
  const char* s = std::getenv("RALA_KILL_SEED");
  return s && *s ? static_cast<uint32_t>(std::strtoul(s, nullptr, 10)) : 17u;
}

/// `args` run as `rala ARGS` in a process group of its own, output to `log`. Killed with SIGKILL (the whole group)
/// after `kill_after` unless it ends first. Returns true when it was killed, false when it ended (status in *status).
bool run_rala(const std::string& args, const fs::path& log, double kill_after_s, int* status = nullptr) {
  // Built before fork(): the child of a multi-threaded process may only make async-signal-safe calls (no malloc).
  const std::string cmd = "exec " + std::string(RALA_BINARY) + " " + args + " >'" + log.string() + "' 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  EXPECT_GT(pid, 0);
  ::setpgid(pid, pid);  // also here: no race with the child's own call
  const auto deadline = Clock::now() + std::chrono::duration<double>(kill_after_s);
  int st = 0;
  while (Clock::now() < deadline) {
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      if (status) *status = st;
      ::kill(-pid, SIGKILL);  // anything the command left running in its group
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(-pid, SIGKILL);
  ::waitpid(pid, &st, 0);
  // Children of the group (ablate's `rala train`) are re-parented; wait until the group is gone.
  for (int i = 0; i < 2000 && ::kill(-pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return true;
}

/// Runs `rala ARGS` to completion; returns its wall time in seconds.
double run_to_end(const std::string& args, const fs::path& log) {
  const auto t0 = Clock::now();
  int status = -1;
  const bool killed = run_rala(args, log, 3600, &status);
  EXPECT_FALSE(killed);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rala " << args << "\n" << read_file(log);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Every file below `dir`, relative paths, skipping the ".partial" files writers leave when killed (not final paths)
/// and logs.
std::vector<fs::path> final_files(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    // Logs (train.log) are streams appended as the run goes, not results written once: not final files.
    if (e.is_regular_file() && e.path().extension() != ".partial" && e.path().extension() != ".log")
      out.push_back(fs::relative(e.path(), dir));
  std::sort(out.begin(), out.end());
  return out;
}

/// Reads every dataset of an HDF5 file (an incomplete file fails to open or to read).
void read_every_dataset(const h5::File& f, const std::string& group, std::vector<std::string>* paths) {
  for (const auto& name : f.list(group)) {
    const std::string p = (group == "/" ? "/" : group + "/") + name;
    if (f.is_group(p)) {
      read_every_dataset(f, p, paths);
    } else if (f.is_dataset(p)) {
      paths->push_back(p);
      const auto shape = f.shape(p);
      // string datasets read through read_strings, numbers through read
      try {
        f.read(p);
      } catch (const std::exception&) {
        f.read_strings(p);
      }
      (void)shape;
    }
  }
}

/// The checks for a file at a final path: it is whole. .h5: opens and every dataset reads; .pth: read_checkpoint
/// reads it; .csv: ends with a line break and every line has the header's number of fields; anything else (figures,
/// pages, tables, scripts, grid records): non-empty.
void expect_whole(const fs::path& file, const std::string& context) {
  SCOPED_TRACE(context + ": " + file.string());
  const auto ext = file.extension().string();
  if (ext == ".h5") {
    try {
      h5::File f(file.string(), h5::Mode::read);
      std::vector<std::string> paths;
      read_every_dataset(f, "/", &paths);
      EXPECT_FALSE(paths.empty()) << "no datasets";
    } catch (const std::exception& e) {
      ADD_FAILURE() << "unreadable: " << e.what();
    }
  } else if (ext == ".pth") {
    try {
      const auto ck = read_checkpoint(file.string());
      EXPECT_FALSE(ck.state.empty());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "unreadable: " << e.what();
    }
  } else if (ext == ".csv") {
    const std::string text = read_file(file);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    std::istringstream lines(text);
    std::string line;
    std::getline(lines, line);
    const auto fields = std::count(line.begin(), line.end(), ',');
    while (std::getline(lines, line)) EXPECT_EQ(std::count(line.begin(), line.end(), ','), fields) << line;
  } else {
    EXPECT_GT(fs::file_size(file), 0u);
  }
}

/// After a kill: every final file below `dir` is whole; with `reference`, a file that the uninterrupted run also
/// wrote, once and deterministically (listed in `same_as_reference` by extension), is byte-identical to it.
void expect_no_partial_file(const fs::path& dir, const std::string& context, const fs::path& reference = {},
                            const std::vector<std::string>& same_as_reference = {}) {
  for (const auto& rel : final_files(dir)) {
    expect_whole(dir / rel, context);
    if (reference.empty()) continue;
    const auto ext = rel.extension().string();
    if (std::find(same_as_reference.begin(), same_as_reference.end(), ext) == same_as_reference.end()) continue;
    ASSERT_TRUE(fs::exists(reference / rel)) << context << ": " << rel << " is not in the uninterrupted run";
    EXPECT_EQ(read_file(dir / rel), read_file(reference / rel)) << context << ": " << rel << " differs";
  }
}

/// The weights of two checkpoints are bit-identical (the EMA weights too where the run keeps them).
void expect_same_weights(const fs::path& a, const fs::path& b, bool ema) {
  for (const std::string key : {"model", "model_ema"}) {
    if (key == "model_ema" && !ema) continue;
    const auto ca = read_checkpoint(a.string(), key).state, cb = read_checkpoint(b.string(), key).state;
    ASSERT_EQ(ca.size(), cb.size());
    for (const auto& [k, v] : ca) EXPECT_TRUE(torch::equal(v, cb.at(k))) << key << " " << k;
  }
}

/// The deterministic columns of two results tables are equal (timings are not).
void expect_same_table(const fs::path& a, const fs::path& b, const std::vector<std::string>& columns) {
  h5::File fa(a.string(), h5::Mode::read), fb(b.string(), h5::Mode::read);
  const auto ta = ResultsTable::read_h5(fa), tb = ResultsTable::read_h5(fb);
  ASSERT_EQ(ta.rows(), tb.rows());
  for (const auto& c : columns) {
    SCOPED_TRACE(a.string() + " column " + c);
    const auto &ca = ta.column(c), &cb = tb.column(c);
    ASSERT_EQ(ca.numbers.size(), cb.numbers.size());
    for (size_t r = 0; r < ca.numbers.size(); ++r)  // NaN (e.g. an unmeasured timing) equals NaN here
      EXPECT_TRUE(ca.numbers[r] == cb.numbers[r] || (std::isnan(ca.numbers[r]) && std::isnan(cb.numbers[r])))
          << "row " << r << ": " << ca.numbers[r] << " vs " << cb.numbers[r];
    EXPECT_EQ(ca.integers, cb.integers);
    EXPECT_EQ(ca.texts, cb.texts);
  }
}

class KillNine : public ::testing::Test {
 protected:
  void SetUp() override {
    std::printf("kill points from seed %u (RALA_KILL_SEED)\n", seed_);
  }
  /// A kill point within an uninterrupted run of `seconds`.
  double kill_point(double seconds) { return std::uniform_real_distribution<double>(0.02, 0.98)(rng_) * seconds; }

  test::TempDir tmp_{"rala_kill"};
  uint32_t seed_ = kill_seed();
  std::mt19937 rng_{seed_};
};

const std::string kTrain =
    "train --model ravlt_micro --attn-pattern RRSS --data synthetic --image-size 28 --train-limit 64 --test-limit 32 "
    "--epochs 3 --batch-size 32 --warmup-epochs 1 --drop-path 0.1 --ema-decay 0.9 --quiet --out ";

TEST_F(KillNine, TrainResumesToTheUninterruptedResult) {
  const fs::path ref = tmp_.path / "ref", run = tmp_.path / "run", log = tmp_.path / "log";
  const double seconds = run_to_end(kTrain + ref.string(), log);
  for (int k = 0; k < kKills; ++k) {
    const bool resume = fs::exists(run / "checkpoint.pth");
    const double at = kill_point(seconds);
    run_rala(kTrain + run.string() + (resume ? " --resume" : ""), log, at);
    expect_no_partial_file(run, "train kill " + std::to_string(k) + " at " + std::to_string(at) + " s");
  }
  // Resume from wherever the kills left it (or start, if no checkpoint was written yet).
  run_to_end(kTrain + run.string() + (fs::exists(run / "checkpoint.pth") ? " --resume" : ""), log);
  expect_same_weights(ref / "checkpoint.pth", run / "checkpoint.pth", /*ema=*/true);
  expect_same_table(ref / "metrics.h5", run / "metrics.h5", {"epoch", "train_loss", "test_top1"});
}

const std::string kGrid = R"(name: kill-synthetic
model: ravlt_micro
data: synthetic
image_size: 28
train: {train_limit: 64, test_limit: 32, epochs: 2, batch_size: 32, warmup_epochs: 0}
analysis: {probes: [kv_buffer, output], images: 4, summary_stages: [0, 1], time_inference: false}
configs:
  - {name: a, pattern: RRSS}
  - {name: b, pattern: LLSS}
  - {name: c, pattern: RRRR}
)";

// (Once disabled: the test process segfaulted after the kills. The cause was this file's own read of a table through a
// dangling temporary, since fixed; the test has passed in every run since.)
TEST_F(KillNine, AblateReRunEndsWithTheUninterruptedTable) {
  const fs::path grid = tmp_.path / "grid.yaml", ref = tmp_.path / "ref", run = tmp_.path / "run",
                 log = tmp_.path / "log";
  std::ofstream(grid) << kGrid;
  const std::string cmd = "ablate --quiet --jobs 1 --grid " + grid.string() + " --out ";
  const double seconds = run_to_end(cmd + ref.string(), log);
  for (int k = 0; k < kKills; ++k) {
    const double at = kill_point(seconds);
    run_rala(cmd + run.string(), log, at);
    expect_no_partial_file(run, "ablate kill " + std::to_string(k) + " at " + std::to_string(at) + " s");
  }
  run_to_end(cmd + run.string(), log);
  for (const char* r : {"a_seed0", "b_seed0", "c_seed0"})
    expect_same_weights(ref / "runs" / r / "checkpoint.pth", run / "runs" / r / "checkpoint.pth", /*ema=*/false);
  h5::File f((ref / "ablation.h5").string(), h5::Mode::read);
  std::vector<std::string> columns;
  const ResultsTable table = ResultsTable::read_h5(f);  // kept alive: columns() refers into it
  for (const auto& c : table.columns())
    if (c.name.find("per_s") == std::string::npos && c.name.find("seconds") == std::string::npos)
      columns.push_back(c.name);
  expect_same_table(ref / "ablation.h5", run / "ablation.h5", columns);
}

TEST_F(KillNine, RankAndReportLeaveNoPartialFile) {
  const fs::path log = tmp_.path / "log", ref_rank = tmp_.path / "ref_rank", ref_report = tmp_.path / "ref_report";
  const std::string rank = "rank --model ravlt_micro --quiet --batch-size 2 --data synthetic --num-images 4 "
                           "--attn-pattern RRSS --attn-pattern LLSS --attn-pattern RRRR --out ";
  const double rank_s = run_to_end(rank + ref_rank.string(), log);
  for (int k = 0; k < kKills; ++k) {
    const fs::path dir = tmp_.path / ("rank" + std::to_string(k));
    const double at = kill_point(rank_s);
    run_rala(rank + dir.string(), log, at);
    expect_no_partial_file(dir, "rank kill " + std::to_string(k) + " at " + std::to_string(at) + " s");
  }
  const std::string inputs = (ref_rank / "ravlt_micro_RRSS.h5").string() + " " +
                             (ref_rank / "ravlt_micro_LLSS.h5").string() + " " +
                             (ref_rank / "ravlt_micro_RRRR.h5").string();
  const std::string report = "report " + inputs + " --out ";
  const double report_s = run_to_end(report + ref_report.string(), log);
  for (int k = 0; k < kKills; ++k) {
    const fs::path dir = tmp_.path / ("report" + std::to_string(k));
    const double at = kill_point(report_s);
    run_rala(report + dir.string(), log, at);
    // Figure data, scripts and tables are deterministic: present means identical to the uninterrupted run's
    // (report.md/.html are not: they record when and by which command line, with its --out, they were made).
    expect_no_partial_file(dir, "report kill " + std::to_string(k) + " at " + std::to_string(at) + " s", ref_report,
                           {".dat", ".gp", ".tex", ".csv", ".svg"});
  }
}

}  // namespace
}  // namespace rala
