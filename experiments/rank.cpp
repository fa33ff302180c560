#include "experiments/rank.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "analysis/h5_store.h"
#include "attention_variants/registry.h"
#include "experiments/data/image_source.h"
#include "experiments/device.h"
#include "experiments/model_loading.h"
#include "experiments/progress.h"
#include "experiments/runtime.h"

namespace rala {

namespace {

namespace fs = std::filesystem;

std::optional<double> parse_tolerance(const std::string& t) {
  if (t == "numpy") return std::nullopt;
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(used == t.size() && v > 0 && v < 1, "--tolerance must be 'numpy' or a relative tolerance in (0, 1), got '",
              t, "'");
  return v;
}

/// "<out>/<preset>_<pattern>[_<settings>].h5", or "….shard-K-of-N.h5" for a shard.
std::string results_path(const RankArgs& a, const std::string& preset, const std::string& pattern) {
  std::string name = preset + "_" + pattern;
  for (const auto& s : a.model.settings) {
    std::string clean;
    for (char c : s) clean += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
    name += "_" + clean;
  }
  const ShardSpec shard = parse_shard(a.shard);
  if (shard.sharded()) name += ".shard-" + std::to_string(shard.index) + "-of-" + std::to_string(shard.count);
  return (fs::path(a.out) / (name + ".h5")).string();
}

}  // namespace

ShardSpec parse_shard(const std::string& spec) {
  ShardSpec s;
  if (spec.empty()) return s;
  const auto slash = spec.find('/');
  size_t used_k = 0, used_n = 0;
  long long k = -1, n = -1;
  try {
    if (slash != std::string::npos) {
      k = std::stoll(spec.substr(0, slash), &used_k);
      n = std::stoll(spec.substr(slash + 1), &used_n);
    }
  } catch (const std::exception&) {
    used_k = used_n = 0;
  }
  TORCH_CHECK(slash != std::string::npos && used_k == slash && used_n == spec.size() - slash - 1 && n >= 1 && k >= 0 &&
                  k < n && spec[0] != '+' && spec[slash + 1] != '+',
              "--shard must be K/N with 0 <= K < N (K 0-based, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT for "
              "--array=0-(N-1)), got '", spec, "'");
  s.index = k;
  s.count = n;
  return s;
}

std::pair<int64_t, int64_t> shard_range(const ShardSpec& s, int64_t total, int64_t batch_size) {
  const int64_t batches = (total + batch_size - 1) / batch_size;
  // Every shard of the job fails alike when there are more shards than batches (not only the empty ones).
  TORCH_CHECK(s.count <= batches, "--shard ", s.index, "/", s.count, ": ", total, " images in batches of ", batch_size, " are ",
              batches, " batch", batches == 1 ? "" : "es", ", too few for ", s.count, " shards (use at most ", batches,
              ", or a smaller --batch-size)");
  const int64_t b0 = batches * s.index / s.count, b1 = batches * (s.index + 1) / s.count;
  return {b0 * batch_size, std::min(b1 * batch_size, total)};
}

RankSummary run_rank(const RankArgs& a, const std::string& pattern, const std::string& path, LoadedModel* analysed) {
  ModelFlags flags = a.model;
  if (!pattern.empty()) flags.pattern = pattern;
  auto loaded = load_model(flags);
  AnyModel& model = *loaded.model;
  const torch::Device device = run_device();
  model.module()->to(device);  // weights, buffers (RoPE angles) and so every table built from them
  const int64_t size = a.image_size > 0 ? a.image_size : model.default_image_size();
  data::ImageSource source(a.data, size, a.num_images, a.model.seed);
  const ShardSpec shard = parse_shard(a.shard);
  const int64_t total_images = source.total();
  std::pair<int64_t, int64_t> range{0, total_images};
  if (shard.sharded()) {
    range = shard_range(shard, total_images, a.batch_size);
    source.restrict_to(range.first, range.second, a.batch_size);
  }

  std::vector<RecorderLayer> layers;
  for (const auto& l : model.attention_layers())
    layers.push_back({l.name(), l.stage, l.block, variant_info(l.variant).name, l.heads, l.head_dim, l.settings});
  auto options = RecorderOptions()
                     .relative_tolerance(parse_tolerance(a.tolerance))
                     .attention_top_k(a.attention_top_k)
                     .spectra(spectra_method_from_name(a.spectra));
  parse_probe_list(a.probes, options);

  h5::AtomicPath target(path);  // an error before commit() leaves nothing at `path`
  std::map<std::string, std::map<std::string, ProbeSummary>> summary;
  {
    h5::File file(target.partial(), h5::Mode::truncate);
    ProbeRecorder recorder(layers, options, &file);
    model.set_probe_sinks([&](int64_t s, int64_t b) { return recorder.sink(s, b); });
    set_provenance(file);
    file.set_attr("/", "model", model.preset());
    file.set_attr("/", "attn_pattern", model.pattern());
    std::string settings;
    for (const auto& s : model.settings()) settings += (settings.empty() ? "" : " ") + s;
    file.set_attr("/", "attn_settings", settings);
    file.set_attr("/", "image_size", std::vector<int64_t>{size, size});
    file.set_attr("/", "weights", flags.weights_description());
    file.set_attr("/", "dataset", source.description());
    file.set_attr("/", "dtype", "float32");
    file.set_attr("/", "batch_size", a.batch_size);
    file.set_attr("/", "total_images", total_images);
    std::string label = "rank " + model.preset() + " " + model.pattern();
    if (shard.sharded()) {
      file.set_attr("/", "shard_index", shard.index);
      file.set_attr("/", "shard_count", shard.count);
      file.set_attr("/", "image_offset", range.first);
      file.set_attr("/", "image_count", range.second - range.first);
      label += " shard " + std::to_string(shard.index) + "/" + std::to_string(shard.count) + " (images " +
               std::to_string(range.first) + "-" + std::to_string(range.second - 1) + " of " +
               std::to_string(total_images) + ")";
    }

    std::vector<std::string> names;
    std::vector<int64_t> labels;
    Progress progress(label, source.size(), "images", a.quiet);
    torch::NoGradGuard no_grad;
    while (auto batch = source.next(a.batch_size)) {
      model.forward(batch->images.to(device));
      recorder.flush_batch(batch->images.size(0));
      names.insert(names.end(), batch->names.begin(), batch->names.end());
      labels.insert(labels.end(), batch->labels.begin(), batch->labels.end());
      progress.update(static_cast<int64_t>(names.size()));
    }
    progress.finish();
    model.set_probe_sinks(nullptr);
    recorder.finish();  // the rows still buffered (errors surface here, before anything is committed)
    TORCH_CHECK(!names.empty(), "no images were read from --data ", a.data);
    file.write_strings("/images/names", names);
    file.write("/images/labels", torch::tensor(labels, torch::kInt64));
    file.set_attr("/", "num_images", static_cast<int64_t>(names.size()));
    file.set_attr("/", "tolerance_rule", recorder.tolerance_rule());
    file.set_attr("/", "protocol", a.protocol);
    summary = recorder.summary();
    if (!a.quiet)
      std::fprintf(stderr, "%s: %zu images, %.1f images/s -> %s\n", label.c_str(), names.size(), progress.rate(),
                   path.c_str());
  }
  target.commit();
  if (analysed != nullptr) *analysed = std::move(loaded);
  return summary;
}

static std::string cell(const RunningStat& s) {
  if (s.count == 0) return "-";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f ± %.1f", s.mean, s.std());
  return buf;
}

void print_rank_table(std::ostream& out, const std::vector<std::string>& run_names,
                      const std::vector<std::map<std::string, std::map<std::string, ProbeSummary>>>& summaries) {
  std::set<std::string> probes;
  std::vector<std::string> layers;
  for (const auto& s : summaries)
    for (const auto& [layer, per_probe] : s) {
      if (std::find(layers.begin(), layers.end(), layer) == layers.end()) layers.push_back(layer);
      for (const auto& [probe, _] : per_probe) probes.insert(probe);
    }
  for (const auto& probe : probes) {
    out << "\n" << probe << ": numerical rank | effective rank (mean ± std over images and heads)\n";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%-7s", "layer");
    out << buf;
    for (const auto& r : run_names) {
      std::snprintf(buf, sizeof buf, " | %-29s", r.c_str());
      out << buf;
    }
    out << "\n";
    for (const auto& layer : layers) {
      std::snprintf(buf, sizeof buf, "%-7s", layer.c_str());
      out << buf;
      for (const auto& s : summaries) {
        std::string text = "-";
        auto l = s.find(layer);
        if (l != s.end()) {
          auto p = l->second.find(probe);
          if (p != l->second.end()) text = cell(p->second.rank) + " | " + cell(p->second.effective_rank);
        }
        std::snprintf(buf, sizeof buf, " | %-29s", text.c_str());
        out << buf;
      }
      out << "\n";
    }
  }
}

void add_rank_command(CLI::App& app) {
  auto a = std::make_shared<RankArgs>();
  auto* cmd = app.add_subcommand("rank", "Rank analysis of the KV buffer and outputs of every attention layer");
  a->model.add_to(*cmd, /*with_pattern=*/false);
  cmd->add_option("--attn-pattern", a->patterns, "Attention pattern (repeatable: one results file per pattern)");
  cmd->add_option("--data", a->data, "fashion-mnist | synthetic | DIR of JPEG/PNG (class sub-folders or flat)")
      ->capture_default_str();
  cmd->add_option("--num-images", a->num_images, "Images to analyse (≤ 0: all of the folder/test split)")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->batch_size, "Images per forward")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--image-size", a->image_size, "Input side (default: the model's, 224 or 64)");
  auto* probes = cmd->add_option("--probes", a->probes,
                                  "Comma list of kv_buffer, kv_buffer_unweighted, kv_buffer_bwd, output, output_gated, "
                                  "feature_q, feature_k, alpha, attention, output_all_heads, output_gated_all_heads")
                      ->capture_default_str();
  auto* tolerance = cmd->add_option("--tolerance", a->tolerance,
                                    "Rank rule: numpy (σ_max·max(m,n)·eps) or a relative tolerance")
                        ->capture_default_str();
  cmd->add_option("--spectra", a->spectra,
                  "gram: σ from the float64 Gram matrix (dsyevd's algorithm; accurate to ~1e-8·σ_max, ranks as exact "
                  "unless a σ lies that close to the threshold) | exact: QR + SVD (dgesdd; ~1e-16·σ_max, slower)")
      ->check(CLI::IsMember({"gram", "exact"}))
      ->capture_default_str();
  cmd->add_option("--protocol", a->protocol,
                  "default | paper: the RALA paper's Figure 2 (per-head numpy ranks of the KV buffer with and without "
                  "α and of the output before and after the gate, per head and whole map)")
      ->check(CLI::IsMember({"default", "paper"}))
      ->excludes(probes)
      ->excludes(tolerance)
      ->capture_default_str();
  cmd->add_option("--attention-top-k", a->attention_top_k, "Singular values kept of attention maps with N > 1024")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Output directory")->required();
  cmd->add_option("--shard", a->shard,
                  "K/N: analyse only shard K (0-based) of N, a contiguous block of whole batches, into "
                  "<model>_<pattern>.shard-K-of-N.h5; join the shards with rala rank-merge");
  cmd->add_flag("--overwrite", a->overwrite, "Replace existing results files");
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  cmd->callback([a] {
    // Everything that can be checked up front is, before any work or any file is touched.
    if (a->protocol == "paper") {
      a->probes = kPaperProbes;
      a->tolerance = "numpy";
    }
    RecorderOptions check;
    parse_probe_list(a->probes, check);
    parse_tolerance(a->tolerance);
    TORCH_CHECK(a->image_size >= 0, "--image-size must be positive, got ", a->image_size);
    parse_shard(a->shard);
    std::vector<std::string> patterns = a->patterns;
    if (patterns.empty()) patterns.push_back("");
    std::vector<std::string> paths, names;
    for (const auto& p : patterns) {
      AnyModel probe_model(a->model.model, p, a->model.settings);  // validates preset, pattern and settings
      paths.push_back(results_path(*a, probe_model.preset(), probe_model.pattern()));
      names.push_back(probe_model.pattern());
      TORCH_CHECK(a->overwrite || !fs::exists(paths.back()), "'", paths.back(),
                  "' exists; pass --overwrite to replace it");
    }
    fs::create_directories(a->out);
    std::vector<std::map<std::string, std::map<std::string, ProbeSummary>>> summaries;
    for (size_t i = 0; i < patterns.size(); ++i) summaries.push_back(run_rank(*a, patterns[i], paths[i]));
    print_rank_table(std::cout, names, summaries);
    for (const auto& p : paths) std::cout << "wrote " << p << "\n";
  });
}

}  // namespace rala
