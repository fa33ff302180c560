#include "reports/tables.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace rala::report {

namespace {

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string full(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string pm(const MeanStd& s) { return s.count ? fixed(s.mean, 2) + " ± " + fixed(s.std, 2) : "–"; }

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string latex_escape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (s.compare(i, 2, "±") == 0) {
      out += "$\\pm$";
      ++i;
      continue;
    }
    if (s.compare(i, 3, "–") == 0) {
      out += "--";
      i += 2;
      continue;
    }
    switch (c) {
      case '_': case '%': case '&': case '#': case '$': case '{': case '}': out += '\\'; out += c; break;
      case '~': out += "\\textasciitilde{}"; break;
      case '^': out += "\\textasciicircum{}"; break;
      case '\\': out += "\\textbackslash{}"; break;
      default: out += c;
    }
  }
  return out;
}

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

ReportTable rank_summary_table(const std::vector<InputFile>& inputs) {
  ReportTable t;
  t.name = "rank_summary";
  t.title = "Rank summary: numerical rank and effective rank, mean ± std over images and heads";
  std::vector<const InputFile*> files;
  for (const auto& in : inputs)
    if (in.kind == InputKind::rank) files.push_back(&in);
  t.header = {"probe", "layer", "tokens N", "head dim d"};
  t.numeric = {false, false, true, true};
  for (const auto* f : files) {
    t.header.push_back(f->label + " rank");
    t.header.push_back(f->label + " eff. rank");
    t.numeric.push_back(true);
    t.numeric.push_back(true);
  }
  // Rows: probes in a fixed order (known ones first), layers in (stage, block) order over the union of files.
  std::vector<std::string> probes;
  for (const char* p : {"kv_buffer", "output", "output_gated", "attention", "output_all_heads",
                        "output_gated_all_heads"})
    probes.push_back(p);
  for (const auto* f : files)
    for (const auto& l : f->rank.layers)
      for (const auto& [p, _] : l.probes)
        if (std::find(probes.begin(), probes.end(), p) == probes.end()) probes.push_back(p);
  std::vector<std::pair<std::pair<int64_t, int64_t>, std::string>> layer_order;
  for (const auto* f : files)
    for (const auto& l : f->rank.layers) {
      auto key = std::make_pair(std::make_pair(l.stage, l.block), l.name);
      if (std::find(layer_order.begin(), layer_order.end(), key) == layer_order.end()) layer_order.push_back(key);
    }
  std::sort(layer_order.begin(), layer_order.end());

  std::ostringstream csv;
  csv << "probe,layer,file,label,variant,tokens,head_dim,count,rank_mean,rank_std,effective_rank_mean,"
         "effective_rank_std\n";
  for (const auto& probe : probes)
    for (const auto& [_, layer] : layer_order) {
      std::vector<std::string> row = {probe, layer, "", ""};
      bool any = false;
      for (const auto* f : files) {
        const LayerData* l = f->rank.layer(layer);
        const ProbeData* p = nullptr;
        if (l) {
          auto it = l->probes.find(probe);
          if (it != l->probes.end()) p = &it->second;
        }
        if (!p) {
          row.push_back("–");
          row.push_back("–");
          continue;
        }
        any = true;
        if (row[2].empty()) {
          row[2] = std::to_string(l->tokens);
          row[3] = std::to_string(l->head_dim);
        }
        const MeanStd r = p->rank_stat(), e = p->effective_rank_stat();
        row.push_back(pm(r));
        row.push_back(pm(e));
        csv << probe << "," << layer << "," << csv_quote(f->path) << "," << csv_quote(f->label) << ","
            << csv_quote(l->variant) << "," << l->tokens << "," << l->head_dim << "," << r.count << "," << full(r.mean)
            << "," << full(r.std) << "," << full(e.mean) << "," << full(e.std) << "\n";
      }
      if (any) t.rows.push_back(std::move(row));
    }
  t.csv = csv.str();
  return t;
}

