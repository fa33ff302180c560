#include "analysis/probe_recorder.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <iostream>
#include <sstream>

namespace rala {

void parse_probe_list(const std::string& list, RecorderOptions& options) {
  // What can be recorded: every rankable probe, alpha (stored as values), and the all-heads forms of the outputs.
  static const std::string kValid = [] {
    std::string s;
    for (const auto& info : kProbes)
      if (info.rankable || info.probe == Probe::alpha) s += (s.empty() ? "" : ", ") + std::string(info.name);
    return s + ", output_all_heads, output_gated_all_heads";
  }();
  std::set<Probe> probes, all_heads;
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name.empty()) continue;
    if (name == "output_all_heads" || name == "output_gated_all_heads") {
      const Probe p = name == "output_all_heads" ? Probe::output : Probe::output_gated;
      probes.insert(p);
      all_heads.insert(p);
      continue;
    }
    Probe p;
    try {
      p = probe_from_name(name);
    } catch (const c10::Error&) {
      TORCH_CHECK(false, "unknown probe '", name, "' (expected some of: ", kValid, ")");
    }
    TORCH_CHECK(probe_rankable(p) || p == Probe::alpha, "probe '", name,
                "' is not a stack of per-head matrices to rank (expected some of: ", kValid, ")");
    probes.insert(p);
  }
  TORCH_CHECK(!probes.empty(), "the probe list is empty (expected some of: ", kValid, ")");
  options.probes(probes).all_heads(all_heads);
}

void RunningStat::add(double x) {
  ++count;
  const double delta = x - mean;
  mean += delta / static_cast<double>(count);
  m2 += delta * (x - mean);
}

double RunningStat::std() const { return count > 1 ? std::sqrt(m2 / static_cast<double>(count - 1)) : 0.0; }

/// Holds the probes one layer hands over during a forward.
class ProbeRecorder::LayerSink : public ProbeSink {
 public:
  LayerSink(const RecorderOptions& options) : options_(options) {}
  bool wants(Probe p) const override { return options_.probes().count(p) > 0; }
  void receive(Probe p, const torch::Tensor& value) override { values[p] = value; }  // a reference, not a copy
  int64_t attention_limit() const override { return options_.attention_limit(); }
  void on_layer(int64_t h, int64_t w, int64_t prefix) override {
    height = h;
    width = w;
    prefix_tokens = prefix;
  }
  std::map<Probe, torch::Tensor> values;
  int64_t height = 0, width = 0, prefix_tokens = 0;

 private:
  const RecorderOptions& options_;
};

ProbeRecorder::ProbeRecorder(std::vector<RecorderLayer> layers, RecorderOptions options, h5::File* store)
    : layers_(std::move(layers)), options_(std::move(options)), store_(store) {
  for (size_t i = 0; i < layers_.size(); ++i) sinks_.push_back(std::make_unique<LayerSink>(options_));
}

ProbeRecorder::~ProbeRecorder() {
  try {
    finish();
  } catch (const std::exception& e) {  // a destructor cannot throw; finish() called by the owner reports it
    std::cerr << "rala: the last rows of the rank analysis were not written: " << e.what() << "\n";
  }
}

void ProbeRecorder::ensure(const std::string& path, const std::function<void()>& create) {
  if (made_.count(path)) return;
  if (!store_->exists(path)) create();
  made_.insert(path);
}

void ProbeRecorder::finish() {
  for (auto& [group, rows] : pending_)
    for (size_t f = 0; f < rows.size(); ++f) {
      store_->append(group + "/" + kRowFields[f], rows[f].size() == 1 ? rows[f][0] : torch::cat(rows[f]));
      rows[f].clear();  // written: a retry after an error appends only what is left
    }
  pending_.clear();
  pending_images_ = 0;
}

ProbeSink* ProbeRecorder::sink(int64_t stage, int64_t block) {
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].stage == stage && layers_[i].block == block) return sinks_[i].get();
  return nullptr;
}

std::string ProbeRecorder::tolerance_rule() const {
  if (options_.relative_tolerance()) {
    std::ostringstream s;
    s << "relative: sigma_i > sigma_max*" << *options_.relative_tolerance();
    return s.str();
  }
  return "numpy: sigma_i > sigma_max*max(m,n)*eps(" + probe_dtype_ + ")";
}

