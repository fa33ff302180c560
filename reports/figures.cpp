#include "reports/figures.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace rala::report {

namespace {

const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr size_t kNumColors = sizeof kColors / sizeof kColors[0];

std::string color(size_t i) { return kColors[i % kNumColors]; }

std::string num(double v) {
  if (!std::isfinite(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

/// A string column in a gnuplot data file (double-quoted; quotes replaced).
std::string data_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += c == '"' ? '\'' : c;
  return out + "\"";
}

/// The rank files the cross-file figures compare. Files made with `--protocol paper` have figures of their own and are
/// left out of these when other rank files are given.
std::vector<const InputFile*> rank_files(const std::vector<InputFile>& inputs) {
  std::vector<const InputFile*> all, plain;
  for (const auto& in : inputs)
    if (in.kind == InputKind::rank) {
      all.push_back(&in);
      if (in.attr("protocol") != "paper") plain.push_back(&in);
    }
  return plain.empty() ? all : plain;
}

const ProbeData* find_probe(const InputFile& f, const std::string& layer, const std::string& probe) {
  const LayerData* l = f.rank.layer(layer);
  if (!l) return nullptr;
  auto it = l->probes.find(probe);
  return it == l->probes.end() ? nullptr : &it->second;
}

struct LayerKey {
  int64_t stage, block;
  std::string name;
  bool operator<(const LayerKey& o) const { return std::tie(stage, block, name) < std::tie(o.stage, o.block, o.name); }
  bool operator==(const LayerKey& o) const { return name == o.name; }
};

/// Layers (union over rank files, (stage, block) order) in which some file holds one of `probes`.
std::vector<LayerKey> layers_with(const std::vector<const InputFile*>& files, const std::vector<std::string>& probes) {
  std::set<LayerKey> keys;
  for (const auto* f : files)
    for (const auto& l : f->rank.layers)
      for (const auto& p : probes)
        if (l.probes.count(p)) keys.insert({l.stage, l.block, l.name});
  return {keys.begin(), keys.end()};
}

struct BarSeries {
  std::string title, color;
  bool light = false;                ///< lighter fill (paired bars)
  std::vector<double> mean, std;     ///< per group; NaN = no bar
};

/// Grouped bars with error bars, and a dashed bound per group.
FigureSpec grouped_bars(const std::string& name, const std::string& title, const std::string& caption,
                        const std::string& ylabel, const std::vector<std::string>& groups,
                        const std::vector<double>& bounds, const std::string& bound_title,
                        const std::vector<BarSeries>& series) {
  FigureSpec s;
  s.name = name;
  s.title = title;
  s.caption = caption;
  const size_t m = series.size(), g = groups.size();
  const double w = 0.8 / static_cast<double>(m);
  std::ostringstream data, plot;
  data << "# " << title << "\n";
  int index = 0;
  plot << "plot ";
  bool first = true;
  for (size_t j = 0; j < m; ++j) {
    const auto& se = series[j];
    data << "# series " << index << ": " << se.title << "\n# x mean std\n";
    for (size_t i = 0; i < g; ++i)
      if (std::isfinite(se.mean[i]))
        data << num(static_cast<double>(i) - 0.4 + w * (static_cast<double>(j) + 0.5)) << " " << num(se.mean[i])
             << " " << num(std::isfinite(se.std[i]) ? se.std[i] : 0.0) << "\n";
    data << "\n\n";
    plot << (first ? "" : ", \\\n     ") << "datafile index " << index << " using 1:2 with boxes fs solid "
         << (se.light ? "0.35" : "0.85") << " lc rgb \"" << se.color << "\" title " << gp_text(se.title)
         << ", \\\n     datafile index " << index << " using 1:($2-$3):(0):(2*$3) with vectors heads size screen 0.006,90 lw 1.2 lc rgb \"#222222\" notitle";
    first = false;
    ++index;
  }
  data << "# bound per group: x0 x1 value\n";
  bool any_bound = false;
  for (size_t i = 0; i < g; ++i)
    if (std::isfinite(bounds[i])) {
      data << num(i - 0.45) << " " << num(i + 0.45) << " " << num(bounds[i]) << "\n";
      any_bound = true;
    }
  if (any_bound)
    plot << ", \\\n     datafile index " << index
         << " using 1:3:($2-$1):(0) with vectors nohead dt 2 lw 2 lc rgb \"#000000\" title " << gp_text(bound_title);
  s.data = data.str();
  std::ostringstream sc;
  sc << "set title " << gp_text(title) << "\n"
     << "set style fill solid 0.85 border lc rgb \"#333333\"\n"
     << "set boxwidth " << num(w * 0.92) << " absolute\n"
     << "set xrange [-0.6:" << num(g - 0.4) << "]\n"
     << "set yrange [0:*]\nset offsets 0, 0, graph 0.08, 0\n"
     << "set xtics (";
  for (size_t i = 0; i < g; ++i) sc << (i ? ", " : "") << gp_text(groups[i]) << " " << i;
  sc << ") scale 0\n"
     << "set xlabel \"layer (stage.block)\"\n"
     << "set ylabel " << gp_text(ylabel) << "\n"
     << "set grid ytics lc rgb \"#dddddd\"\n"
     << "set key outside right top vertical\n"
     << plot.str() << "\n";
  s.script = sc.str();
  return s;
}

/// Quantile q of sorted values (linear interpolation).
double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return std::nan("");
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

std::string column_unit(const ResultsTable& t, const std::string& name) {
  return t.has_column(name) ? t.column(name).unit : "";
}

/// Value of a numeric (number or integer) column as double.
double value_at(const ResultsTable& t, const std::string& name, int64_t row) {
  const auto& c = t.column(name);
  if (c.kind == ColumnKind::number) return c.numbers[row];
  if (c.kind == ColumnKind::integer) return static_cast<double>(c.integers[row]);
  throw std::runtime_error("table column '" + name + "' is text, expected numbers");
}

}  // namespace

double loglog_slope(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<std::pair<double, double>> p;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i)
    if (x[i] > 0 && y[i] > 0 && std::isfinite(x[i]) && std::isfinite(y[i])) p.emplace_back(std::log(x[i]), std::log(y[i]));
  if (p.size() < 2) return std::nan("");
  double mx = 0, my = 0;
  for (auto [a, b] : p) mx += a, my += b;
  mx /= p.size();
  my /= p.size();
  double sxy = 0, sxx = 0;
  for (auto [a, b] : p) sxy += (a - mx) * (b - my), sxx += (a - mx) * (a - mx);
  return sxx > 0 ? sxy / sxx : std::nan("");
}

std::optional<FigureSpec> kv_buffer_rank_figure(const std::vector<InputFile>& inputs, std::string* skip) {
  const auto files = rank_files(inputs);
  const auto layers = layers_with(files, {"kv_buffer"});
  if (layers.empty()) {
    *skip = files.empty() ? "kv_buffer rank per layer: no rank file among the inputs"
                          : "kv_buffer rank per layer: no rank file holds the kv_buffer probe (softmax-only models, "
                            "or rala rank ran without --probes kv_buffer)";
    return std::nullopt;
  }
  std::vector<std::string> groups;
  std::vector<double> bounds(layers.size(), std::nan(""));
  std::vector<BarSeries> series;
  for (size_t i = 0; i < layers.size(); ++i) groups.push_back(layers[i].name);
  for (size_t j = 0; j < files.size(); ++j) {
    BarSeries se{files[j]->label, color(j), false, {}, {}};
    for (size_t i = 0; i < layers.size(); ++i) {
      const ProbeData* p = find_probe(*files[j], layers[i].name, "kv_buffer");
      const MeanStd s = p ? p->rank_stat() : MeanStd{0, std::nan(""), std::nan("")};
      se.mean.push_back(s.mean);
      se.std.push_back(s.std);
      if (p && p->k > 0) bounds[i] = std::max(std::isfinite(bounds[i]) ? bounds[i] : 0.0, static_cast<double>(p->k));
      else if (p && !std::isfinite(bounds[i])) bounds[i] = static_cast<double>(files[j]->rank.layer(layers[i].name)->head_dim);
    }
    series.push_back(std::move(se));
  }
  return grouped_bars("kv_buffer_rank", "Numerical rank of the KV buffer per layer",
                      "Numerical rank of each head's kv_buffer (d×d; cosFormer 4d×d), mean over images and heads; error bars: standard "
                      "deviation; dashed: the bound d (head dimension). Layers without a KV buffer (softmax) have no "
                      "bar.",
                      "numerical rank of kv_buffer", groups, bounds, "bound d (head dim)", series);
}

std::string spectrum_layer(const std::vector<InputFile>& inputs, const std::string& requested,
                           const std::string& probe) {
  const auto files = rank_files(inputs);
  std::set<LayerKey> all;
  for (const auto* f : files)
    for (const auto& l : f->rank.layers) all.insert({l.stage, l.block, l.name});
  if (!requested.empty()) {
    for (const auto& k : all)
      if (k.name == requested) return requested;
    std::string names;
    for (const auto& k : all) names += (names.empty() ? "" : ", ") + k.name;
    throw std::runtime_error("--layer " + requested + " is in none of the rank files (layers: " +
                             (names.empty() ? std::string("none, no rank file given") : names) + ")");
  }
  for (const auto& k : all)
    for (const auto* f : files) {
      const LayerData* l = f->rank.layer(k.name);
      if (l && l->variant != "softmax" && l->probes.count(probe)) return k.name;
    }
  return "";
}

std::optional<FigureSpec> spectrum_figure(const std::vector<InputFile>& inputs, const std::string& layer,
                                          const std::string& probe, std::string* skip) {
  const auto files = rank_files(inputs);
  if (layer.empty()) {
    *skip = "normalised spectra: no rank file has a linear-attention layer holding " + probe;
    return std::nullopt;
  }
  FigureSpec s;
  s.name = "spectrum_" + probe + "_" + layer;
  s.title = "Normalised singular values of " + probe + ", layer " + layer;
  std::ostringstream data, plot;
  data << "# " << s.title << "\n";
  int index = 0;
  bool clamped = false;
  size_t max_k = 1;
  for (size_t j = 0; j < files.size(); ++j) {
    const ProbeData* p = find_probe(*files[j], layer, probe);
    if (!p) continue;
    const auto rows = normalised_spectra(*files[j], *p);
    if (rows.empty()) continue;
    const size_t k = rows[0].size();
    max_k = std::max(max_k, k);
    data << "# " << files[j]->label << " (" << rows.size() << " matrices)\n# i median q25 q75\n";
    for (size_t i = 0; i < k; ++i) {
      std::vector<double> v;
      for (const auto& r : rows) v.push_back(r[i]);
      std::sort(v.begin(), v.end());
      double q[3] = {quantile(v, 0.5), quantile(v, 0.25), quantile(v, 0.75)};
      for (double& x : q)
        if (x < 1e-20) x = 1e-20, clamped = true;
      data << i + 1 << " " << num(q[0]) << " " << num(q[1]) << " " << num(q[2]) << "\n";
    }
    data << "\n\n";
    const std::string c = color(j);
    plot << (index ? ", \\\n     " : "") << "datafile index " << index
         << " using 1:3:4 with filledcurves fc rgb \"" << c << "\" fs transparent solid 0.2 noborder notitle, \\\n"
         << "     datafile index " << index << " using 1:2 with lines lw 2 lc rgb \"" << c << "\" title "
         << gp_text(files[j]->label + " (" + files[j]->rank.layer(layer)->variant + ")");
    ++index;
  }
  if (index == 0) {
    *skip = "normalised spectra: no rank file holds singular values of " + probe + " in layer " + layer;
    return std::nullopt;
  }
  s.data = data.str();
  s.caption = "σ_i/σ_1 of each head's " + probe + " in layer " + layer +
              ": median over images and heads (line) and inter-quartile range (band), log scale." +
              (clamped ? " Values below 1e-20 are drawn at 1e-20." : "");
  std::ostringstream sc;
  sc << "set title " << gp_text(s.title) << "\n"
     << "set logscale y\nset format y \"10^{%L}\"\n"
     << "set xlabel \"index i\"\nset ylabel \"σ_i / σ_1\"\n"
     << "set grid lc rgb \"#dddddd\"\nset key outside right top\n"
     << "set xrange [1:" << std::max<size_t>(max_k, 2) << "]\n"
     << "plot " << plot.str() << "\n";
  s.script = sc.str();
  return s;
}

std::optional<FigureSpec> gate_rank_figure(const std::vector<InputFile>& inputs, std::string* skip) {
  const auto files = rank_files(inputs);
  std::vector<LayerKey> layers;
  for (const auto& k : layers_with(files, {"output_gated"})) {
    bool both = false;
    for (const auto* f : files) both |= find_probe(*f, k.name, "output") && find_probe(*f, k.name, "output_gated");
    if (both) layers.push_back(k);
  }
  if (layers.empty()) {
    *skip = "output rank before vs after the gate: no rank file holds both output and output_gated";
    return std::nullopt;
  }
  std::vector<std::string> groups;
  std::vector<double> bounds(layers.size(), std::nan(""));
  for (const auto& l : layers) groups.push_back(l.name);
  std::vector<BarSeries> series;
  for (size_t j = 0; j < files.size(); ++j)
    for (const char* probe : {"output", "output_gated"}) {
      BarSeries se{files[j]->label + (std::string(probe) == "output" ? " before gate" : " after gate"), color(j),
                   std::string(probe) == "output", {}, {}};
      for (size_t i = 0; i < layers.size(); ++i) {
        const ProbeData* p = find_probe(*files[j], layers[i].name, probe);
        const MeanStd s = p ? p->rank_stat() : MeanStd{0, std::nan(""), std::nan("")};
        se.mean.push_back(s.mean);
        se.std.push_back(s.std);
        if (p && p->k > 0) bounds[i] = std::max(std::isfinite(bounds[i]) ? bounds[i] : 0.0, static_cast<double>(p->k));
      }
      bool any = false;
      for (double v : se.mean) any |= std::isfinite(v);
      if (any) series.push_back(std::move(se));
    }
  return grouped_bars("gate_rank", "Output rank before vs after the gate",
                      "Numerical rank of each head's N×d output before the gate (output, light) and after it "
                      "(output_gated, solid), mean over images and heads; error bars: standard deviation; dashed: "
                      "the bound min(N, d).",
                      "numerical rank of the output", groups, bounds, "bound min(N, d)", series);
}

std::optional<FigureSpec> paper_rank_figure(const InputFile& input, const std::string& name, bool full_map,
                                            std::string* skip) {
  struct Bar {
    const char* probe;
    const char* title;
    bool light;
    size_t color;
  };
  const std::vector<Bar> bars =
      full_map ? std::vector<Bar>{{"output_all_heads", "output before the gate", true, 2},
                                  {"output_gated_all_heads", "output after the gate", false, 2}}
               : std::vector<Bar>{{"kv_buffer_unweighted", "KV buffer without α (linear)", true, 0},
                                  {"kv_buffer", "KV buffer with α (RALA)", false, 0},
                                  {"output", "output before the gate", true, 2},
                                  {"output_gated", "output after the gate", false, 2}};
  std::vector<const LayerData*> layers;
  for (const auto& l : input.rank.layers)
    for (const auto& b : bars)
      if (l.probes.count(b.probe)) {
        layers.push_back(&l);
        break;
      }
  if (layers.empty()) {
    *skip = std::string("paper protocol ranks (") + input.path + "): the file holds none of the paper probes" +
            (full_map ? " for the full map (output_all_heads, output_gated_all_heads)" : "");
    return std::nullopt;
  }
  std::vector<std::string> groups;
  std::vector<double> bounds;
  for (const auto* l : layers) {
    groups.push_back(l->name + " " + l->variant);
    double bound = std::nan("");
    for (const auto& b : bars) {
      auto it = l->probes.find(b.probe);
      if (it != l->probes.end() && it->second.k > 0)
        bound = std::max(std::isfinite(bound) ? bound : 0.0, static_cast<double>(it->second.k));
    }
    bounds.push_back(bound);
  }
  std::vector<BarSeries> series;
  for (const auto& b : bars) {
    BarSeries se{b.title, color(b.color), b.light, {}, {}};
    bool any = false;
    for (const auto* l : layers) {
      auto it = l->probes.find(b.probe);
      const MeanStd s = it != l->probes.end() ? it->second.rank_stat() : MeanStd{0, std::nan(""), std::nan("")};
      se.mean.push_back(s.mean);
      se.std.push_back(s.std);
      any |= std::isfinite(s.mean);
    }
    if (any) series.push_back(std::move(se));
  }
  auto spec = grouped_bars(
      name,
      std::string(full_map ? "Rank of the whole output map: " : "Rank per head, the paper's Figure 2: ") + input.label,
      std::string("Numerical rank (numpy rule: σ_max·max(m, n)·eps of float32) of ") +
          (full_map ? "each layer's whole N×C output before and after the gate"
                    : "each head's d×d KV buffer without α (the buffer a linear attention on the same keys holds) and "
                      "with α, and of its N×d output before and after the gate; softmax layers show their outputs as "
                      "the reference") +
          "; mean over the " + std::to_string(input.rank.num_images) + " images" +
          (full_map ? "" : " and the heads") + " of " + input.path + "; error bars: standard deviation; dashed: the bound.",
      "numerical rank", groups, bounds, full_map ? "bound min(N, C)" : "bound min(m, n)", series);
  return spec;
}

std::optional<FigureSpec> head_heatmap_figure(const InputFile& input, const std::string& name,
                                              const std::string& probe, std::string* skip) {
  struct Cell {
    size_t layer;
    int64_t head;
    double value;
  };
  std::vector<Cell> cells;
  std::vector<std::string> layer_names;
  int64_t max_heads = 0;
  for (const auto& l : input.rank.layers) {
    auto it = l.probes.find(probe);
    if (it == l.probes.end()) continue;
    const ProbeData& p = it->second;
    for (int64_t h = 0; h < p.heads; ++h) {
      std::vector<double> v;
      std::vector<uint8_t> ok;
      for (int64_t n = 0; n < p.images; ++n) {
        v.push_back(p.effective_rank[n * p.heads + h]);
        ok.push_back(p.ok[n * p.heads + h]);
      }
      cells.push_back({layer_names.size(), h, mean_std(v, ok).mean});
    }
    max_heads = std::max(max_heads, p.heads);
    layer_names.push_back(l.name + " " + l.variant);
  }
  if (cells.empty()) {
    *skip = "effective rank per head (" + input.label + "): the file holds no " + probe + " probe";
    return std::nullopt;
  }
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& c : cells)
    if (std::isfinite(c.value)) lo = std::min(lo, c.value), hi = std::max(hi, c.value);
  FigureSpec s;
  s.name = name;
  s.title = "Effective rank of " + probe + " per head: " + input.label;
  s.caption = "Effective rank exp(H(σ/Σσ)) of each head's " + probe + ", mean over the " +
              std::to_string(input.rank.num_images) + " images of " + input.path + "; rows: layers, columns: heads.";
  const int64_t rows = static_cast<int64_t>(layer_names.size());
  s.height = std::max<int>(320, static_cast<int>(120 + 50 * rows));
  s.width = std::max<int>(560, static_cast<int>(260 + 70 * max_heads));
  std::ostringstream data;
  data << "# " << s.title << "\n# head layer_index value dark_cell text\n";
  for (const auto& c : cells) {
    if (!std::isfinite(c.value)) continue;
    const bool dark = hi > lo && (c.value - lo) / (hi - lo) > 0.6;
    data << c.head << " " << c.layer << " " << num(c.value) << " " << (dark ? 1 : 0) << " \""
         << fixed(c.value, c.value < 10 ? 2 : 1) << "\"\n";
  }
  s.data = data.str();
  std::ostringstream sc;
  sc << "set title " << gp_text(s.title) << "\n"
     << "set xrange [-0.5:" << num(max_heads - 0.5) << "]\n"
     << "set yrange [" << num(rows - 0.5) << ":-0.5]\n"
     << "set xtics 1 scale 0\nset xlabel \"head\"\n"
     << "set ytics (";
  for (int64_t i = 0; i < rows; ++i) sc << (i ? ", " : "") << gp_text(layer_names[i]) << " " << i;
  sc << ") scale 0\nset ylabel \"layer\"\n"
     << "set palette defined (0 \"#fff7bc\", 0.5 \"#41b6c4\", 1 \"#0c2c84\")\n"
     << "set cblabel \"effective rank\"\n"
     << (hi > lo ? "set cbrange [" + num(lo) + ":" + num(hi) + "]\n" : "")
     << "unset key\nset style fill solid 1 noborder\n"
     << "plot datafile using 1:2:(0.48):(0.48):3 with boxxyerror fc palette, \\\n"
     << "     datafile using 1:($4 > 0 ? $2 : NaN):5 with labels tc rgb \"white\", \\\n"
     << "     datafile using 1:($4 > 0 ? NaN : $2):5 with labels tc rgb \"black\"\n";
  s.script = sc.str();
  return s;
}