std::string format_cell(double v, const std::string& column, const std::string& unit) {
  if (std::isnan(v)) return "–";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  int decimals = -1;
  if (unit == "%" || column.find("rank") != std::string::npos || unit == "ms")
    decimals = 2;
  else if (unit == "MB" || unit == "MiB" || unit == "images/s" || unit == "GFLOP/s" || column == "images_per_s" ||
           column == "peak_memory_mb" || column.find("gflops") != std::string::npos)
    decimals = 1;
  else if (column.find("ratio") != std::string::npos)
    decimals = 3;
  else if (unit == "s" || column == "seconds")
    decimals = 1;
  if (decimals >= 0) return fixed(v, decimals);
  // 4 significant digits (exponent only below 1e-4); whole numbers from 10^4 on.
  if (std::fabs(v) >= 1e4) return fixed(v, 0);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

ReportTable display_table(const InputFile& input, const std::string& name) {
  ReportTable t;
  t.name = name;
  const auto& tab = input.table;
  t.title = std::string(kind_name(input.kind)) + " table: " + input.path;
  for (const auto& c : tab.columns()) {
    t.header.push_back(c.unit.empty() ? c.name : c.name + " (" + c.unit + ")");
    t.numeric.push_back(c.kind != ColumnKind::text);
  }
  for (int64_t r = 0; r < tab.rows(); ++r) {
    std::vector<std::string> row;
    for (const auto& c : tab.columns()) {
      switch (c.kind) {
        case ColumnKind::number: row.push_back(format_cell(c.numbers[r], c.name, c.unit)); break;
        case ColumnKind::integer: row.push_back(std::to_string(c.integers[r])); break;
        case ColumnKind::text: row.push_back(c.texts[r]); break;
      }
    }
    t.rows.push_back(std::move(row));
  }
  t.csv = tab.to_csv();
  return t;
}

std::string to_markdown(const ReportTable& t) {
  std::ostringstream out;
  out << "|";
  for (const auto& h : t.header) out << " " << md_escape(h) << " |";
  out << "\n|";
  for (size_t j = 0; j < t.header.size(); ++j) out << (t.numeric[j] ? "---:|" : "---|");
  out << "\n";
  for (const auto& row : t.rows) {
    out << "|";
    for (const auto& c : row) out << " " << md_escape(c) << " |";
    out << "\n";
  }
  return out.str();
}

std::string to_latex(const ReportTable& t) {
  std::ostringstream out;
  out << "% " << latex_escape(t.title) << "\n% needs \\usepackage{booktabs}\n\\begin{tabular}{";
  for (size_t j = 0; j < t.header.size(); ++j) out << (t.numeric[j] ? "r" : "l");
  out << "}\n\\toprule\n";
  for (size_t j = 0; j < t.header.size(); ++j) out << (j ? " & " : "") << latex_escape(t.header[j]);
  out << " \\\\\n\\midrule\n";
  for (const auto& row : t.rows) {
    for (size_t j = 0; j < row.size(); ++j) out << (j ? " & " : "") << latex_escape(row[j]);
    out << " \\\\\n";
  }
  out << "\\bottomrule\n\\end{tabular}\n";
  return out.str();
}

std::string to_html(const ReportTable& t) {
  std::ostringstream out;
  out << "<table>\n<caption>" << html_escape(t.title) << "</caption>\n<thead><tr>";
  for (size_t j = 0; j < t.header.size(); ++j)
    out << "<th" << (t.numeric[j] ? " class=\"num\"" : "") << ">" << html_escape(t.header[j]) << "</th>";
  out << "</tr></thead>\n<tbody>\n";
  for (const auto& row : t.rows) {
    out << "<tr>";
    for (size_t j = 0; j < row.size(); ++j)
      out << "<td" << (t.numeric[j] ? " class=\"num\"" : "") << ">" << html_escape(row[j]) << "</td>";
    out << "</tr>\n";
  }
  out << "</tbody>\n</table>\n";
  return out.str();
}

}  // namespace rala::report
