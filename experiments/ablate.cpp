#include "experiments/ablate.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>

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
    p.train.train_limit = 2048;
    p.train.test_limit = 1000;
    p.train.epochs = 2;
    p.train.warmup_epochs = 0.5;
    p.rank_images = 64;
    p.seeds = 1;
  } else if (name == "full") {
    p.configs = standard_ablation_configs();
    p.train.train_limit = -1;
    p.train.test_limit = -1;
    p.train.epochs = 5;
    p.train.ema_decay = 0.999;
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
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  if (v.size() < 2) return {mean, 0.0};
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, std::sqrt(ss / static_cast<double>(v.size() - 1))};
}

namespace {

std::string slug(const std::string& name) {
  std::string s;
  for (char c : name) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}

/// Inference images/s: median of `iters` timed forwards of a fixed random batch after two warm-ups.
double inference_throughput(AnyModel& model, int64_t batch, int64_t size, int iters = 5) {
  torch::NoGradGuard no_grad;
  model.module()->eval();
  auto x = torch::randn({batch, 3, size, size}, torch::TensorOptions().dtype(torch::kFloat32));
  for (int i = 0; i < 2; ++i) model.forward(x);
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    model.forward(x);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return static_cast<double>(batch) / times[times.size() / 2];
}

/// Mean over layers of stages 0–1 of one probe's per-layer mean (weighted by count) — the stages every configuration
/// except SSSS makes linear. NaN when no such layer records the probe (kv_buffer of softmax).
double stage01_mean(const RankSummary& s, const std::string& probe, bool effective) {
  double sum = 0;
  int64_t count = 0;
  for (const auto& [layer, per_probe] : s) {
    if (!(layer.rfind("0.", 0) == 0 || layer.rfind("1.", 0) == 0)) continue;
    auto p = per_probe.find(probe);
    if (p == per_probe.end()) continue;
    const RunningStat& st = effective ? p->second.effective_rank : p->second.rank;
    sum += st.mean * static_cast<double>(st.count);
    count += st.count;
  }
  return count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}

const char* kProbes[] = {"kv_buffer", "output", "output_gated"};

ResultsTable empty_ablation_table() {
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
  for (const char* probe : kProbes) {
    t.add_column(std::string(probe) + "_rank", ColumnKind::number, "",
                 std::string("numerical rank of ") + probe +
                     " (numpy rule), mean over seeds, test images, heads and the layers of stages 0-1");
    t.add_column(std::string(probe) + "_effective_rank", ColumnKind::number, "",
                 std::string("effective rank of ") + probe + ", mean as above");
  }
  t.add_column("images_per_s", ColumnKind::number, "images/s", "inference throughput (fp32, median of 5 batches)");
  return t;
}

}  // namespace

ResultsTable run_ablation(const AblationPreset& preset, int64_t seeds, const std::string& out, bool quiet) {
  TORCH_CHECK(seeds > 0, "--seeds must be > 0, got ", seeds);
  TORCH_CHECK(!out.empty(), "--out DIR is required");
  for (const auto& c : preset.configs) AnyModel(preset.train.model, c.pattern, c.settings);  // validate up front
  fs::create_directories(fs::path(out) / "runs");
  fs::create_directories(fs::path(out) / "rank");
  ResultsTable table = empty_ablation_table();
  const std::string table_path = (fs::path(out) / "ablation.h5").string();
  const auto started = std::chrono::steady_clock::now();

  for (const auto& config : preset.configs) {
    std::vector<double> top1, throughput;
    std::map<std::string, std::vector<double>> ranks;
    int64_t params = 0;
    double gmacs = 0;
    for (int64_t seed = 0; seed < seeds; ++seed) {
      const std::string run_name = slug(config.name) + "_seed" + std::to_string(seed);
      TrainConfig tc = preset.train;
      tc.pattern = config.pattern;
      tc.settings = config.settings;
      tc.seed = static_cast<uint64_t>(seed);
      tc.out = (fs::path(out) / "runs" / run_name).string();
      tc.quiet = quiet;
      tc.resume = fs::exists(fs::path(tc.out) / "checkpoint.pth");
      if (!quiet) std::cerr << "== " << config.name << " seed " << seed << (tc.resume ? " (resuming)" : "") << "\n";
      const TrainResult r = train(tc);
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
      const auto summary = run_rank(ra, "", (fs::path(out) / "rank" / (run_name + ".h5")).string());
      for (const char* probe : kProbes) {
        ranks[std::string(probe) + "_rank"].push_back(stage01_mean(summary, probe, false));
        ranks[std::string(probe) + "_effective_rank"].push_back(stage01_mean(summary, probe, true));
      }

      auto loaded = load_model(ra.model);
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
    for (const char* probe : kProbes)
      out << fmt(num(std::string(probe) + "_rank"), 2) << " / " << fmt(num(std::string(probe) + "_effective_rank"), 2)
          << " | ";
    out << fmt(num("images_per_s"), 0) << " |\n";
  }
}

void add_ablate_command(CLI::App& app) {
  struct Args {
    std::string preset = "quick";
    int64_t seeds = 0;
    std::string out;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("ablate", "Train, rank-analyse and time a grid of attention configurations");
  cmd->add_option("--preset", a->preset, "quick (≤ 8 min on 2 cores) | full")->capture_default_str();
  cmd->add_option("--seeds", a->seeds, "Seeds per configuration (0: the preset's)");
  cmd->add_option("--out", a->out, "Output directory (runs/, rank/, ablation.h5, ablation.csv)")->required();
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  cmd->callback([a] {
    const auto preset = ablation_preset(a->preset);
    TORCH_CHECK(a->seeds >= 0, "--seeds must be >= 0 (0 = the preset's), got ", a->seeds);
    const int64_t seeds = a->seeds > 0 ? a->seeds : preset.seeds;
    std::cerr << "ablation '" << preset.name << "': " << preset.configs.size() << " configurations × " << seeds
              << " seed(s); " << preset.description << "\n";
    const auto t0 = std::chrono::steady_clock::now();
    const auto table = run_ablation(preset, seeds, a->out, a->quiet);
    print_ablation_table(std::cout, table);
    std::cout << "ablation '" << preset.name << "' took "
              << fmt(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0) << " s; wrote "
              << (fs::path(a->out) / "ablation.h5").string() << " and ablation.csv\n";
  });
}

}  // namespace rala