std::vector<Spectrum> ProbeRecorder::record(size_t layer, const std::string& probe, const torch::Tensor& matrices,
                                            int64_t batch, const std::vector<Spectrum>* known) {
  // matrices: (B, heads, m, n). One spectrum per (image, head), computed in parallel.
  const int64_t B = matrices.size(0), heads = matrices.size(1), m = matrices.size(2), n = matrices.size(3);
  TORCH_CHECK(B == batch, "probe '", probe, "' of layer ", layers_[layer].name, " has ", B, " images, the batch ",
              batch);
  const bool attention = probe == "attention";
  const bool partial = attention && std::min(m, n) > options_.attention_full_svd_limit();
  const int64_t k = partial ? options_.attention_top_k() : std::min(m, n);
  const double eps = dtype_eps(matrices.scalar_type());
  std::vector<Spectrum> spectra;
  if (known != nullptr) {
    spectra = *known;
  } else if (partial) {
    auto data = matrices.detach().to(torch::kCPU);
    spectra.resize(B * heads);
    at::parallel_for(0, B * heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) spectra[i] = top_singular_values(data[i / heads][i % heads], k);
    });
  } else {
    spectra = batched_spectra(matrices, options_.spectra());  // (B, heads) flattened as b·heads + h
  }
  auto sv = torch::zeros({B, heads, k}, torch::kFloat64);
  auto rank = torch::zeros({B, heads}, torch::kInt32), e90 = torch::zeros({B, heads}, torch::kInt32),
       e99 = torch::zeros({B, heads}, torch::kInt32), status = torch::zeros({B, heads}, torch::kInt32);
  auto erank = torch::zeros({B, heads}, torch::kFloat64), srank = torch::zeros({B, heads}, torch::kFloat64);
  auto sv_a = sv.accessor<double, 3>();
  auto rank_a = rank.accessor<int32_t, 2>(), e90_a = e90.accessor<int32_t, 2>(), e99_a = e99.accessor<int32_t, 2>(),
       status_a = status.accessor<int32_t, 2>();
  auto erank_a = erank.accessor<double, 2>(), srank_a = srank.accessor<double, 2>();
  auto& summary = summary_[layers_[layer].name][probe];
  for (int64_t i = 0; i < B * heads; ++i) {
    const auto& s = spectra[i];
    const int64_t b = i / heads, h = i % heads;
    status_a[b][h] = static_cast<int32_t>(s.status);
    if (s.values.empty()) continue;
    auto metrics = rank_metrics(s.values, m, n, eps, options_.relative_tolerance());
    for (size_t j = 0; j < s.values.size() && static_cast<int64_t>(j) < k; ++j) sv_a[b][h][j] = s.values[j];
    const int64_t r = options_.relative_tolerance() ? metrics.relative_rank : metrics.numerical_rank;
    rank_a[b][h] = static_cast<int32_t>(r);
    erank_a[b][h] = metrics.effective_rank;
    srank_a[b][h] = metrics.stable_rank;
    e90_a[b][h] = static_cast<int32_t>(metrics.energy_rank_90);
    e99_a[b][h] = static_cast<int32_t>(metrics.energy_rank_99);
    summary.rank.add(static_cast<double>(r));
    summary.effective_rank.add(metrics.effective_rank);
  }
  if (store_ == nullptr) return spectra;
  const std::string g = "/layers/" + layers_[layer].name + "/" + probe;
  ensure(g + "/singular_values", [&] {
    // The float64 columns are stored uncompressed: gzip shrank them by 4 % (singular values) to 0 %, for zlib's
    // ≈ 0.5 % of the run's CPU time; the integer ones shrink 5–14×.
    store_->create_extendible(g + "/singular_values", torch::kFloat64, {heads, k}, 64, /*deflate=*/false);
    for (const char* name : {"rank", "energy_rank_90", "energy_rank_99", "status"})
      store_->create_extendible(g + "/" + name, torch::kInt32, {heads});
    for (const char* name : {"effective_rank", "stable_rank"})
      store_->create_extendible(g + "/" + name, torch::kFloat64, {heads}, 64, /*deflate=*/false);
    store_->set_attr(g, "rows", m);
    store_->set_attr(g, "cols", n);
    store_->set_attr(g, "complete_spectrum", static_cast<int64_t>(!partial));
    store_->set_attr(g, "spectra_method",
                     std::string(partial ? "lanczos-topk"
                                         : batched_spectra_label(options_.spectra(), matrices.device())));
    store_->set_attr(g, "dtype", std::string(c10::toString(matrices.scalar_type())));
    store_->set_attr(g + "/rank", "rule", tolerance_rule());
    store_->set_attr(g + "/status", "meaning", "0 ok, 1 not converged, 2 numerical issue (non-finite input)");
  });
  // Rows wait in memory and are appended kWriteImages images at a time (flush_batch, finish): an append costs a
  // few HDF5 calls (≈ 16 µs) whatever its size, and 7 datasets × every (layer, probe) × every batch of 4 images were
  // ≈ 4 ms of a 120 ms batch.
  auto& rows = pending_[g];
  const torch::Tensor fields[] = {sv, rank, erank, srank, e90, e99, status};
  for (size_t f = 0; f < rows.size(); ++f) rows[f].push_back(fields[f]);
  return spectra;
}

