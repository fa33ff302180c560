#include "experiments/ablate.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>
#include <memory>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "analysis/h5_store.h"
#include "experiments/model_loading.h"
#include "experiments/rank.h"
#include "experiments/runtime.h"
#include "models/presets.h"

namespace rala {

namespace fs = std::filesystem;

std::vector<AblationConfig> standard_ablation_configs() {
  return {
      {"SSSS", "SSSS", {}},
      {"RRSS", "RRSS", {}},
      {"RRRR", "RRRR", {}},
      {"LLSS", "LLSS", {}},
      {"FFSS", "FFSS", {}},
      {"CCSS", "CCSS", {}},
      {"RRSS no_alpha", "RRSS", {"alpha=0"}},
      {"RRSS no_gate", "RRSS", {"gate=0"}},
      {"RRSS no_alpha no_gate", "RRSS", {"alpha=0", "gate=0"}},
      {"RRSS no_rope", "RRSS", {"rope=0"}},
      {"RRSS no_lepe", "RRSS", {"lepe=0"}},
  };
}

AblationPreset ablation_preset(const std::string& name) {
  AblationPreset p;
  p.name = name;
  p.train.model = "ravlt_micro";
  p.train.data = "fashion-mnist";
  p.train.image_size = 28;
  p.train.batch_size = 128;
  p.train.lr = 2e-3;
  p.train.weight_decay = 0.05;
  p.train.label_smoothing = 0.1;
  p.train.warmup_epochs = 1;
  p.train.clip_grad = 5.0;
  if (name == "quick") {
    p.configs = standard_ablation_configs();
    p.train.train_limit = 8192;
    p.train.test_limit = 2000;
    p.train.epochs = 4;
    p.train.warmup_epochs = 0.5;
    p.rank_images = 64;
    p.seeds = 1;
  } else if (name == "full") {
    p.configs = standard_ablation_configs();
    p.train.train_limit = 12288;
    p.train.test_limit = 5000;
    p.train.epochs = 4;
    p.train.warmup_epochs = 0.5;
    p.rank_images = 256;
    p.seeds = 3;
  } else if (name == "tiny") {
    p.configs = {{"RRSS", "RRSS", {}}, {"LLSS no_gate", "LLSS", {"gate=0"}}};
    p.train.train_limit = 256;
    p.train.test_limit = 64;
    p.train.epochs = 1;
    p.train.warmup_epochs = 0.5;
    p.rank_images = 8;
    p.seeds = 1;
  } else {
    TORCH_CHECK(false, "unknown ablation preset '", name, "' (expected quick, full or tiny)");
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s on %s, %s training images, %s test images, %lld epochs, %lld px, batch %lld",
                p.train.model.c_str(), p.train.data.c_str(),
                p.train.train_limit < 0 ? "all" : std::to_string(p.train.train_limit).c_str(),
                p.train.test_limit < 0 ? "all" : std::to_string(p.train.test_limit).c_str(),
                static_cast<long long>(p.train.epochs), static_cast<long long>(p.train.image_size),
                static_cast<long long>(p.train.batch_size));
  p.description = buf;
  return p;
}

std::pair<double, double> mean_std(const std::vector<double>& v) {
  if (v.empty()) return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  RunningStat st;
  for (double x : v) st.add(x);
  return {st.mean, st.std()};
}

namespace {

std::string slug(const std::string& name) {
  std::string s;
  for (char c : name) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}

/// Inference images/s on one thread (the setting the trainings use; small models are overhead-bound and one thread is
/// the least sensitive to other load): best of `iters` timed forwards of a fixed random batch after two warm-ups.
double inference_throughput(AnyModel& model, int64_t batch, int64_t size, int iters = 7) {
  torch::NoGradGuard no_grad;
  model.module()->eval();
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto x = torch::randn({batch, 3, size, size}, torch::TensorOptions().dtype(torch::kFloat32));
  for (int i = 0; i < 2; ++i) model.forward(x);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    model.forward(x);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  at::set_num_threads(threads);
  return static_cast<double>(batch) / best;
}

/// Mean over layers of stages 0–1 of one probe's per-layer mean (weighted by count) — the stages every configuration
/// except SSSS makes linear. NaN when no such layer records the probe (kv_buffer of softmax). Layers are named
/// "<stage>.<block>" (RecorderLayer::name).
double stage01_mean(const RankSummary& s, const std::string& probe, bool effective) {
  double sum = 0;
  int64_t count = 0;
  for (const auto& [layer, per_probe] : s) {
    const int64_t stage = std::stoll(layer.substr(0, layer.find('.')));
    if (stage > 1) continue;
    auto p = per_probe.find(probe);
    if (p == per_probe.end()) continue;
    const RunningStat& st = effective ? p->second.effective_rank : p->second.rank;
    sum += st.mean * static_cast<double>(st.count);
    count += st.count;
  }
  return count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}

const char* kAblationProbes[] = {"kv_buffer", "output", "output_gated"};

/// One training of the grid, run as a child process `rala --threads 1 train --config-json … --out RUN` with its output
/// in RUN/train.log. Small models train fastest on one thread each, several at once (intra-op threads on tiny tensors
/// cost more than they give, and oversubscribed cores make them far slower).
struct TrainJob {
  std::string name;
  TrainConfig config;
  pid_t pid = -1;
};

std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    // Progress redraws use '\r': keep the last segment.
    auto cr = line.find_last_of('\r');
    if (cr != std::string::npos) line = line.substr(cr + 1);
    if (!line.empty()) last = line;
  }
  return last;
}