std::optional<FigureSpec> ablation_figure(const InputFile& input, const std::string& name, std::string* skip) {
  const auto& t = input.table;
  for (const char* c : {"config", "top1_mean", "kv_buffer_effective_rank"})
    if (!t.has_column(c)) {
      *skip = "top-1 vs kv_buffer effective rank (" + input.path + "): the table has no column " + c;
      return std::nullopt;
    }
  // Points are numbered; the numbers are keyed to the configuration names beside the plot, so a dozen configurations
  // and more stay readable (names as point labels overlap).
  std::ostringstream data;
  data << "# kv_buffer_effective_rank top1_mean top1_std number config\n";
  std::vector<std::string> names;
  for (int64_t r = 0; r < t.rows(); ++r) {
    const double x = value_at(t, "kv_buffer_effective_rank", r), y = value_at(t, "top1_mean", r);
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    const double e = t.has_column("top1_std") ? value_at(t, "top1_std", r) : 0.0;
    names.push_back(t.column("config").texts[r]);
    data << num(x) << " " << num(y) << " " << num(std::isfinite(e) ? e : 0.0) << " " << names.size() << " "
         << data_string(names.back()) << "\n";
  }
  if (names.empty()) {
    *skip = "top-1 vs kv_buffer effective rank (" + input.path + "): no row has both values";
    return std::nullopt;
  }
  FigureSpec s;
  s.name = name;
  s.title = "Ablation: top-1 accuracy vs KV-buffer effective rank";
  s.caption = "One numbered point per configuration of " + input.path +
              " (key on the right): top-1 (mean over seeds, error bars: std) against the kv_buffer effective rank "
              "(mean over the summary layers). Configurations without a KV buffer (softmax) are not drawn.";
  s.data = data.str();
  const std::string unit = column_unit(t, "top1_mean");
  std::ostringstream sc;
  sc << "set title " << gp_text(s.title) << "\n"
     << "set xlabel \"mean kv\\\\_buffer effective rank\"\n"
     << "set ylabel " << gp_text("top-1 accuracy" + (unit.empty() ? "" : " (" + unit + ")")) << "\n"
     << "set grid lc rgb \"#dddddd\"\nset offsets graph 0.08, graph 0.08, graph 0.12, graph 0.08\nunset key\n"
     << "set rmargin at screen 0.72\n";
  const double step = std::min(0.05, 0.8 / static_cast<double>(names.size()));
  for (size_t i = 0; i < names.size(); ++i)
    sc << "set label " << i + 1 << " " << gp_text(std::to_string(i + 1) + "  " + names[i]) << " at screen 0.74, screen "
       << num(0.9 - step * static_cast<double>(i)) << " left noenhanced font \",9\"\n";
  sc << "plot datafile using 1:2:3 with yerrorbars pt 7 ps 1.2 lc rgb \"" << color(0) << "\", \\\n"
     << "     datafile using 1:2:(sprintf(\"%d\", $4)) with labels left offset 0.7,0.7 font \",9\"\n";
  s.script = sc.str();
  return s;
}

