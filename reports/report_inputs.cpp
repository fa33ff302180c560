#include "reports/report_inputs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>

#include "analysis/h5_store.h"

namespace rala::report {

namespace {

namespace fs = std::filesystem;

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

/// Any root attribute as text: strings as they are, numbers and vectors of numbers joined by ", ".
std::string attr_text(const h5::File& f, const std::string& name) {
  try {
    return f.attr_string("/", name);
  } catch (const std::exception& e) {
    // Not a string: try the numeric forms. A string whose bytes are corrupted is an error of the file.
    if (std::string(e.what()).find("corrupted variable-length string") != std::string::npos) throw;
  }
  try {
    std::string out;
    for (auto v : f.attr_ints("/", name)) out += (out.empty() ? "" : ", ") + std::to_string(v);
    return out;
  } catch (const std::exception&) {
  }
  try {
    std::string out;
    for (auto v : f.attr_doubles("/", name)) out += (out.empty() ? "" : ", ") + format_double(v);
    return out;
  } catch (const std::exception&) {
  }
  return "?";
}

bool has_columns(const ResultsTable& t, std::initializer_list<const char*> names) {
  for (auto n : names)
    if (!t.has_column(n)) return false;
  return true;
}

InputKind kind_from_text(const std::string& s) {
  if (s == "ablation") return InputKind::ablation;
  if (s == "bench") return InputKind::bench;
  if (s == "bench_attention") return InputKind::bench_attention;
  if (s == "train") return InputKind::train;
  return InputKind::table;
}

InputKind kind_from_columns(const ResultsTable& t) {
  if (has_columns(t, {"config", "top1_mean"})) return InputKind::ablation;
  if (has_columns(t, {"image_size", "images_per_s", "peak_memory_mb"})) return InputKind::bench;
  if (has_columns(t, {"variant", "tokens", "time_ms"})) return InputKind::bench_attention;
  if (has_columns(t, {"epoch", "test_top1"})) return InputKind::train;
  return InputKind::table;
}

template <typename T>
std::vector<T> as_vector(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

ProbeData load_probe(const h5::File& f, const std::string& group) {
  ProbeData p;
  p.path = group;
  const auto rank = f.read(group + "/rank");
  if (rank.dim() != 2)
    throw std::runtime_error("'" + f.path() + "': " + group + "/rank must be (images, heads), got " +
                             std::to_string(rank.dim()) + " dims");
  p.images = rank.size(0);
  p.heads = rank.size(1);
  p.rank = as_vector<int32_t>(rank.to(torch::kInt32));
  if (f.is_dataset(group + "/effective_rank")) {
    const auto e = f.read(group + "/effective_rank").to(torch::kFloat64);
    if (e.sizes() != rank.sizes())
      throw std::runtime_error("'" + f.path() + "': " + group + "/effective_rank differs in shape from rank");
    p.effective_rank = as_vector<double>(e);
  } else {
    p.effective_rank.assign(p.rank.size(), std::nan(""));
  }
  p.ok.assign(p.rank.size(), 1);
  if (f.is_dataset(group + "/status")) {
    const auto s = as_vector<int32_t>(f.read(group + "/status").to(torch::kInt32));
    if (s.size() == p.ok.size())
      for (size_t i = 0; i < s.size(); ++i) p.ok[i] = s[i] == 0;
  }
  if (f.is_dataset(group + "/singular_values")) {
    const auto shape = f.shape(group + "/singular_values");
    if (shape.size() == 3) p.k = shape[2];
  }
  return p;
}

RankData load_rank(const h5::File& f) {
  RankData r;
  if (f.has_attr("/", "num_images")) r.num_images = f.attr_int("/", "num_images");
  for (const auto& name : f.list("/layers")) {
    const std::string g = "/layers/" + name;
    if (!f.is_group(g)) continue;
    LayerData l;
    l.name = name;
    auto get_int = [&](const char* a, int64_t fallback) { return f.has_attr(g, a) ? f.attr_int(g, a) : fallback; };
    l.stage = get_int("stage", 0);
    l.block = get_int("block", 0);
    l.heads = get_int("heads", 0);
    l.head_dim = get_int("head_dim", 0);
    l.tokens = get_int("tokens", 0);
    l.variant = f.has_attr(g, "variant") ? f.attr_string(g, "variant") : "";
    for (const auto& probe : f.list(g))
      if (f.is_dataset(g + "/" + probe + "/rank")) l.probes[probe] = load_probe(f, g + "/" + probe);
    r.layers.push_back(std::move(l));
  }
  std::sort(r.layers.begin(), r.layers.end(), [](const LayerData& a, const LayerData& b) {
    return std::make_pair(a.stage, a.block) < std::make_pair(b.stage, b.block);
  });
  return r;
}

}  // namespace

const char* kind_name(InputKind kind) {
  switch (kind) {
    case InputKind::rank: return "rank";
    case InputKind::ablation: return "ablation";
    case InputKind::bench: return "bench";
    case InputKind::bench_attention: return "bench_attention";
    case InputKind::train: return "train";
    case InputKind::table: return "table";
  }
  return "?";
}

MeanStd mean_std(const std::vector<double>& values, const std::vector<uint8_t>& ok) {
  MeanStd s;
  double sum = 0;
  auto use = [&](size_t i) { return (ok.empty() || ok[i]) && std::isfinite(values[i]); };
  for (size_t i = 0; i < values.size(); ++i)
    if (use(i)) {
      sum += values[i];
      ++s.count;
    }
  if (s.count == 0) {
    s.mean = s.std = std::nan("");
    return s;
  }
  s.mean = sum / static_cast<double>(s.count);
  double ss = 0;
  for (size_t i = 0; i < values.size(); ++i)
    if (use(i)) ss += (values[i] - s.mean) * (values[i] - s.mean);
  s.std = s.count > 1 ? std::sqrt(ss / static_cast<double>(s.count - 1)) : 0.0;
  return s;
}

MeanStd ProbeData::rank_stat() const { return mean_std(std::vector<double>(rank.begin(), rank.end()), ok); }

MeanStd ProbeData::effective_rank_stat() const { return mean_std(effective_rank, ok); }

const LayerData* RankData::layer(const std::string& name) const {
  for (const auto& l : layers)
    if (l.name == name) return &l;
  return nullptr;
}

std::string InputFile::attr(const std::string& name) const {
  for (const auto& [k, v] : attrs)
    if (k == name) return v;
  return "";
}

InputFile load_input(const std::string& path) {
  const std::string expected =
      "expected an HDF5 results file written by rala (a rank file with /layers, or a table file with /table)";
  if (!fs::is_regular_file(path)) throw std::runtime_error("input '" + path + "' does not exist or is not a file");
  std::unique_ptr<h5::File> f;
  try {
    f = std::make_unique<h5::File>(path, h5::Mode::read);
  } catch (const std::exception&) {
    throw std::runtime_error("input '" + path + "' is not a results file: not an HDF5 file; " + expected);
  }
  InputFile in;
  in.path = path;
  for (const auto& a : f->attr_names("/")) in.attrs.emplace_back(a, attr_text(*f, a));
  try {
    if (f->is_group("/layers")) {
      in.kind = InputKind::rank;
      in.rank = load_rank(*f);
      if (in.rank.layers.empty())
        throw std::runtime_error("input '" + path + "' is not a results file: /layers holds no layers; " + expected);
    } else if (f->is_group("/table")) {
      in.table = ResultsTable::read_h5(*f);
      const std::string tk = in.attr("table_kind");
      in.kind = tk.empty() ? kind_from_columns(in.table) : kind_from_text(tk);
    } else {
      throw std::runtime_error("input '" + path + "' is not a results file: it has neither /layers nor /table; " +
                               expected);
    }
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    if (what.find(path) != std::string::npos) throw;
    throw std::runtime_error("input '" + path + "': " + what);
  }
  in.label = fs::path(path).stem().string();
  return in;
}

void assign_labels(std::vector<InputFile>& inputs) {
  std::set<std::string> models;
  for (const auto& in : inputs)
    if (in.kind == InputKind::rank) models.insert(in.attr("model"));
  for (auto& in : inputs) {
    if (in.kind != InputKind::rank) continue;
    std::string label = in.attr("attn_pattern");
    if (label.empty()) label = fs::path(in.path).stem().string();
    const std::string settings = in.attr("attn_settings");
    if (!settings.empty()) label += " " + settings;
    if (models.size() > 1 && !in.attr("model").empty()) label = in.attr("model") + " " + label;
    in.label = label;
  }
  std::map<std::string, int> count;
  for (const auto& in : inputs) ++count[in.label];
  for (auto& in : inputs)
    if (count[in.label] > 1) in.label += " (" + fs::path(in.path).stem().string() + ")";
}

std::vector<std::vector<double>> normalised_spectra(const InputFile& file, const ProbeData& probe) {
  h5::File f(file.path, h5::Mode::read);
  const std::string ds = probe.path + "/singular_values";
  if (!f.is_dataset(ds)) return {};
  const auto sv = f.read(ds).to(torch::kFloat64).contiguous();  // (n, heads, k)
  if (sv.dim() != 3) throw std::runtime_error("'" + file.path + "': " + ds + " must be (images, heads, k)");
  const int64_t rows = sv.size(0) * sv.size(1), k = sv.size(2);
  const double* p = sv.data_ptr<double>();
  std::vector<std::vector<double>> out;
  for (int64_t r = 0; r < rows; ++r) {
    if (static_cast<size_t>(r) < probe.ok.size() && !probe.ok[r]) continue;
    const double s1 = p[r * k];
    if (!(s1 > 0) || !std::isfinite(s1)) continue;
    std::vector<double> row(k);
    for (int64_t i = 0; i < k; ++i) row[i] = p[r * k + i] / s1;
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace rala::report