pid_t spawn_training(const TrainJob& job) {
  static const std::string exe = fs::read_symlink("/proc/self/exe").string();
  const std::string log = (fs::path(job.config.out) / "train.log").string();
  fs::create_directories(job.config.out);
  std::vector<std::string> args = {exe, "--threads", "1", "train", "--config-json", job.config.to_json(),
                                   "--out", job.config.out, "--quiet"};
  if (job.config.resume) args.push_back("--resume");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  TORCH_CHECK(rc == 0, "cannot start '", exe, " train' for ", job.name, ": ", std::strerror(rc));
  return pid;
}

/// Runs the jobs, at most `parallel` at a time; throws naming the first failed job and its last log line.
void run_training_jobs(std::vector<TrainJob>& jobs, int64_t parallel, bool quiet) {
  size_t next = 0, done = 0, running = 0;
  std::string failure;
  const auto t0 = std::chrono::steady_clock::now();
  while (done < jobs.size()) {
    while (failure.empty() && running < static_cast<size_t>(parallel) && next < jobs.size()) {
      jobs[next].pid = spawn_training(jobs[next]);
      ++next;
      ++running;
    }
    if (running == 0) break;
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      TORCH_CHECK(false, "waiting for training processes failed: ", std::strerror(errno));
    }
    for (auto& job : jobs) {
      if (job.pid != pid) continue;
      job.pid = -1;
      --running;
      ++done;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      const std::string log = (fs::path(job.config.out) / "train.log").string();
      if (!ok && failure.empty()) failure = "training " + job.name + " failed: " + last_line(log) + " (log: " + log + ")";
      if (!quiet)
        std::fprintf(stderr, "[%zu/%zu] %s %s (%.0f s)\n", done, jobs.size(), job.name.c_str(),
                     ok ? "trained" : "FAILED",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  TORCH_CHECK(failure.empty(), failure);
}

}  // namespace

ResultsTable make_ablation_table() {
  ResultsTable t;
  t.add_column("config", ColumnKind::text, "", "configuration")
      .add_column("pattern", ColumnKind::text, "", "attention letter per stage")
      .add_column("attn_opts", ColumnKind::text, "", "attention options (key=value, applied to every attention layer)")
      .add_column("seeds", ColumnKind::integer, "", "seeds trained (0 .. seeds-1)")
      .add_column("epochs", ColumnKind::integer, "", "epochs per training")
      .add_column("params", ColumnKind::integer, "", "parameters")
      .add_column("gmacs", ColumnKind::number, "GMACs", "multiply-accumulates per image incl. attention matmuls")
      .add_column("top1_mean", ColumnKind::number, "%", "test top-1, mean over seeds")
      .add_column("top1_std", ColumnKind::number, "%", "test top-1, sample std over seeds (0 for one seed)");
  for (const char* probe : kAblationProbes) {
    t.add_column(std::string(probe) + "_rank", ColumnKind::number, "",
                 std::string("numerical rank of ") + probe +
                     " (numpy rule), mean over seeds, test images, heads and the layers of stages 0-1");
    t.add_column(std::string(probe) + "_effective_rank", ColumnKind::number, "",
                 std::string("effective rank of ") + probe + ", mean as above");
  }
  t.add_column("images_per_s", ColumnKind::number, "images/s", "inference throughput (fp32, batch 64, one thread, best of 7 batches)");
  return t;
}

ResultsTable run_ablation(const AblationPreset& preset, int64_t seeds, const std::string& out, bool quiet,
                          int64_t parallel) {
  TORCH_CHECK(seeds > 0, "--seeds must be > 0, got ", seeds);
  if (parallel <= 0) parallel = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  TORCH_CHECK(!out.empty(), "--out DIR is required");
  for (const auto& c : preset.configs) AnyModel(preset.train.model, c.pattern, c.settings);  // validate up front
  fs::create_directories(fs::path(out) / "runs");
  fs::create_directories(fs::path(out) / "rank");
  ResultsTable table = make_ablation_table();
  const std::string table_path = (fs::path(out) / "ablation.h5").string();
  const auto started = std::chrono::steady_clock::now();

  // Phase 1: every training of the grid, `parallel` child processes at a time.
  auto run_dir = [&](const AblationConfig& config, int64_t seed) {
    return (fs::path(out) / "runs" / (slug(config.name) + "_seed" + std::to_string(seed))).string();
  };
  std::vector<TrainJob> jobs;
  for (const auto& config : preset.configs)
    for (int64_t seed = 0; seed < seeds; ++seed) {
      TrainJob job;
      job.name = config.name + " seed " + std::to_string(seed);
      job.config = preset.train;
      job.config.pattern = config.pattern;
      job.config.settings = config.settings;
      job.config.seed = static_cast<uint64_t>(seed);
      job.config.out = run_dir(config, seed);
      job.config.resume = fs::exists(fs::path(job.config.out) / "checkpoint.pth");  // continue an interrupted grid
      jobs.push_back(job);
    }
  if (!quiet)
    std::cerr << "training " << jobs.size() << " models, " << parallel << " at a time (logs in runs/*/train.log)\n";
  run_training_jobs(jobs, parallel, quiet);

  // Phase 2: per configuration, rank analysis of the test images and inference throughput (all threads).
  for (const auto& config : preset.configs) {
    std::vector<double> top1, throughput;
    std::map<std::string, std::vector<double>> ranks;
    int64_t params = 0;
    double gmacs = 0;
    for (int64_t seed = 0; seed < seeds; ++seed) {
      const std::string run_name = slug(config.name) + "_seed" + std::to_string(seed);
      TrainResult r;
      r.checkpoint = (fs::path(run_dir(config, seed)) / "checkpoint.pth").string();
      {
        h5::File f((fs::path(run_dir(config, seed)) / "metrics.h5").string(), h5::Mode::read);
        const auto m = ResultsTable::read_h5(f);
        TORCH_CHECK(m.rows() == preset.train.epochs, "run ", run_dir(config, seed), " has ", m.rows(),
                    " epochs of metrics, expected ", preset.train.epochs);
        r.test_top1 = m.column("test_top1").numbers.back();
      }
      top1.push_back(r.test_top1);

      RankArgs ra;
      ra.model.model = preset.train.model;
      ra.model.checkpoint = r.checkpoint;
      ra.data = preset.train.data == "fashion-mnist" ? "fashion-mnist"
                : fs::is_directory(fs::path(preset.train.data) / "val")
                    ? (fs::path(preset.train.data) / "val").string()
                    : (fs::path(preset.train.data) / "test").string();
      ra.num_images = preset.rank_images;
      ra.batch_size = 32;
      ra.image_size = preset.train.image_size;
      ra.quiet = true;
      LoadedModel loaded;  // the trained model, loaded once for the rank analysis and the rest of the row
      const auto summary = run_rank(ra, "", (fs::path(out) / "rank" / (run_name + ".h5")).string(), &loaded);
      for (const char* probe : kAblationProbes) {
        ranks[std::string(probe) + "_rank"].push_back(stage01_mean(summary, probe, false));
        ranks[std::string(probe) + "_effective_rank"].push_back(stage01_mean(summary, probe, true));
      }

      const int64_t size = preset.train.image_size > 0 ? preset.train.image_size : loaded.model->default_image_size();
      params = loaded.model->parameters();
      gmacs = static_cast<double>(loaded.model->macs(size, size).with_matmuls) / 1e9;
      throughput.push_back(inference_throughput(*loaded.model, 64, size));
    }
    std::string opts;
    for (const auto& s : config.settings) opts += (opts.empty() ? "" : " ") + s;
    std::map<std::string, TableValue> row = {{"config", config.name},
                                             {"pattern", config.pattern},
                                             {"attn_opts", opts},
                                             {"seeds", seeds},
                                             {"epochs", preset.train.epochs},
                                             {"params", params},
                                             {"gmacs", gmacs}};
    auto [m, s] = mean_std(top1);
    row["top1_mean"] = m;
    row["top1_std"] = s;
    for (const auto& [column, values] : ranks) row[column] = mean_std(values).first;
    row["images_per_s"] = mean_std(throughput).first;
    table.add_row(row);
    write_table_files(table, table_path, [&](h5::File& f) {
      set_provenance(f);
      f.set_attr("/", "table_kind", "ablation");
      f.set_attr("/", "ablation_preset", preset.name);
      f.set_attr("/", "ablation_description", preset.description);
      f.set_attr("/", "model", preset.train.model);
      f.set_attr("/", "dataset", preset.train.data);
      f.set_attr("/", "train_config", preset.train.to_json());
      f.set_attr("/", "rank_images", preset.rank_images);
      f.set_attr("/", "dtype", "float32");
      f.set_attr("/", "elapsed_s",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    });
  }
  return table;
}

namespace {

std::string fmt(double v, int precision) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

}  // namespace

void print_ablation_table(std::ostream& out, const ResultsTable& t) {
  out << "| config | params | GMACs | top-1 (%) | kv_buffer rank / eff. | output rank / eff. | output_gated rank / eff. "
         "| images/s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (int64_t r = 0; r < t.rows(); ++r) {
    auto num = [&](const std::string& c) { return t.column(c).numbers[r]; };
    out << "| " << t.column("config").texts[r] << " | " << t.column("params").integers[r] << " | "
        << fmt(num("gmacs"), 4) << " | " << fmt(num("top1_mean"), 2) << " ± " << fmt(num("top1_std"), 2) << " | ";
    for (const char* probe : kAblationProbes)
      out << fmt(num(std::string(probe) + "_rank"), 2) << " / " << fmt(num(std::string(probe) + "_effective_rank"), 2)
          << " | ";
    out << fmt(num("images_per_s"), 0) << " |\n";
  }
}

void add_ablate_command(CLI::App& app) {
  struct Args {
    std::string preset = "quick";
    int64_t seeds = 0;
    int64_t jobs = 0;
    std::string out;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("ablate", "Train, rank-analyse and time a grid of attention configurations");
  cmd->add_option("--preset", a->preset, "quick (≤ 8 min on 2 cores) | full")->capture_default_str();
  cmd->add_option("--seeds", a->seeds, "Seeds per configuration (0: the preset's)");
  cmd->add_option("--jobs", a->jobs, "Trainings run at once, one thread each (0: one per core)");
  cmd->add_option("--out", a->out, "Output directory (runs/, rank/, ablation.h5, ablation.csv)")->required();
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  cmd->callback([a] {
    const auto preset = ablation_preset(a->preset);
    TORCH_CHECK(a->seeds >= 0, "--seeds must be >= 0 (0 = the preset's), got ", a->seeds);
    const int64_t seeds = a->seeds > 0 ? a->seeds : preset.seeds;
    std::cerr << "ablation '" << preset.name << "': " << preset.configs.size() << " configurations × " << seeds
              << " seed(s); " << preset.description << "\n";
    const auto t0 = std::chrono::steady_clock::now();
    TORCH_CHECK(a->jobs >= 0, "--jobs must be >= 0 (0 = one per core), got ", a->jobs);
    const auto table = run_ablation(preset, seeds, a->out, a->quiet, a->jobs);
    print_ablation_table(std::cout, table);
    std::cout << "ablation '" << preset.name << "' took "
              << fmt(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0) << " s; wrote "
              << (fs::path(a->out) / "ablation.h5").string() << " and ablation.csv\n";
  });
}

}  // namespace rala