std::optional<FigureSpec> scaling_figure(const InputFile& input, const std::string& name, std::string* skip) {
  const auto& t = input.table;
  const bool attention = input.kind == InputKind::bench_attention;
  const std::string xcol = attention ? "tokens" : "image_size";
  const std::string y1 = attention ? "time_ms" : "images_per_s";
  const std::string y2 = "peak_memory_mb";
  const std::vector<std::string> key_cols =
      attention ? std::vector<std::string>{"variant", "channels"}
                : std::vector<std::string>{"pattern", "model", "mode", "dtype", "device", "threads", "batch"};
  for (const auto& c : {xcol, y1})
    if (!t.has_column(c)) {
      *skip = "scaling (" + input.path + "): the table has no column " + c;
      return std::nullopt;
    }
  const bool has_mem = t.has_column(y2);
  // Line key: the first key column always, the others when they vary.
  std::vector<std::string> used;
  for (size_t i = 0; i < key_cols.size(); ++i) {
    if (!t.has_column(key_cols[i])) continue;
    std::set<std::string> values;
    for (int64_t r = 0; r < t.rows(); ++r) values.insert(t.cell_text(key_cols[i], r));
    if (i == 0 || values.size() > 1) used.push_back(key_cols[i]);
  }
  std::map<std::string, std::vector<int64_t>> lines;
  std::vector<std::string> order;
  for (int64_t r = 0; r < t.rows(); ++r) {
    std::string key;
    for (const auto& c : used) {
      std::string v = t.cell_text(c, r);
      if (c == "threads") v += " threads";
      if (c == "batch") v = "batch " + v;
      key += (key.empty() ? "" : " ") + v;
    }
    if (!lines.count(key)) order.push_back(key);
    lines[key].push_back(r);
  }
  std::ostringstream data, p1, p2;
  data << "# " << xcol << " " << y1 << " " << y2 << " (one block per line)\n";
  int index = 0;
  for (size_t j = 0; j < order.size(); ++j) {
    auto rows = lines[order[j]];
    std::sort(rows.begin(), rows.end(),
              [&](int64_t a, int64_t b) { return value_at(t, xcol, a) < value_at(t, xcol, b); });
    std::vector<double> x, a, b;
    data << "# " << order[j] << "\n";
    for (auto r : rows) {
      x.push_back(value_at(t, xcol, r));
      a.push_back(value_at(t, y1, r));
      b.push_back(has_mem ? value_at(t, y2, r) : std::nan(""));
      data << num(x.back()) << " " << num(a.back()) << " " << num(b.back()) << "\n";
    }
    data << "\n\n";
    auto slope_text = [](double s) { return std::isfinite(s) ? " (slope " + fixed(s, 2) + ")" : std::string(); };
    const std::string c = color(j);
    p1 << (index ? ", \\\n     " : "") << "datafile index " << index << " using 1:2 with linespoints lw 2 pt 7 lc rgb \""
       << c << "\" title " << gp_text(order[j] + slope_text(loglog_slope(x, a)));
    p2 << (index ? ", \\\n     " : "") << "datafile index " << index << " using 1:3 with linespoints lw 2 pt 7 lc rgb \""
       << c << "\" title " << gp_text(order[j] + slope_text(loglog_slope(x, b)));
    ++index;
  }
  if (index == 0) {
    *skip = "scaling (" + input.path + "): the table has no rows";
    return std::nullopt;
  }
  FigureSpec s;
  s.name = name;
  s.width = has_mem ? 1200 : 700;
  s.height = 520;
  const std::string xlabel = attention ? "tokens N" : "image size (pixels per side)";
  const std::string y1label = attention ? "time per forward (ms)" : "throughput (images/s)";
  s.title = attention ? "Attention alone: time and peak memory vs tokens" : "Throughput and peak memory vs image size";
  s.caption = "From " + input.path + ", log-log; one line per " + used.front() +
              (used.size() > 1 ? " (and the other settings that vary)" : "") +
              "; legend: least-squares slope of log y on log x.";
  s.data = data.str();
  std::set<double> xs;
  for (int64_t r = 0; r < t.rows(); ++r)
    if (value_at(t, xcol, r) > 0) xs.insert(value_at(t, xcol, r));
  std::ostringstream sc;
  sc << "set logscale xy\nset grid lc rgb \"#dddddd\"\nset key top left box opaque\n"
     << "set xlabel " << gp_text(xlabel) << "\n";
  if (!xs.empty()) sc << "set xrange [" << num(*xs.begin() / 1.25) << ":" << num(*xs.rbegin() * 1.25) << "]\n";
  if (!xs.empty() && xs.size() <= 10) {
    sc << "set xtics (";
    bool first_tic = true;
    for (double v : xs) sc << (first_tic ? "" : ", ") << num(v), first_tic = false;
    sc << ")\n";
  }
  if (has_mem) sc << "set multiplot layout 1,2 title " << gp_text(s.title) << "\n";
  else sc << "set title " << gp_text(s.title) << "\n";
  sc << "set ylabel " << gp_text(y1label) << "\n"
     << "plot " << p1.str() << "\n";
  if (has_mem)
    sc << "set ylabel \"peak memory (MB)\"\n"
       << "plot " << p2.str() << "\n"
       << "unset multiplot\n";
  s.script = sc.str();
  return s;
}

