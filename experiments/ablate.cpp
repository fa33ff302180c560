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
#include "experiments/device.h"
#include "experiments/rank.h"
#include "experiments/train/distributed.h"
#include "experiments/runtime.h"
#include "models/checkpoint.h"
#include "models/presets.h"

#include <nlohmann/json.hpp>

#include <sstream>

namespace rala {

namespace fs = std::filesystem;

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
  const torch::Device device = model_device(model);
  auto x = torch::randn({batch, 3, size, size}, torch::TensorOptions().dtype(torch::kFloat32)).to(device);
  for (int i = 0; i < 2; ++i) model.forward(x);
  synchronize(device);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    model.forward(x);
    synchronize(device);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  at::set_num_threads(threads);
  return static_cast<double>(batch) / best;
}

/// Mean over the layers of `stages` of one probe's per-layer mean (weighted by count). NaN when no such layer records
/// the probe (kv_buffer of softmax). Layers are named "<stage>.<block>" (RecorderLayer::name).
double summary_mean(const RankSummary& s, const std::string& probe, const std::vector<int64_t>& stages, bool effective) {
  double sum = 0;
  int64_t count = 0;
  for (const auto& [layer, per_probe] : s) {
    const int64_t stage = std::stoll(layer.substr(0, layer.find('.')));
    if (std::find(stages.begin(), stages.end(), stage) == stages.end()) continue;
    auto p = per_probe.find(probe);
    if (p == per_probe.end()) continue;
    const RunningStat& st = effective ? p->second.effective_rank : p->second.rank;
    sum += st.mean * static_cast<double>(st.count);
    count += st.count;
  }
  return count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}

std::string join_ints(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s;
}

/// Per configuration name, the spec the grid in DIR was made with (DIR/grid.json), or nothing.
std::map<std::string, std::string> stored_specs(const std::string& out) {
  std::map<std::string, std::string> specs;
  std::ifstream in(fs::path(out) / "grid.json");
  if (!in) return specs;
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  TORCH_CHECK(!j.is_discarded() && j.is_object() && j.contains("configs") && j["configs"].is_object(), "'",
              (fs::path(out) / "grid.json").string(), "' is not the grid record rala ablate writes; remove it or use a new --out");
  for (auto it = j["configs"].begin(); it != j["configs"].end(); ++it)
    specs[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  return specs;
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  write_bytes_atomically(path.string(), std::vector<char>(text.begin(), text.end()));
}


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
                                   "--out", job.config.out, "--quiet", "--device", device_string(run_device())};
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