void ProbeRecorder::flush_batch(int64_t batch) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& sink = *sinks_[i];
    if (sink.values.empty()) continue;
    const auto& L = layers_[i];
    if (store_ != nullptr) {
      const std::string g = "/layers/" + L.name;
      ensure(g, [&] {
        store_->create_group(g);
        store_->set_attr(g, "stage", L.stage);
        store_->set_attr(g, "block", L.block);
        store_->set_attr(g, "variant", L.variant);
        store_->set_attr(g, "settings", L.settings);
        store_->set_attr(g, "heads", L.heads);
        store_->set_attr(g, "head_dim", L.head_dim);
        store_->set_attr(g, "tokens", sink.prefix_tokens + sink.height * sink.width);
        store_->set_attr(g, "prefix_tokens", sink.prefix_tokens);
        store_->set_attr(g, "H", sink.height);
        store_->set_attr(g, "W", sink.width);
      });
    }
    for (auto& [probe, value] : sink.values) {
      if (!probe_rankable(probe) && probe != Probe::alpha) continue;
      probe_dtype_ = c10::toString(value.scalar_type());
      if (probe == Probe::alpha) {  // stored as is, not ranked
        if (store_ == nullptr) continue;
        const std::string path = "/layers/" + L.name + "/alpha/values";
        auto v = value.detach().to(torch::kCPU, torch::kFloat32).contiguous();  // (B, h, N)
        if (!store_->exists(path)) store_->create_extendible(path, torch::kFloat32, {v.size(1), v.size(2)});
        store_->append(path, v);
        continue;
      }
      auto spectra = record(i, probe_name(probe), value, batch);
      if (options_.all_heads().count(probe)) {
        // The concatenated (N, C) output of the layer: heads side by side, channel n·d + i.
        auto all = value.permute({0, 2, 1, 3}).reshape({value.size(0), 1, value.size(2), -1});
        record(i, std::string(probe_name(probe)) + "_all_heads", all, batch, value.size(1) == 1 ? &spectra : nullptr);
      }
    }
    sink.values.clear();
  }
  images_ += batch;
  pending_images_ += batch;
  if (pending_images_ >= kWriteImages) finish();
}

std::map<std::string, std::map<std::string, ProbeSummary>> summarize_results(const h5::File& file,
                                                                             int64_t block_rows) {
  TORCH_CHECK(block_rows > 0, "summarize_results: block_rows must be > 0, got ", block_rows);
  std::map<std::string, std::map<std::string, ProbeSummary>> out;
  if (!file.is_group("/layers")) return out;
  for (const auto& layer : file.list("/layers")) {
    const std::string lg = "/layers/" + layer;
    if (!file.is_group(lg)) continue;
    for (const auto& probe : file.list(lg)) {
      const std::string g = lg + "/" + probe;
      if (!file.is_dataset(g + "/rank") || !file.is_dataset(g + "/effective_rank")) continue;  // alpha: values only
      const auto shape = file.shape(g + "/rank");
      TORCH_CHECK(shape.size() == 2, "'", file.path(), "': ", g, "/rank must be (images, heads)");
      const bool has_status = file.is_dataset(g + "/status") && file.is_dataset(g + "/singular_values");
      auto& summary = out[layer][probe];
      for (int64_t start = 0; start < shape[0]; start += block_rows) {
        const int64_t n = std::min(block_rows, shape[0] - start);
        const auto rank = file.read_rows(g + "/rank", start, n).to(torch::kFloat64).contiguous();
        const auto erank = file.read_rows(g + "/effective_rank", start, n).to(torch::kFloat64).contiguous();
        torch::Tensor skipped;  // (n, heads): no spectrum was computed (status ≠ 0 and all singular values zero)
        if (has_status) {
          const auto status = file.read_rows(g + "/status", start, n);
          const auto sv = file.read_rows(g + "/singular_values", start, n);
          skipped = status.ne(0).logical_and(sv.eq(0).all(2)).contiguous();
        }
        const double* r = rank.data_ptr<double>();
        const double* e = erank.data_ptr<double>();
        for (int64_t i = 0; i < rank.numel(); ++i) {
          if (skipped.defined() && skipped.data_ptr<bool>()[i]) continue;
          summary.rank.add(r[i]);
          summary.effective_rank.add(e[i]);
        }
      }
    }
  }
  return out;
}

}  // namespace rala