std::optional<FigureSpec> training_figure(const std::vector<InputFile>& inputs, std::string* skip) {
  std::ostringstream data, plot;
  int index = 0;
  for (const auto& in : inputs) {
    if (in.kind != InputKind::train || !in.table.has_column("epoch") || !in.table.has_column("test_top1")) continue;
    const auto& t = in.table;
    const bool ema = t.has_column("test_top1_ema");
    data << "# " << in.path << "\n# epoch test_top1 test_top1_ema\n";
    for (int64_t r = 0; r < t.rows(); ++r)
      data << num(value_at(t, "epoch", r)) << " " << num(value_at(t, "test_top1", r)) << " "
           << num(ema ? value_at(t, "test_top1_ema", r) : std::nan("")) << "\n";
    data << "\n\n";
    const std::string c = color(static_cast<size_t>(index));
    plot << (index ? ", \\\n     " : "") << "datafile index " << index << " using 1:2 with linespoints lw 2 pt 7 lc rgb \""
         << c << "\" title " << gp_text(in.label);
    if (ema)
      plot << ", \\\n     datafile index " << index << " using 1:3 with lines lw 2 dt 2 lc rgb \"" << c
           << "\" title " << gp_text(in.label + " EMA");
    ++index;
  }
  if (index == 0) {
    *skip = "training curve: no training table (epoch, test_top1) among the inputs";
    return std::nullopt;
  }
  FigureSpec s;
  s.name = "training_top1";
  s.title = "Test top-1 per epoch";
  s.caption = "Test top-1 accuracy after each epoch (dashed: the EMA weights), one line per training run.";
  s.data = data.str();
  std::ostringstream sc;
  sc << "set title " << gp_text(s.title) << "\nset xlabel \"epoch\"\nset ylabel \"test top-1 (%)\"\n"
     << "set grid lc rgb \"#dddddd\"\nset key bottom right\n"
     << "plot " << plot.str() << "\n";
  s.script = sc.str();
  return s;
}

}  // namespace rala::report