/// Several processes (a launcher's environment): each training runs data-parallel across all of them, one after
/// another, in this process (every rank runs the same list in the same order).
void run_training_jobs_distributed(std::vector<TrainJob>& jobs, bool quiet, bool main_rank) {
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < jobs.size(); ++i) {
    TrainConfig config = jobs[i].config;
    config.quiet = quiet || !main_rank;
    try {
      train(config);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "training ", jobs[i].name, " failed: ", error_line(e));
    }
    if (!quiet && main_rank)
      std::fprintf(stderr, "[%zu/%zu] %s trained (%.0f s)\n", i + 1, jobs.size(), jobs[i].name.c_str(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
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

ResultsTable make_ablation_table(const std::vector<std::string>& probes, const std::vector<int64_t>& summary_stages) {
  ResultsTable t;
  t.add_column("config", ColumnKind::text, "", "configuration")
      .add_column("pattern", ColumnKind::text, "", "attention variant per stage (letters or names)")
      .add_column("attn_opts", ColumnKind::text, "", "attention settings ([variant.]key=value)")
      .add_column("seeds", ColumnKind::integer, "", "seeds trained")
      .add_column("epochs", ColumnKind::integer, "", "epochs per training")
      .add_column("params", ColumnKind::integer, "", "parameters")
      .add_column("gmacs", ColumnKind::number, "GMACs", "multiply-accumulates per image incl. attention matmuls")
      .add_column("top1_mean", ColumnKind::number, "%", "test top-1, mean over seeds")
      .add_column("top1_std", ColumnKind::number, "%", "test top-1, sample std over seeds (0 for one seed)");
  const std::string stages = "the layers of stage" + std::string(summary_stages.size() > 1 ? "s " : " ") +
                             join_ints(summary_stages);
  for (const auto& probe : probes) {
    t.add_column(probe + "_rank", ColumnKind::number, "",
                 "numerical rank of " + probe + " (numpy rule), mean over seeds, test images, heads and " + stages);
    t.add_column(probe + "_effective_rank", ColumnKind::number, "", "effective rank of " + probe + ", mean as above");
  }
  t.add_column("images_per_s", ColumnKind::number, "images/s", "inference throughput (fp32, batch 64, one thread, best of 7 batches)");
  return t;
}

ResultsTable run_ablation(const AblationGrid& grid, const std::string& out, bool quiet, bool overwrite,
                          int64_t parallel) {
  TORCH_CHECK(!out.empty(), "--out DIR is required");
  TORCH_CHECK(!grid.seeds.empty(), "the grid has no seeds");
  if (parallel <= 0) parallel = grid.jobs;
  if (parallel <= 0) parallel = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  for (const auto& c : grid.configs) AnyModel(grid.train.model, c.pattern, c.settings);  // validate up front
  // Under a launcher (torchrun, srun, mpirun): the trainings run data-parallel across the processes; rank 0 alone
  // writes --out and runs the rank analyses and the table.
  Distributed* dist = nullptr;
  if (read_dist_env().world_size > 1) {
    DistOptions options;
    options.device = run_device();
    dist = Distributed::world(options);
  }
  const bool main_rank = dist == nullptr || dist->is_main();
  auto run_dir = [&](const AblationConfig& config, int64_t seed) {
    return fs::path(out) / "runs" / (slug(config.name) + "_seed" + std::to_string(seed));
  };
  auto rank_file = [&](const AblationConfig& config, int64_t seed) {
    return fs::path(out) / "rank" / (slug(config.name) + "_seed" + std::to_string(seed) + ".h5");
  };

  // The grid that made DIR (if any) must be this one, configuration by configuration.
  std::map<std::string, std::string> specs;
  for (size_t i = 0; i < grid.configs.size(); ++i) specs[grid.configs[i].name] = grid.config_spec(i);
  std::string prepare_error;
  if (main_rank) try {
  const auto stored = stored_specs(out);
  if (!stored.empty()) {
    std::vector<std::string> changed, added, removed;
    for (const auto& [name, spec] : specs) {
      auto it = stored.find(name);
      if (it == stored.end()) added.push_back(name);
      else if (it->second != spec) changed.push_back(name);
    }
    for (const auto& [name, spec] : stored)
      if (!specs.count(name)) removed.push_back(name);
    if (!changed.empty() || !added.empty() || !removed.empty()) {
      auto list = [](const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v) s += (s.empty() ? "'" : ", '") + x + "'";
        return s;
      };
      std::string diff;
      if (!changed.empty()) diff += "changed: " + list(changed);
      if (!added.empty()) diff += std::string(diff.empty() ? "" : "; ") + "added: " + list(added);
      if (!removed.empty()) diff += std::string(diff.empty() ? "" : "; ") + "removed: " + list(removed);
      TORCH_CHECK(overwrite, "'", out, "' was made by a different grid (", diff,
                  "); use --overwrite to retrain what differs, or another --out");
      for (const auto& c : grid.configs) {  // start the changed configurations again
        if (!std::count(changed.begin(), changed.end(), c.name)) continue;
        for (auto seed : grid.seeds) {
          fs::remove_all(run_dir(c, seed));
          fs::remove(rank_file(c, seed));
        }
      }
    }
  }
  fs::create_directories(fs::path(out) / "runs");
  fs::create_directories(fs::path(out) / "rank");
  {
    nlohmann::json record = {{"grid", grid.name}, {"source", grid.source}, {"configs", specs}};
    write_text_atomically(fs::path(out) / "grid.json", record.dump(2) + "\n");
    write_text_atomically(fs::path(out) / "grid.yaml", grid.text);
  }
  } catch (const std::exception& e) {
    if (dist == nullptr) throw;
    prepare_error = error_line(e);
  }
  if (dist != nullptr) dist->agree(prepare_error, "preparing the ablation");
  ResultsTable table = make_ablation_table(grid.analysis.probes, grid.analysis.summary_stages);
  const std::string table_path = (fs::path(out) / "ablation.h5").string();
  const auto started = std::chrono::steady_clock::now();

  // Phase 1: every training of the grid, `parallel` child processes at a time.
  std::vector<TrainJob> jobs;
  for (const auto& config : grid.configs)
    for (auto seed : grid.seeds) {
      TrainJob job;
      job.name = config.name + " seed " + std::to_string(seed);
      job.config = grid.train;
      job.config.pattern = config.pattern;
      job.config.settings = config.settings;
      job.config.seed = static_cast<uint64_t>(seed);
      job.config.out = run_dir(config, seed).string();
      job.config.resume = fs::exists(run_dir(config, seed) / "checkpoint.pth");  // continue an interrupted grid
      jobs.push_back(job);
    }
  if (dist != nullptr) {
    if (!quiet && main_rank)
      std::cerr << "training " << jobs.size() << " models one after another, each on " << dist->world_size()
                << " processes\n";
    run_training_jobs_distributed(jobs, quiet, main_rank);
    if (!main_rank) return table;  // rank 0 analyses the trained models and writes the table
  } else {
    if (!quiet)
      std::cerr << "training " << jobs.size() << " models, " << parallel << " at a time (logs in runs/*/train.log)\n";
    run_training_jobs(jobs, parallel, quiet);
  }

  // Phase 2: per configuration, rank analysis of the test images and inference throughput.
  std::string probe_list;
  for (const auto& p : grid.analysis.probes) probe_list += (probe_list.empty() ? "" : ",") + p;
  for (const auto& config : grid.configs) {
    std::vector<double> top1, throughput;
    std::map<std::string, std::vector<double>> ranks;
    int64_t params = 0;
    double gmacs = 0;
    for (auto seed : grid.seeds) {
      const auto dir = run_dir(config, seed);
      {
        h5::File f((dir / "metrics.h5").string(), h5::Mode::read);
        const auto m = ResultsTable::read_h5(f);
        TORCH_CHECK(m.rows() == grid.train.epochs, "run ", dir.string(), " has ", m.rows(),
                    " epochs of metrics, expected ", grid.train.epochs);
        top1.push_back(m.column("test_top1").numbers.back());
      }
      RankArgs ra;
      ra.model.model = grid.train.model;
      ra.model.checkpoint = (dir / "checkpoint.pth").string();
      ra.data = grid.train.data == "fashion-mnist" || grid.train.data == "synthetic" ? grid.train.data
                : fs::is_directory(fs::path(grid.train.data) / "val")
                    ? (fs::path(grid.train.data) / "val").string()
                    : (fs::path(grid.train.data) / "test").string();
      ra.num_images = grid.analysis.images;
      ra.batch_size = 32;
      ra.image_size = grid.train.image_size;
      ra.probes = probe_list;
      ra.quiet = true;
      LoadedModel loaded;  // the trained model, loaded once for the rank analysis and the rest of the row
      const auto summary = run_rank(ra, "", rank_file(config, seed).string(), &loaded);
      for (const auto& probe : grid.analysis.probes) {
        ranks[probe + "_rank"].push_back(summary_mean(summary, probe, grid.analysis.summary_stages, false));
        ranks[probe + "_effective_rank"].push_back(summary_mean(summary, probe, grid.analysis.summary_stages, true));
      }
      const int64_t size = grid.train.image_size > 0 ? grid.train.image_size : loaded.model->default_image_size();
      params = loaded.model->parameters();
      gmacs = static_cast<double>(loaded.model->macs(size, size).with_matmuls) / 1e9;
      throughput.push_back(grid.analysis.time_inference ? inference_throughput(*loaded.model, 64, size)
                                                        : std::numeric_limits<double>::quiet_NaN());
    }
    std::string opts;
    for (const auto& s : config.settings) opts += (opts.empty() ? "" : " ") + s;
    std::map<std::string, TableValue> row = {{"config", config.name},
                                             {"pattern", config.pattern},
                                             {"attn_opts", opts},
                                             {"seeds", static_cast<int64_t>(grid.seeds.size())},
                                             {"epochs", grid.train.epochs},
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
      f.set_attr("/", "ablation_preset", grid.name);
      f.set_attr("/", "ablation_grid", grid.source);
      f.set_attr("/", "ablation_description", grid.description);
      f.set_attr("/", "model", grid.train.model);
      f.set_attr("/", "dataset", grid.train.data);
      f.set_attr("/", "train_config", grid.train.to_json());
      f.set_attr("/", "rank_images", grid.analysis.images);
      f.set_attr("/", "summary_stages", grid.analysis.summary_stages);
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
  std::vector<std::string> probes;  // every <probe>_rank column with its effective-rank twin
  for (const auto& c : t.columns()) {
    const auto& n = c.name;
    if (n.size() > 5 && n.compare(n.size() - 5, 5, "_rank") == 0 && n.find("_effective_rank") == std::string::npos &&
        t.has_column(n.substr(0, n.size() - 5) + "_effective_rank"))
      probes.push_back(n.substr(0, n.size() - 5));
  }
  out << "| config | params | GMACs | top-1 (%) |";
  for (const auto& p : probes) out << " " << p << " rank / eff. |";
  out << " images/s |\n|---|---:|---:|---:|";
  for (size_t i = 0; i < probes.size(); ++i) out << "---:|";
  out << "---:|\n";
  for (int64_t r = 0; r < t.rows(); ++r) {
    auto num = [&](const std::string& c) { return t.column(c).numbers[r]; };
    out << "| " << t.column("config").texts[r] << " | " << t.column("params").integers[r] << " | "
        << fmt(num("gmacs"), 4) << " | " << fmt(num("top1_mean"), 2) << " ± " << fmt(num("top1_std"), 2) << " | ";
    for (const auto& probe : probes)
      out << fmt(num(probe + "_rank"), 2) << " / " << fmt(num(probe + "_effective_rank"), 2) << " | ";
    out << fmt(num("images_per_s"), 0) << " |\n";
  }
}

void add_ablate_command(CLI::App& app) {
  struct Args {
    std::string preset, grid, out;
    int64_t seeds = 0;
    int64_t jobs = 0;
    bool quiet = false, dry_run = false, overwrite = false, print_grid = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("ablate", "Train, rank-analyse and time a grid of attention configurations");
  std::string presets;
  for (const auto& n : grid_preset_names()) presets += (presets.empty() ? "" : " | ") + n;
  auto* grid_opt = cmd->add_option("--grid", a->grid, "Grid file (YAML; see experiments/grids/*.yaml)");
  cmd->add_option("--preset", a->preset, "A shipped grid: " + presets + " (default quick)")->excludes(grid_opt);
  cmd->add_option("--seeds", a->seeds, "Seeds 0..N-1 per configuration (0: the grid's)");
  cmd->add_option("--jobs", a->jobs, "Trainings run at once, one thread each (0: the grid's, else one per core)");
  cmd->add_option("--out", a->out, "Output directory (runs/, rank/, ablation.h5, ablation.csv, grid.json)");
  cmd->add_flag("--dry-run", a->dry_run, "Print the expanded list of runs and exit");
  cmd->add_flag("--print-grid", a->print_grid, "Print the grid file (e.g. a preset, to copy and edit) and exit");
  cmd->add_flag("--overwrite", a->overwrite, "Under an --out made by a different grid: retrain what differs");
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  cmd->callback([a] {
    const std::string preset = a->preset.empty() ? "quick" : a->preset;
    if (a->print_grid) {
      std::cout << (a->grid.empty() ? grid_preset_text(preset) : load_grid(a->grid).text);
      return;
    }
    auto grid = a->grid.empty() ? grid_preset(preset) : load_grid(a->grid);
    TORCH_CHECK(a->seeds >= 0, "--seeds must be >= 0 (0 = the grid's), got ", a->seeds);
    if (a->seeds > 0) {
      grid.seeds.clear();
      for (int64_t i = 0; i < a->seeds; ++i) grid.seeds.push_back(i);
    }
    TORCH_CHECK(a->jobs >= 0, "--jobs must be >= 0 (0 = the grid's, else one per core), got ", a->jobs);
    if (!a->quiet || a->dry_run)
      std::cerr << "ablation '" << grid.name << "': " << grid.configs.size() << " configurations × "
                << grid.seeds.size() << " seed(s); " << grid.description << "\n";
    if (a->dry_run) {
      for (const auto& line : grid.runs()) std::cout << line << "\n";
      std::cout << grid.runs().size() << " runs\n";
      return;
    }
    TORCH_CHECK(!a->out.empty(), "--out DIR is required (or --dry-run)");
    const auto t0 = std::chrono::steady_clock::now();
    const auto table = run_ablation(grid, a->out, a->quiet, a->overwrite, a->jobs);
    if (Distributed* dist = Distributed::world(); dist != nullptr && !dist->is_main()) return;  // rank 0 reports
    print_ablation_table(std::cout, table);
    std::cout << "ablation '" << grid.name << "' took "
              << fmt(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0) << " s; wrote "
              << (fs::path(a->out) / "ablation.h5").string() << " and ablation.csv\n";
  });
}

}  // namespace rala
