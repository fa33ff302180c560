// The probe recorder and the results schema: the golden RALA kv_buffer spectrum, every dataset of a micro-model run
// against an independent recomputation (dense oracle SVD, numpy rank rule written out here), and logits unchanged.
#include <gtest/gtest.h>

#include <Eigen/SVD>
#include <filesystem>

#include "analysis/probe_recorder.h"
#include "attention_variants/rala.h"
#include "attention_variants/registry.h"
#include "models/presets.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

struct TempFile {
  std::string path = (fs::temp_directory_path() / ("rala_recorder_" + std::to_string(::getpid()) + "_" +
                                                   std::to_string(reinterpret_cast<uintptr_t>(this)) + ".h5"))
                         .string();
  ~TempFile() { fs::remove(path); }
};

/// Singular values by Eigen's JacobiSVD (the dense oracle), descending.
std::vector<double> oracle_sv(const torch::Tensor& m) {
  auto d = m.to(torch::kFloat64).contiguous();
  Eigen::MatrixXd e = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(d.data_ptr<double>(), d.size(0),
                                                                                         d.size(1));
  Eigen::VectorXd s = Eigen::JacobiSVD<Eigen::MatrixXd>(e).singularValues();
  return std::vector<double>(s.data(), s.data() + s.size());
}

TEST(ProbeRecorder, RalaKvBufferSpectrumMatchesGolden) {
  const char* golden = "rala_attention.h5";
  RalaAttention attn(AttentionOptions(64, 2));
  test::load_state(*attn, golden);
  TempFile tmp;
  {
    h5::File file(tmp.path, h5::Mode::truncate);
    ProbeRecorder rec({{"0.0", 0, 0, "rala", 2, 32, ""}}, RecorderOptions().probes({Probe::kv_buffer}), &file);
    auto x = test::golden(golden, "input");
    AttentionContext ctx;
    ctx.height = 7;
    ctx.width = 9;
    ctx.rope_sin = test::golden(golden, "rope_sin");
    ctx.rope_cos = test::golden(golden, "rope_cos");
    ctx.probes = rec.sink(0, 0);
    ctx.probes->on_layer(7, 9, 0);
    torch::NoGradGuard no_grad;
    attn->forward(x, ctx);
    rec.flush_batch(2);
  }
  auto sv = h5::read_tensor(tmp.path, "/layers/0.0/kv_buffer/singular_values");  // (2, 2, 32)
  ASSERT_EQ(sv.sizes(), (std::vector<int64_t>{2, 2, 32}));
  auto kv = test::golden(golden, "probes/kv_buffer");
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h) {
      auto ref = oracle_sv(kv[b][h]);
      for (int64_t i = 0; i < 32; ++i) {
        if (ref[i] < 1e-3 * ref[0]) continue;  // fp32 buffers: relative accuracy only for the well-resolved values
        EXPECT_NEAR(sv[b][h][i].item<double>() / ref[i], 1.0, 1e-5) << b << " " << h << " " << i;
      }
    }
}

// Rows are buffered and appended kWriteImages images at a time: batches of uneven sizes that cross that count twice
// and end with a tail must land as one row per image in order, written by finish() while the recorder is alive, and
// stay whole when the store is read after the recorder is gone. Each row is checked against the oracle SVD of the
// matrices handed over for that image (the head views are strided: (B, N, h, d) transposed, as the layers give them).
TEST(ProbeRecorder, BufferedRowsLandInImageOrderAcrossWritesAndTheTail) {
  TempFile tmp;
  const int64_t heads = 2, N = 40, d = 8;
  std::vector<torch::Tensor> given;
  torch::manual_seed(11);
  {
    h5::File file(tmp.path, h5::Mode::truncate);
    ProbeRecorder rec({{"0.0", 0, 0, "rala", heads, d, ""}}, RecorderOptions().probes({Probe::output}), &file);
    int64_t images = 0;
    for (int64_t batch : {30, 7, 40, 1, 60, 5}) {  // 143 images: writes at 77 and 138, a tail of 5
      auto tokens = torch::randn({batch, N, heads, d});
      tokens.select(2, 1).mul_(1e-3);  // the two heads at different scales: rows cannot be confused
      rec.sink(0, 0)->on_layer(5, 8, 0);
      rec.sink(0, 0)->receive(Probe::output, tokens.transpose(1, 2));
      rec.flush_batch(batch);
      given.push_back(tokens.transpose(1, 2).contiguous());
      images += batch;
    }
    EXPECT_EQ(rec.images(), images);
    rec.finish();
    EXPECT_EQ(file.shape("/layers/0.0/output/singular_values"), (std::vector<int64_t>{images, heads, d}));
    EXPECT_EQ(file.shape("/layers/0.0/output/rank"), (std::vector<int64_t>{images, heads}));
    rec.finish();  // nothing left: a no-op
    EXPECT_EQ(file.shape("/layers/0.0/output/status")[0], images);
  }
  const auto all = torch::cat(given);  // (143, heads, N, d)
  auto sv = h5::read_tensor(tmp.path, "/layers/0.0/output/singular_values");
  auto rank = h5::read_tensor(tmp.path, "/layers/0.0/output/rank");
  ASSERT_EQ(sv.size(0), all.size(0));
  for (int64_t i = 0; i < all.size(0); ++i)
    for (int64_t h = 0; h < heads; ++h) {
      const auto ref = oracle_sv(all[i][h]);
      for (int64_t j = 0; j < d; ++j)
        ASSERT_NEAR(sv[i][h][j].item<double>(), ref[j], 1e-6 * ref[0]) << "image " << i << " head " << h << " σ" << j;
      EXPECT_EQ(rank[i][h].item<int32_t>(), d) << i << " " << h;  // Gaussian 40×8: full rank
    }
}

