#pragma once
/// \file probe_recorder.h
/// Receives the probes of every attention layer of a model, turns each (image, layer, head) into a spectrum and rank
/// metrics, and streams them to a results file (schema: ARCHITECTURE.md §4, README "Rank analysis"). Memory stays
/// flat in the number of images: a batch's probes are dropped once its rows are appended.
///
/// Usage:
///   rala::ProbeRecorder rec(layers, rala::RecorderOptions().probes({Probe::kv_buffer, Probe::output}), &file);
///   model.set_probe_sinks([&](int64_t s, int64_t b) { return rec.sink(s, b); });
///   model.forward(batch);
///   rec.flush_batch(batch.size(0));

#include <torch/torch.h>

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "analysis/h5_store.h"
#include "analysis/rank_metrics.h"
#include "analysis/spectrum.h"
#include "attention_variants/attention.h"

namespace rala {

/// What the recorder needs to know of a layer (analysis knows nothing of models).
struct RecorderLayer {
  std::string name;  ///< "<stage>.<block>"
  int64_t stage = 0, block = 0;
  std::string variant;
  int64_t heads = 0, head_dim = 0;
  std::string settings;  ///< the layer's effective settings ("alpha=1 gate=1 rope=1 lepe=1")
};

struct RecorderOptions {
  /// Probes to record: kv_buffer, output, output_gated, alpha, attention.
  TORCH_ARG(std::set<Probe>, probes) = std::set<Probe>{Probe::kv_buffer, Probe::output, Probe::output_gated};
  /// Of output / output_gated: which also get their `<probe>_all_heads` form, the concatenated (N × C) matrix.
  TORCH_ARG(std::set<Probe>, all_heads) = std::set<Probe>{};
  /// Rank rule: unset = numpy (σ_max·max(m, n)·eps of the probe's dtype); set = σ_i > σ_max·rel.
  TORCH_ARG(std::optional<double>, relative_tolerance) = std::nullopt;
  /// How full spectra are computed: gram (float64 Gram matrix + dsyevd, the default; σ to ~1e-8·σ_1 absolute) or
  /// exact (QR + dgesdd; ~1e-16·σ_1). Recorded per probe group as the attribute `spectra_method`.
  TORCH_ARG(SpectraMethod, spectra) = SpectraMethod::gram;
  /// Attention maps with N above this get only their top-k singular values (Lanczos).
  TORCH_ARG(int64_t, attention_full_svd_limit) = 1024;
  TORCH_ARG(int64_t, attention_top_k) = 64;
  /// Attention maps are not materialised at all above this N.
  TORCH_ARG(int64_t, attention_limit) = 4096;
};

/// Parses a comma list of probe names into options: kv_buffer, output, output_gated, alpha, attention,
/// output_all_heads, output_gated_all_heads. Throws naming an unknown or unrankable name and listing the valid ones.
void parse_probe_list(const std::string& list, RecorderOptions& options);

/// Running mean and standard deviation (Welford).
struct RunningStat {
  int64_t count = 0;
  double mean = 0, m2 = 0;
  void add(double x);
  double std() const;
};

/// Per (layer, probe): mean ± std over images and heads of the rank and effective rank.
struct ProbeSummary {
  RunningStat rank, effective_rank;
};

/// The summary a ProbeRecorder computes (summary()), recomputed from a results file it wrote: per layer and ranked
/// probe, mean ± std of `rank` and `effective_rank` over images and heads, in the recorder's order (image by image,
/// head by head) and skipping the (image, head) entries the recorder skipped (no spectrum: status ≠ 0 and no
/// singular values), so it is the recorder's summary bit for bit. Reads `block_rows` images at a time.
std::map<std::string, std::map<std::string, ProbeSummary>> summarize_results(const h5::File& file,
                                                                             int64_t block_rows = 1024);

class ProbeRecorder {
 public:
  /// `store` may be null (summaries only); otherwise rows go to it under /layers.
  ProbeRecorder(std::vector<RecorderLayer> layers, RecorderOptions options, h5::File* store);
  /// Runs finish(); an error there is printed, not thrown.
  ~ProbeRecorder();
  /// The sink of layer (stage, block), or nullptr for a layer the recorder does not know.
  ProbeSink* sink(int64_t stage, int64_t block);
  /// Spectra and metrics of the batch just run (B images); the batch's probes are dropped. Their rows reach the store
  /// once kWriteImages images are waiting, and at finish().
  void flush_batch(int64_t batch);
  /// Appends the rows still waiting to the store (a no-op when none are). Call it before reading the store or
  /// closing it; the destructor calls it too, but cannot report an error.
  void finish();
  /// Images whose rows are appended together (HDF5's chunk of create_extendible is 64 rows).
  static constexpr int64_t kWriteImages = 64;
  /// Layer → probe name ("kv_buffer", "output_all_heads", …) → summary.
  const std::map<std::string, std::map<std::string, ProbeSummary>>& summary() const { return summary_; }
  const std::vector<RecorderLayer>& layers() const { return layers_; }
  int64_t images() const { return images_; }
  /// Human-readable rank rule, e.g. "numpy: sigma_max*max(m,n)*eps(float32)" or "relative: 1e-3".
  std::string tolerance_rule() const;

 private:
  class LayerSink;
  /// Spectra and metrics of (B, heads, m, n) matrices → rows of the store; `known` reuses spectra already computed
  /// for the same matrices (a one-head layer's all-heads output). Returns the spectra.
  std::vector<Spectrum> record(size_t layer, const std::string& probe, const torch::Tensor& matrices, int64_t batch,
                               const std::vector<Spectrum>* known = nullptr);
  /// Runs `create` the first time `path` is asked for and the store lacks it; later calls ask the store nothing (an
  /// HDF5 existence test of a nested path is ≈ 75 µs).
  void ensure(const std::string& path, const std::function<void()>& create);
  /// The per-(image, head) datasets of a probe group, in the order of a pending row.
  static constexpr const char* kRowFields[7] = {"singular_values", "rank",           "effective_rank", "stable_rank",
                                                "energy_rank_90",  "energy_rank_99", "status"};
  std::set<std::string> made_;
  std::map<std::string, std::array<std::vector<torch::Tensor>, 7>> pending_;  ///< group → rows per field
  int64_t pending_images_ = 0;
  std::vector<RecorderLayer> layers_;
  RecorderOptions options_;
  h5::File* store_;
  std::vector<std::unique_ptr<LayerSink>> sinks_;
  std::map<std::string, std::map<std::string, ProbeSummary>> summary_;
  int64_t images_ = 0;
  std::string probe_dtype_ = "float32";
};

}  // namespace rala
