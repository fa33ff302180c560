#include "reports/report.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace rala::report {

namespace {

namespace fs = std::filesystem;

std::string safe_stem(const std::string& path) {
  std::string out;
  for (char c : fs::path(path).stem().string())
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.') ? c : '-';
  return out.empty() ? "input" : out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string base64(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int k = 3; k >= 0; --k) out += table[(v >> (6 * k)) & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += table[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
}

/// A gnuplot SVG made fit for inlining: the XML prolog dropped, and every id (and reference to it) prefixed so that
/// several figures on one page do not share clip paths or markers.
std::string inline_svg(const std::string& svg, const std::string& prefix) {
  const size_t start = svg.find("<svg");
  if (start == std::string::npos) return "";
  std::string s = svg.substr(start);
  for (const char* q : {"'", "\""}) {
    replace_all(s, std::string("id=") + q, std::string("id=") + q + prefix);
    replace_all(s, std::string("href=") + q + "#", std::string("href=") + q + "#" + prefix);
  }
  replace_all(s, "url(#", "url(#" + prefix);
  return s;
}

const char* kCss = R"(body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 1.5em auto;
       padding: 0 1.2em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
figure { margin: 1em 0 0.3em 0; }
figure svg, figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; }
.files { font-size: 0.85em; color: #555; margin: 0.2em 0 1.5em 0; }
.files a { margin-right: 0.7em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
caption { caption-side: top; text-align: left; font-weight: bold; padding-bottom: 0.3em; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
thead th { border-top: 2px solid #444; border-bottom: 1.5px solid #444; }
tbody tr:last-child td { border-bottom: 2px solid #444; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.prov td:first-child { color: #555; white-space: nowrap; }
table.prov td { font-family: "DejaVu Sans Mono", monospace; font-size: 0.95em; word-break: break-all; }
.note { color: #8a4b00; }
code { background: #f4f4f4; padding: 0 0.2em; }
)";

/// Provenance attrs shown first (then every other root attr).
const std::vector<std::string> kProvenanceOrder = {
    "command_line", "git_commit", "tool_version", "torch_version", "created_utc", "table_kind", "model",
    "attn_pattern", "attn_settings", "weights", "dataset", "num_images", "image_size", "tolerance_rule",
    "threads", "device", "dtype", "schema_version"};

std::vector<std::pair<std::string, std::string>> ordered_attrs(const InputFile& in) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& k : kProvenanceOrder)
    for (const auto& a : in.attrs)
      if (a.first == k) out.push_back(a);
  for (const auto& a : in.attrs)
    if (std::find(kProvenanceOrder.begin(), kProvenanceOrder.end(), a.first) == kProvenanceOrder.end())
      out.push_back(a);
  return out;
}

std::string utc_now_text() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

std::string describe_input(const InputFile& in) {
  if (in.kind == InputKind::rank)
    return "rank file: " + in.attr("model") + " " + in.attr("attn_pattern") + ", " +
           std::to_string(in.rank.layers.size()) + " layers, " + std::to_string(in.rank.num_images) + " images";
  return std::string(kind_name(in.kind)) + " table: " + std::to_string(in.table.rows()) + " rows, " +
         std::to_string(in.table.columns().size()) + " columns";
}

std::string html_page(const ReportResult& r, const std::vector<InputFile>& inputs, const std::string& out_dir,
                      const std::string& command) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    << "<title>RALA Lab report</title>\n<style>\n" << kCss << "</style>\n</head>\n<body>\n"
    << "<h1>RALA Lab report</h1>\n<p>Made " << html_escape(utc_now_text()) << " from " << inputs.size()
    << " input file" << (inputs.size() == 1 ? "" : "s") << (command.empty() ? "" : " by <code>" + html_escape(command) + "</code>")
    << ". Every figure is rendered by gnuplot from the <code>.dat</code> and <code>.gp</code> files linked below it "
       "(<code>cd figures &amp;&amp; gnuplot NAME.gp</code>); every table is also in Markdown, LaTeX (booktabs) and "
       "CSV.</p>\n<ul>\n";
  for (const auto& f : r.figures) h << "<li><a href=\"#fig-" << f.name << "\">" << html_escape(f.title) << "</a></li>\n";
  for (const auto& t : r.tables) h << "<li><a href=\"#table-" << t.name << "\">" << html_escape(t.title) << "</a></li>\n";
  h << "<li><a href=\"#inputs\">Inputs and provenance</a></li>\n</ul>\n";

  h << "<h2>Figures</h2>\n";
  if (r.figures.empty()) h << "<p>No figure could be made from these inputs.</p>\n";
  int counter = 0;
  for (const auto& f : r.figures) {
    ++counter;
    h << "<section id=\"fig-" << f.name << "\">\n<h3>" << counter << ". " << html_escape(f.title) << "</h3>\n<figure>\n";
    const auto has = [&](const char* fmt) { return std::find(f.formats.begin(), f.formats.end(), fmt) != f.formats.end(); };
    const fs::path dir = fs::path(out_dir) / "figures";
    if (has("svg"))
      h << inline_svg(read_file((dir / f.file("svg")).string()), "f" + std::to_string(counter) + "_") << "\n";
    else if (has("png"))
      h << "<img alt=\"" << html_escape(f.title) << "\" src=\"data:image/png;base64,"
        << base64(read_file((dir / f.file("png")).string())) << "\">\n";
    else
      h << "<p><a href=\"figures/" << f.file("pdf") << "\">" << f.file("pdf") << "</a></p>\n";
    h << "<figcaption>" << html_escape(f.caption) << "</figcaption>\n</figure>\n<p class=\"files\">Files: ";
    for (const auto& fmt : f.formats) h << "<a href=\"figures/" << f.file(fmt) << "\">" << f.file(fmt) << "</a>\n";
    h << "<a href=\"figures/" << f.name << ".gp\">" << f.name << ".gp</a>\n<a href=\"figures/" << f.name << ".dat\">"
      << f.name << ".dat</a></p>\n</section>\n";
  }
  if (!r.notes.empty()) {
    h << "<h3>Figures not made</h3>\n<ul>\n";
    for (const auto& n : r.notes) h << "<li class=\"note\">" << html_escape(n) << "</li>\n";
    h << "</ul>\n";
  }

  h << "<h2>Tables</h2>\n";
  if (r.tables.empty()) h << "<p>No tables.</p>\n";
  for (const auto& t : r.tables) {
    h << "<section id=\"table-" << t.name << "\">\n<div class=\"scroll\">\n" << to_html(t) << "</div>\n"
      << "<p class=\"files\">Files: ";
    for (const char* ext : {"md", "tex", "csv"})
      h << "<a href=\"tables/" << t.name << "." << ext << "\">" << t.name << "." << ext << "</a>\n";
    h << "</p>\n</section>\n";
  }

  h << "<h2 id=\"inputs\">Inputs and provenance</h2>\n";
  for (const auto& in : inputs) {
    h << "<h3>" << html_escape(in.path) << "</h3>\n<p>" << html_escape(describe_input(in)) << "</p>\n"
      << "<div class=\"scroll\"><table class=\"prov\"><tbody>\n";
    for (const auto& [k, v] : ordered_attrs(in))
      h << "<tr><td>" << html_escape(k) << "</td><td>" << html_escape(v) << "</td></tr>\n";
    h << "</tbody></table></div>\n";
  }
  h << "</body>\n</html>\n";
  return h.str();
}

std::string markdown_page(const ReportResult& r, const std::vector<InputFile>& inputs, const std::string& command) {
  std::ostringstream m;
  m << "# RALA Lab report\n\nMade " << utc_now_text() << " from " << inputs.size() << " input file"
    << (inputs.size() == 1 ? "" : "s") << (command.empty() ? "" : " by `" + command + "`")
    << ". The same content, self-contained, is in [report.html](report.html).\n\n## Figures\n\n";
  int counter = 0;
  for (const auto& f : r.figures) {
    ++counter;
    m << "### " << counter << ". " << f.title << "\n\n";
    const auto has = [&](const char* fmt) { return std::find(f.formats.begin(), f.formats.end(), fmt) != f.formats.end(); };
    const std::string shown = has("png") ? f.file("png") : has("svg") ? f.file("svg") : f.file("pdf");
    m << "![" << f.title << "](figures/" << shown << ")\n\n" << f.caption << "\n\nFiles:";
    for (const auto& fmt : f.formats) m << " [" << f.file(fmt) << "](figures/" << f.file(fmt) << ")";
    m << " [" << f.name << ".gp](figures/" << f.name << ".gp) [" << f.name << ".dat](figures/" << f.name << ".dat)\n\n";
  }
  if (!r.notes.empty()) {
    m << "### Figures not made\n\n";
    for (const auto& n : r.notes) m << "- " << n << "\n";
    m << "\n";
  }
  m << "## Tables\n\n";
  for (const auto& t : r.tables) {
    m << "### " << t.title << "\n\n" << to_markdown(t) << "\nFiles: [" << t.name << ".md](tables/" << t.name
      << ".md) [" << t.name << ".tex](tables/" << t.name << ".tex) [" << t.name << ".csv](tables/" << t.name
      << ".csv)\n\n";
  }
  m << "## Inputs and provenance\n\n";
  for (const auto& in : inputs) {
    m << "### " << in.path << "\n\n" << describe_input(in) << "\n\n";
    for (const auto& [k, v] : ordered_attrs(in)) m << "- " << k << ": `" << v << "`\n";
    m << "\n";
  }
  return m.str();
}

}  // namespace

std::vector<std::string> parse_formats(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string f;
  while (std::getline(ss, f, ',')) {
    if (f.empty()) continue;
    if (f != "png" && f != "svg" && f != "pdf")
      throw std::runtime_error("--format: unknown figure format '" + f + "' (expected a comma list of png, svg, pdf)");
    if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  }
  if (out.empty()) throw std::runtime_error("--format: no figure format given (expected a comma list of png, svg, pdf)");
  return out;
}

ReportResult make_report(const ReportOptions& o) {
  if (o.inputs.empty()) throw std::runtime_error("no input files given (expected results files: rank or table .h5)");
  if (o.out.empty()) throw std::runtime_error("--out DIR is required");
  for (const auto& f : o.formats)
    if (f != "png" && f != "svg" && f != "pdf")
      throw std::runtime_error("unknown figure format '" + f + "' (expected png, svg or pdf)");
  auto log = [&](const std::string& line) {
    if (!o.quiet) std::fprintf(stderr, "report: %s\n", line.c_str());
  };

  // Everything that can be refused is checked before anything is written.
  std::vector<InputFile> inputs;
  for (const auto& p : o.inputs) inputs.push_back(load_input(p));
  assign_labels(inputs);
  const std::string gnuplot = find_gnuplot();
  bool any_rank = false;
  std::set<std::string> probes;
  for (const auto& in : inputs)
    if (in.kind == InputKind::rank) {
      any_rank = true;
      for (const auto& l : in.rank.layers)
        for (const auto& [p, _] : l.probes) probes.insert(p);
    }
  const std::string probe = o.probe.empty() ? "kv_buffer" : o.probe;
  if (!o.probe.empty() && any_rank && !probes.count(o.probe)) {
    std::string names;
    for (const auto& p : probes) names += (names.empty() ? "" : ", ") + p;
    throw std::runtime_error("--probe " + o.probe + " is in none of the rank files (probes: " + names + ")");
  }
  if (!o.layer.empty() && !any_rank)
    throw std::runtime_error("--layer " + o.layer + " given, but no input is a rank file");
  const std::string layer = any_rank ? spectrum_layer(inputs, o.layer, probe) : "";

  const fs::path out(o.out), fig_dir = out / "figures", tab_dir = out / "tables";
  if (fs::exists(out) && !fs::is_directory(out))
    throw std::runtime_error("--out '" + o.out + "' exists and is not a directory");
  fs::create_directories(fig_dir);
  fs::create_directories(tab_dir);

  ReportResult r;
  std::map<InputKind, int> count;
  for (const auto& in : inputs) ++count[in.kind];
  auto per_file_name = [&](const std::string& base, const InputFile& in) {
    return count[in.kind] > 1 ? base + "_" + safe_stem(in.path) : base;
  };

  std::vector<FigureSpec> specs;
  auto add = [&](std::optional<FigureSpec> spec, const std::string& why) {
    if (spec)
      specs.push_back(std::move(*spec));
    else
      r.notes.push_back(why);
  };
  std::string why;
  if (any_rank) {
    add(kv_buffer_rank_figure(inputs, &why), why);
    add(spectrum_figure(inputs, layer, probe, &why), why);
    add(gate_rank_figure(inputs, &why), why);
    for (const auto& in : inputs)
      if (in.kind == InputKind::rank)
        add(head_heatmap_figure(in, per_file_name("heads_" + probe, in), probe, &why), why);
    for (const auto& in : inputs)
      if (in.kind == InputKind::rank && in.attr("protocol") == "paper") {
        add(paper_rank_figure(in, per_file_name("paper_rank", in), false, &why), why);
        add(paper_rank_figure(in, per_file_name("paper_rank_full_map", in), true, &why), why);
      }
  } else {
    r.notes.push_back("rank figures (kv_buffer rank, spectra, gate, per-head heat map): no rank file among the inputs");
  }
  bool any_ablation = false, any_bench = false, any_train = false;
  for (const auto& in : inputs) {
    if (in.kind == InputKind::ablation) {
      any_ablation = true;
      add(ablation_figure(in, per_file_name("ablation_top1_vs_rank", in), &why), why);
    } else if (in.kind == InputKind::bench || in.kind == InputKind::bench_attention) {
      any_bench = true;
      add(scaling_figure(in, per_file_name(in.kind == InputKind::bench ? "bench_scaling" : "bench_attention_scaling", in),
                         &why),
          why);
    } else if (in.kind == InputKind::train) {
      any_train = true;
    }
  }
  if (!any_ablation) r.notes.push_back("top-1 vs kv_buffer effective rank: no ablation table among the inputs");
  if (!any_bench) r.notes.push_back("throughput and memory vs resolution: no benchmark table among the inputs");
  if (any_train) add(training_figure(inputs, &why), why);

  for (const auto& spec : specs) {
    r.figures.push_back(render_figure(spec, fig_dir.string(), o.formats, gnuplot));
    std::string fmts;
    for (const auto& f : o.formats) fmts += (fmts.empty() ? "" : ", ") + f;
    log("figure " + (fig_dir / spec.name).string() + " (" + fmts + ")");
  }
  for (const auto& n : r.notes) std::fprintf(stderr, "report: skipped %s\n", n.c_str());

  if (any_rank) r.tables.push_back(rank_summary_table(inputs));
  for (const auto& in : inputs)
    if (in.kind != InputKind::rank) r.tables.push_back(display_table(in, per_file_name(kind_name(in.kind), in)));
  for (const auto& t : r.tables) {
    write_text_atomic((tab_dir / (t.name + ".md")).string(), "<!-- " + t.title + " -->\n" + to_markdown(t));
    write_text_atomic((tab_dir / (t.name + ".tex")).string(), to_latex(t));
    write_text_atomic((tab_dir / (t.name + ".csv")).string(), t.csv);
    log("table " + (tab_dir / t.name).string() + ".{md,tex,csv}");
  }

  r.html = (out / "report.html").string();
  r.markdown = (out / "report.md").string();
  write_text_atomic(r.html, html_page(r, inputs, o.out, o.command_line));
  write_text_atomic(r.markdown, markdown_page(r, inputs, o.command_line));
  log("wrote " + r.html + " and " + r.markdown);
  return r;
}

}  // namespace rala::report