/// Captures every probe of every layer, for the independent recomputation.
struct CaptureAll : ProbeSink {
  bool wants(Probe p) const override { return p != Probe::attention && p != Probe::normalizer_z; }
  void receive(Probe p, const torch::Tensor& v) override { values[p].push_back(v.clone()); }
  std::map<Probe, std::vector<torch::Tensor>> values;
};

/// Both spectra methods; the recomputation below holds each to its own stated accuracy (README "Rank analysis").
class RecorderRun : public ::testing::TestWithParam<SpectraMethod> {};

TEST_P(RecorderRun, SchemaAndValuesOfAMicroModelRun) {
  const SpectraMethod method = GetParam();
  const bool gram = method == SpectraMethod::gram;
  AnyModel model("ravlt_micro", "RRSS");
  model.module()->eval();
  std::vector<RecorderLayer> layers;
  for (const auto& l : model.attention_layers())
    layers.push_back({l.name(), l.stage, l.block, variant_info(l.variant).name, l.heads, l.head_dim, l.settings});
  auto x = torch::randn({3, 3, 64, 64});
  TempFile tmp;
  torch::Tensor recorded;
  torch::NoGradGuard no_grad;
  {
    h5::File file(tmp.path, h5::Mode::truncate);
    RecorderOptions options;
    parse_probe_list("kv_buffer,output_all_heads,output_gated,alpha", options);
    EXPECT_EQ(options.spectra(), SpectraMethod::gram);  // the default
    options.spectra(method);
    EXPECT_EQ(options.probes(), (std::set<Probe>{Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::alpha}));
    ProbeRecorder rec(layers, options, &file);
    model.set_probe_sinks([&](int64_t s, int64_t b) { return rec.sink(s, b); });
    auto first = model.forward(x.narrow(0, 0, 2));  // two batches: rows are appended across flushes
    rec.flush_batch(2);
    auto second = model.forward(x.narrow(0, 2, 1));
    rec.flush_batch(1);
    recorded = torch::cat({first, second});
    model.set_probe_sinks(nullptr);
    EXPECT_EQ(rec.images(), 3);
  }
  // Attaching the recorder does not change the logits (bit-identical, batch by batch).
  EXPECT_TRUE(torch::equal(torch::cat({model.forward(x.narrow(0, 0, 2)), model.forward(x.narrow(0, 2, 1))}), recorded));

  // Independent recomputation from captured probes (the same two batches, so the fp32 probes are bit-identical).
  std::map<std::string, std::unique_ptr<CaptureAll>> captures;
  model.set_probe_sinks([&](int64_t s, int64_t b) {
    auto& c = captures[std::to_string(s) + "." + std::to_string(b)];
    if (!c) c = std::make_unique<CaptureAll>();
    return c.get();
  });
  model.forward(x.narrow(0, 0, 2));
  model.forward(x.narrow(0, 2, 1));
  model.set_probe_sinks(nullptr);

  h5::File file(tmp.path, h5::Mode::read);
  const double eps = std::ldexp(1.0, -23);  // float32 probes: numpy's default tolerance σ_max·max(m, n)·eps
  for (const auto& L : layers) {
    const std::string g = "/layers/" + L.name;
    ASSERT_TRUE(file.is_group(g)) << g;
    EXPECT_EQ(file.attr_int(g, "stage"), L.stage);
    EXPECT_EQ(file.attr_int(g, "heads"), L.heads);
    EXPECT_EQ(file.attr_int(g, "head_dim"), L.head_dim);
    EXPECT_EQ(file.attr_string(g, "variant"), L.variant);
    EXPECT_EQ(file.attr_int(g, "tokens"), file.attr_int(g, "H") * file.attr_int(g, "W"));
    const bool kernel = L.variant == "rala";
    EXPECT_EQ(file.exists(g + "/kv_buffer"), kernel) << g;
    EXPECT_EQ(file.exists(g + "/alpha/values"), kernel) << g;
    const auto& cap = *captures.at(L.name);
    for (auto [probe, name] : {std::pair{Probe::output, "output"}, std::pair{Probe::output_gated, "output_gated"},
                               std::pair{Probe::kv_buffer, "kv_buffer"}}) {
      if (!cap.values.count(probe)) continue;
      const auto t = torch::cat(cap.values.at(probe));  // (3, h, m, n)
      const std::string pg = g + "/" + name;
      auto sv = file.read(pg + "/singular_values");
      auto rank = file.read(pg + "/rank");
      auto erank = file.read(pg + "/effective_rank");
      const int64_t k = std::min(t.size(2), t.size(3));
      ASSERT_EQ(sv.sizes(), (std::vector<int64_t>{3, L.heads, k})) << pg;
      EXPECT_EQ(sv.scalar_type(), torch::kFloat64);
      EXPECT_EQ(rank.scalar_type(), torch::kInt32);
      EXPECT_EQ(erank.scalar_type(), torch::kFloat64);
      EXPECT_EQ(file.read(pg + "/energy_rank_99").sizes(), (std::vector<int64_t>{3, L.heads}));
      EXPECT_EQ(file.attr_string(pg, "spectra_method"), gram ? "gram-syevd" : "qr-gesdd") << pg;
      for (int64_t b = 0; b < 3; ++b)
        for (int64_t h = 0; h < L.heads; ++h) {
          auto ref = oracle_sv(t[b][h]);
          const double tol = ref[0] * static_cast<double>(std::max(t.size(2), t.size(3))) * eps;
          int64_t ref_rank = 0;
          double sum = 0, entropy = 0;
          for (double s : ref) {
            ref_rank += s > tol;
            sum += s;
          }
          for (double s : ref)
            if (s > 0) entropy -= s / sum * std::log(s / sum);
          // exact: backward stable, ~1e-16·σ_1. gram: |σ̂ − σ| ≤ 3e-8·σ_1, relative 1e-4 for σ ≥ 1e-6·σ_1.
          int64_t near_threshold = 0;  // σ within the Gram error of the threshold: the only values counted differently
          for (int64_t i = 0; i < k; ++i) {
            const double got = sv[b][h][i].item<double>();
            EXPECT_NEAR(got, ref[i], (gram ? 3e-8 : 1e-10) * ref[0]) << pg << " " << b << " " << h << " " << i;
            if (gram && ref[i] >= 1e-6 * ref[0]) {
              EXPECT_NEAR(got / ref[i], 1.0, 1e-4) << pg << " " << b << " " << i;
            }
            near_threshold += gram && std::abs(ref[i] - tol) <= std::max(1e-4 * ref[i], 3e-8 * ref[0]);
          }
          EXPECT_LE(std::abs(rank[b][h].item<int32_t>() - ref_rank), near_threshold) << pg << " " << b << " " << h;
          EXPECT_NEAR(erank[b][h].item<double>(), std::exp(entropy), gram ? 1e-6 * std::exp(entropy) : 1e-9) << pg;
        }
    }
    // The all-heads output, asked for: one (N, C) matrix per image; the gated one was not asked for.
    auto all = file.read(g + "/output_all_heads/singular_values");
    EXPECT_EQ(all.size(0), 3);
    EXPECT_EQ(all.size(1), 1);
    EXPECT_FALSE(file.exists(g + "/output_gated_all_heads"));
    EXPECT_EQ(file.attr_string(g + "/output_all_heads", "spectra_method"), gram ? "gram-syevd" : "qr-gesdd");
  }
  // h5dump opens the file as it is.
  if (std::system("command -v h5dump > /dev/null 2>&1") == 0) {
    EXPECT_EQ(std::system(("h5dump -H " + tmp.path + " > /dev/null 2>&1").c_str()), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Spectra, RecorderRun, ::testing::Values(SpectraMethod::gram, SpectraMethod::exact),
                         [](const auto& info) { return std::string(spectra_method_name(info.param)); });

}  // namespace
}  // namespace rala
