// `rala report` as a user runs it, on the committed fixtures of tests/data/report (rank files made by `rala rank`,
// tables written by the toolkit's table writer; see make_fixtures.sh). Reference numbers are read from the fixtures
// with h5_store directly, never from the report code.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <algorithm>
#include <set>
#include <sstream>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "experiments/ablate.h"
#include "experiments/bench.h"
#include "experiments/train/train_loop.h"
#include "reports/report.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kRankFiles = {"ravlt_micro_RRSS", "ravlt_micro_LLSS"};

std::string fixture(const std::string& name) { return test::data_path("report/" + name); }

std::string all_fixtures() {
  std::string s;
  for (const auto& r : kRankFiles) s += fixture(r + ".h5") + " ";
  for (const char* t : {"ablation.h5", "bench.h5", "train.h5"}) s += fixture(t) + " ";
  return s;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string report_cmd(const std::string& args) { return std::string(RALA_BINARY) + " report " + args; }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// Mean and sample std of a fixture dataset (n, heads) over the entries whose status is 0.
std::pair<double, double> mean_std(const h5::File& f, const std::string& group, const std::string& metric) {
  auto v = f.read(group + "/" + metric).to(torch::kFloat64).flatten();
  auto ok = f.read(group + "/status").flatten() == 0;
  v = v.masked_select(ok);
  const double mean = v.mean().item<double>();
  const double std = v.numel() > 1 ? v.std(/*unbiased=*/true).item<double>() : 0.0;
  return {mean, std};
}

/// The first layer (stage, block order) whose variant is not softmax, read from the fixtures directly.
std::string first_linear_layer() {
  std::map<std::pair<int64_t, int64_t>, std::string> linear;
  for (const auto& r : kRankFiles) {
    h5::File f(fixture(r + ".h5"), h5::Mode::read);
    for (const auto& l : f.list("/layers"))
      if (f.attr_string("/layers/" + l, "variant") != "softmax" && f.exists("/layers/" + l + "/kv_buffer"))
        linear[{f.attr_int("/layers/" + l, "stage"), f.attr_int("/layers/" + l, "block")}] = l;
  }
  return linear.empty() ? "" : linear.begin()->second;
}

/// The one full report all the content tests look at (made once; ~1-2 s of gnuplot).
class ReportOutput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>("rala_report");
    out_ = dir_->path / "report";
    output_ = test::run_command(
        report_cmd(all_fixtures() + "--out " + out_.string() + " --format png,svg,pdf"), &status_);
  }
  static void TearDownTestSuite() { dir_.reset(); }
  static std::vector<std::string> expected_figures() {
    std::vector<std::string> names = {"kv_buffer_rank", "spectrum_kv_buffer_" + first_linear_layer(), "gate_rank",
                                      "ablation_top1_vs_rank", "bench_scaling", "training_top1"};
    for (const auto& r : kRankFiles) names.push_back("heads_kv_buffer_" + r);
    return names;
  }
  static std::unique_ptr<test::TempDir> dir_;
  static fs::path out_;
  static std::string output_;
  static int status_;
};
std::unique_ptr<test::TempDir> ReportOutput::dir_;
fs::path ReportOutput::out_;
std::string ReportOutput::output_;
int ReportOutput::status_ = -1;

TEST_F(ReportOutput, EveryFigureExistsInEveryFormatAndIsValid) {
  ASSERT_EQ(status_, 0) << output_;
  ASSERT_FALSE(first_linear_layer().empty());
  for (const auto& name : expected_figures()) {
    const fs::path base = out_ / "figures" / name;
    const std::string png = read_file(base.string() + ".png");
    ASSERT_GE(png.size(), 8u) << name;
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << name;
    const std::string svg = read_file(base.string() + ".svg");
    size_t root = svg.find('<');  // the first element that is not a prolog, doctype or comment
    while (root != std::string::npos && (svg.compare(root, 2, "<?") == 0 || svg.compare(root, 2, "<!") == 0))
      root = svg.find('<', root + 1);
    ASSERT_NE(root, std::string::npos) << name;
    EXPECT_EQ(svg.compare(root, 4, "<svg"), 0) << name << ": " << svg.substr(0, 200);
    EXPECT_NE(svg.find("</svg>"), std::string::npos) << name;
    const std::string pdf = read_file(base.string() + ".pdf");
    EXPECT_EQ(pdf.substr(0, 5), "%PDF-") << name;
    EXPECT_NE(pdf.find("%%EOF"), std::string::npos) << name;
    EXPECT_TRUE(fs::exists(base.string() + ".gp")) << name;
    EXPECT_TRUE(fs::exists(base.string() + ".dat")) << name;
    EXPECT_FALSE(fs::exists(base.string() + ".png.partial")) << name;
  }
}

TEST_F(ReportOutput, ScriptsReRenderAsTheHeaderSays) {
  ASSERT_EQ(status_, 0) << output_;
  const fs::path dir = out_ / "figures";
  const std::string gp = read_file(dir / "gate_rank.gp");
  EXPECT_NE(gp.find("datafile = \"gate_rank.dat\""), std::string::npos);
  int status = 0;
  auto out = test::run_command("cd " + dir.string() + " && gnuplot -e \"fmt='svg'; out='restyled.svg'\" gate_rank.gp",
                               &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(read_file(dir / "restyled.svg"), read_file(dir / "gate_rank.svg"));  // same script, same data
}

TEST_F(ReportOutput, HtmlAndMarkdownReferenceEveryFigure) {
  ASSERT_EQ(status_, 0) << output_;
  const std::string html = read_file(out_ / "report.html");
  const std::string md = read_file(out_ / "report.md");
  for (const auto& name : expected_figures()) {
    for (const char* ext : {".png", ".svg", ".pdf", ".gp", ".dat"})
      EXPECT_NE(html.find("figures/" + name + ext), std::string::npos) << name << ext;
    EXPECT_NE(md.find("](figures/" + name + ".png)"), std::string::npos) << name;
  }
  // Self-contained: the SVGs are inline, nothing is loaded from elsewhere.
  size_t inline_svgs = 0;
  for (size_t p = 0; (p = html.find("<svg", p)) != std::string::npos; ++p) ++inline_svgs;
  EXPECT_EQ(inline_svgs, expected_figures().size());
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  // Provenance of every input: its path, command line and commit.
  for (const auto& r : kRankFiles) {
    h5::File f(fixture(r + ".h5"), h5::Mode::read);
    EXPECT_NE(html.find(fixture(r + ".h5")), std::string::npos) << r;
    EXPECT_NE(html.find(f.attr_string("/", "git_commit")), std::string::npos) << r;
    EXPECT_NE(html.find(f.attr_string("/", "created_utc")), std::string::npos) << r;
    EXPECT_NE(html.find(f.attr_string("/", "torch_version")), std::string::npos) << r;
  }
  h5::File a(fixture("ablation.h5"), h5::Mode::read);
  std::string cmd = a.attr_string("/", "command_line");
  EXPECT_NE(html.find(cmd.substr(cmd.rfind(' ') + 1)), std::string::npos);
}

TEST_F(ReportOutput, RankSummaryHoldsTheFixtureNumbers) {
  ASSERT_EQ(status_, 0) << output_;
  const std::string md = read_file(out_ / "tables" / "rank_summary.md");
  const std::string tex = read_file(out_ / "tables" / "rank_summary.tex");
  const std::string csv = read_file(out_ / "tables" / "rank_summary.csv");
  const std::string html = read_file(out_ / "report.html");
  EXPECT_NE(tex.find("\\toprule"), std::string::npos);
  EXPECT_NE(tex.find("kv\\_buffer"), std::string::npos);
  int checked = 0;
  for (const auto& r : kRankFiles) {
    h5::File f(fixture(r + ".h5"), h5::Mode::read);
    for (const auto& l : f.list("/layers"))
      for (const auto& p : f.list("/layers/" + l)) {
        const std::string g = "/layers/" + l + "/" + p;
        if (!f.is_dataset(g + "/rank")) continue;
        const auto [rm, rs] = mean_std(f, g, "rank");
        const auto [em, es] = mean_std(f, g, "effective_rank");
        const std::string rank_cell = fmt("%.2f", rm) + " ± " + fmt("%.2f", rs);
        const std::string eff_cell = fmt("%.2f", em) + " ± " + fmt("%.2f", es);
        EXPECT_NE(md.find("| " + rank_cell + " | " + eff_cell + " |"), std::string::npos) << r << " " << g;
        EXPECT_NE(tex.find(fmt("%.2f", rm) + " $\\pm$ " + fmt("%.2f", rs)), std::string::npos) << r << " " << g;
        EXPECT_NE(html.find(rank_cell), std::string::npos) << r << " " << g;
        // The CSV row carries the unrounded values.
        const std::string key = p + "," + l + "," + fixture(r + ".h5") + ",";
        const size_t at = csv.find("\n" + key);
        ASSERT_NE(at, std::string::npos) << key;
        std::stringstream line(csv.substr(at + 1, csv.find('\n', at + 1) - at - 1));
        std::vector<std::string> cells;
        for (std::string c; std::getline(line, c, ',');) cells.push_back(c);
        ASSERT_EQ(cells.size(), 12u) << line.str();
        EXPECT_NEAR(std::stod(cells[8]), rm, 1e-9 * std::max(1.0, rm));
        EXPECT_NEAR(std::stod(cells[9]), rs, 1e-9 * std::max(1.0, rs));
        EXPECT_NEAR(std::stod(cells[10]), em, 1e-9 * std::max(1.0, em));
        EXPECT_NEAR(std::stod(cells[11]), es, 1e-9 * std::max(1.0, es));
        ++checked;
      }
  }
  EXPECT_GE(checked, 6);
}

TEST_F(ReportOutput, TableFilesHoldTheFixtureNumbers) {
  ASSERT_EQ(status_, 0) << output_;
  struct Check {
    const char* table;
    const char* column;
    const char* format;  // the display precision of that column
  };
  for (const Check& c : {Check{"ablation", "top1_mean", "%.2f"}, Check{"ablation", "top1_std", "%.2f"},
                         Check{"ablation", "kv_buffer_effective_rank", "%.2f"}, Check{"ablation", "images_per_s", "%.1f"},
                         Check{"bench", "images_per_s", "%.1f"}, Check{"bench", "latency_median_ms", "%.2f"},
                         Check{"bench", "peak_memory_mb", "%.1f"}, Check{"train", "test_top1", "%.2f"}}) {
    h5::File f(fixture(std::string(c.table) + ".h5"), h5::Mode::read);
    const auto values = f.read(std::string("/table/") + c.column).to(torch::kFloat64);
    const std::string md = read_file(out_ / "tables" / (std::string(c.table) + ".md"));
    const std::string tex = read_file(out_ / "tables" / (std::string(c.table) + ".tex"));
    const std::string csv = read_file(out_ / "tables" / (std::string(c.table) + ".csv"));
    // The CSV column, parsed back, equals the fixture exactly.
    std::stringstream in(csv);
    std::string header;
    std::getline(in, header);
    std::vector<std::string> names;
    std::stringstream hs(header);
    for (std::string n; std::getline(hs, n, ',');) names.push_back(n);
    const size_t col = std::find(names.begin(), names.end(), c.column) - names.begin();
    ASSERT_LT(col, names.size()) << c.table << " " << c.column;
    int64_t row = 0;
    for (std::string line; std::getline(in, line); ++row) {
      std::vector<std::string> cells;
      std::stringstream ls(line);
      for (std::string cell; std::getline(ls, cell, ',');) cells.push_back(cell);
      ASSERT_LT(row, values.numel());
      EXPECT_EQ(std::stod(cells.at(col)), values[row].item<double>()) << c.table << " " << c.column << " row " << row;
      const std::string shown = fmt(c.format, values[row].item<double>());
      EXPECT_NE(md.find("| " + shown + " |"), std::string::npos) << c.table << " " << c.column << " " << shown;
      EXPECT_NE(tex.find(shown), std::string::npos) << c.table << " " << c.column << " " << shown;
    }
    EXPECT_EQ(row, values.numel());
    // Units in the headers.
    const std::string unit = f.attr_string(std::string("/table/") + c.column, "unit");
    if (!unit.empty()) {
      EXPECT_NE(md.find(std::string(c.column) + " (" + unit + ")"), std::string::npos) << c.column;
    }
  }
  // Text and integer columns verbatim.
  h5::File a(fixture("ablation.h5"), h5::Mode::read);
  const std::string md = read_file(out_ / "tables" / "ablation.md");
  for (const auto& config : a.read_strings("/table/config")) EXPECT_NE(md.find("| " + config + " |"), std::string::npos);
  EXPECT_NE(read_file(out_ / "tables" / "ablation.tex").find("top1\\_mean (\\%)"), std::string::npos);
}

TEST_F(ReportOutput, FigureDataHoldTheFixtureNumbers) {
  ASSERT_EQ(status_, 0) << output_;
  // kv_buffer_rank.dat: one block per rank file (in input order) with "x mean std" per layer holding kv_buffer.
  const std::string dat = read_file(out_ / "figures" / "kv_buffer_rank.dat");
  for (const auto& r : kRankFiles) {
    h5::File f(fixture(r + ".h5"), h5::Mode::read);
    for (const auto& l : f.list("/layers")) {
      if (!f.exists("/layers/" + l + "/kv_buffer/rank")) continue;
      const auto [m, s] = mean_std(f, "/layers/" + l + "/kv_buffer", "rank");
      EXPECT_NE(dat.find(" " + fmt("%.10g", m) + " " + fmt("%.10g", s) + "\n"), std::string::npos) << r << " " << l;
    }
  }
  // Heat map cells: the effective rank of each head, averaged over images (rows "head layer_index value ...").
  for (const auto& r : kRankFiles) {
    h5::File f(fixture(r + ".h5"), h5::Mode::read);
    const std::string heat = read_file(out_ / "figures" / ("heads_kv_buffer_" + r + ".dat"));
    int64_t row = 0;
    for (const auto& l : f.list("/layers")) {  // "0.0" < "1.0" < ...: the file's (stage, block) order
      if (!f.exists("/layers/" + l + "/kv_buffer/effective_rank")) continue;
      const auto e = f.read("/layers/" + l + "/kv_buffer/effective_rank").mean(0);  // (heads)
      for (int64_t h = 0; h < e.size(0); ++h)
        EXPECT_NE(heat.find("\n" + std::to_string(h) + " " + std::to_string(row) + " " +
                            fmt("%.10g", e[h].item<double>()) + " "),
                  std::string::npos)
            << r << " " << l << " head " << h << "\n" << heat;
      ++row;
    }
    EXPECT_GE(row, 2);
  }
  // The slopes in the scaling legend are the fitted ones.
  h5::File b(fixture("bench.h5"), h5::Mode::read);
  const auto patterns = b.read_strings("/table/pattern");
  const auto size = b.read("/table/image_size").to(torch::kFloat64);
  const auto ips = b.read("/table/images_per_s");
  std::vector<double> x, y;
  for (size_t i = 0; i < patterns.size(); ++i)
    if (patterns[i] == "RRSS") x.push_back(std::log(size[i].item<double>())), y.push_back(std::log(ips[i].item<double>()));
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / x.size(), my = std::accumulate(y.begin(), y.end(), 0.0) / y.size();
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
  const std::string gp = read_file(out_ / "figures" / "bench_scaling.gp");
  EXPECT_NE(gp.find("RRSS (slope " + fmt("%.2f", sxy / sxx) + ")"), std::string::npos) << gp;
}

TEST(ReportFixtures, TableSchemasAreTheSubcommandsOwn) {
  // The committed table fixtures must have exactly the columns (order, kind, unit, description) that `rala ablate`,
  // `rala bench` and `rala train` write today; regenerate them with make_fixtures.sh when a writer changes.
  const std::pair<const char*, ResultsTable> expected[] = {
      {"ablation.h5", make_ablation_table()}, {"bench.h5", make_bench_table()}, {"train.h5", make_metrics_table()}};
  for (const auto& [file, table] : expected) {
    h5::File f(fixture(file), h5::Mode::read);
    const ResultsTable got = ResultsTable::read_h5(f);
    ASSERT_EQ(got.columns().size(), table.columns().size()) << file;
    for (size_t i = 0; i < table.columns().size(); ++i) {
      const auto &g = got.columns()[i], &e = table.columns()[i];
      EXPECT_EQ(g.name, e.name) << file << " column " << i;
      EXPECT_EQ(g.kind, e.kind) << file << " " << e.name;
      EXPECT_EQ(g.unit, e.unit) << file << " " << e.name;
      EXPECT_EQ(g.description, e.description) << file << " " << e.name;
    }
    EXPECT_GT(got.rows(), 0) << file;
  }
}

TEST(ReportTables, DisplayPrecisionAndEscaping) {
  EXPECT_EQ(report::format_cell(78.4249, "top1_mean", "%"), "78.42");
  EXPECT_EQ(report::format_cell(412.46, "images_per_s", "images/s"), "412.5");
  EXPECT_EQ(report::format_cell(0.0312, "gmacs", "GMACs"), "0.0312");
  EXPECT_EQ(report::format_cell(123456.7, "params", ""), "123457");
  EXPECT_EQ(report::format_cell(std::nan(""), "top1_std", "%"), "–");
  report::ReportTable t;
  t.title = "t";
  t.header = {"top1_mean (%)", "config"};
  t.numeric = {true, false};
  t.rows = {{"1.00 ± 0.50", "a_b & c|d"}};
  const std::string tex = report::to_latex(t);
  EXPECT_NE(tex.find("top1\\_mean (\\%) & config \\\\"), std::string::npos) << tex;
  EXPECT_NE(tex.find("1.00 $\\pm$ 0.50 & a\\_b \\& c|d \\\\"), std::string::npos) << tex;
  EXPECT_NE(tex.find("\\begin{tabular}{rl}"), std::string::npos) << tex;
  const std::string md = report::to_markdown(t);
  EXPECT_NE(md.find("| 1.00 ± 0.50 | a_b & c\\|d |"), std::string::npos) << md;
  EXPECT_NE(md.find("|---:|---|"), std::string::npos) << md;
  EXPECT_NE(report::to_html(t).find("<td>a_b &amp; c|d</td>"), std::string::npos);
}

TEST(ReportSlope, PowerLawGivesItsExponent) {
  EXPECT_NEAR(report::loglog_slope({64, 128, 256, 512}, {3e6 / (64 * 64), 3e6 / (128 * 128), 3e6 / (256 * 256),
                                                         3e6 / (512 * 512)}),
              -2.0, 1e-12);
  EXPECT_TRUE(std::isnan(report::loglog_slope({64}, {1.0})));
}

TEST(ReportCommand, MissingGnuplotNamesThePackage) {
  test::TempDir tmp("rala_report");
  int status = 0;
  auto out = test::run_command("RALA_GNUPLOT=" + (tmp.path / "no-gnuplot").string() + " " +
                                   report_cmd(fixture("ravlt_micro_RRSS.h5") + " --out " + (tmp.path / "r").string()),
                               &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rala: error: gnuplot not found"), std::string::npos) << out;
  EXPECT_NE(out.find("gnuplot-nox"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(tmp.path / "r" / "report.html"));
  // A PATH without gnuplot.
  fs::create_directories(tmp.path / "bin");
  out = test::run_command("env PATH=" + (tmp.path / "bin").string() + " " +
                              report_cmd(fixture("ravlt_micro_RRSS.h5") + " --out " + (tmp.path / "r").string()),
                          &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("gnuplot not found on PATH"), std::string::npos) << out;
  EXPECT_NE(out.find("gnuplot-nox"), std::string::npos) << out;
}

/// The message make_report throws for `options` ("" when it does not throw).
std::string error_of(const report::ReportOptions& options) {
  try {
    report::make_report(options);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(ReportCommand, AnInputThatIsNotAResultsFileIsNamed) {
  test::TempDir tmp("rala_report");
  const auto text = tmp.path / "notes.txt";
  { std::ofstream(text) << "not hdf5\n"; }
  const auto other = tmp.path / "other.h5";
  h5::write_tensor(other.string(), "/weights", torch::ones({3}));
  for (const auto& bad : {text, other, tmp.path / "missing.h5"}) {
    report::ReportOptions o;
    o.inputs = {fixture("ravlt_micro_RRSS.h5"), bad.string()};
    o.out = (tmp.path / "r").string();
    const std::string e = error_of(o);
    EXPECT_EQ(e.rfind("input '" + bad.string() + "'", 0), 0u) << e;
    if (bad != tmp.path / "missing.h5") {
      EXPECT_NE(e.find("is not a results file"), std::string::npos) << e;
    }
    EXPECT_FALSE(fs::exists(tmp.path / "r")) << "nothing is written before the inputs are known to be good";
  }
  // As a user sees it: one line, naming the file.
  int status = 0;
  auto out = test::run_command(
      report_cmd(fixture("ravlt_micro_RRSS.h5") + " " + text.string() + " --out " + (tmp.path / "r").string()), &status);
  EXPECT_NE(status, 0);
  EXPECT_EQ(out, "rala: error: input '" + text.string() +
                     "' is not a results file: not an HDF5 file; expected an HDF5 results file written by rala (a rank "
                     "file with /layers, or a table file with /table)\n");
}

/// What loading `path` as a report input throws (test::error_message).
std::string load_error(const std::string& path) {
  return test::error_message([&] { report::load_input(path); });
}

// Found by fuzz/report_input_fuzz.cpp (issue 17): results files whose attributes libhdf5 1.10.8 mishandles.
// analysis/h5_vlen_check.h checks them in the file's own bytes first; each file is refused with one line naming it,
// without the allocation, the hang or the crash:
// - a 'created_utc' message declaring a 43-byte dataspace in a 72-byte message: libhdf5 takes the value from the next
//   message's bytes, a string length of 1,701,736,449, and allocates it;
// - a global heap collection whose free-space entry has size 0: libhdf5 loops forever loading it;
// - an attribute message declaring a 53,780-byte datatype in 64 bytes: libhdf5 dereferences a null pointer cleaning
//   up after it while it iterates the attributes (H5A__close).
TEST(ReportInputs, CorruptedAttributesAreRefusedBeforeLibhdf5ReadsThem) {
  const std::string dir = std::string(RALA_TEST_DATA) + "/fuzz/report_input/";
  for (const auto& [file, what] : std::vector<std::pair<std::string, std::string>>{
           {"hdf5_vlen_attr_1700mb.h5", "a name of 12, a datatype of 20 and a dataspace of 43 bytes"},
           {"hdf5_vlen_attr_hang.h5", "is a corrupted variable-length string: it declares a string of 49 bytes; the "
                                      "global heap entry at byte 3712 of its collection has index 0 and size 0, "
                                      "which does not advance"},
           {"hdf5_attr_message_segv.h5", "a name of 7, a datatype of 53780 and a dataspace of 19280 bytes"},
           // The same crash from inside a datatype: a character base type of 0 bytes (and, in another attribute of
           // the file, 65,528 bits of precision and a dataspace of version 254).
           {"hdf5_attr_datatype_segv.h5", "attribute 'attn_settings': a numeric datatype of 0 bytes declares 8 bits"},
           // Ours: a probe dataset whose shape asks for more than 2^64 bytes, with 32 bytes stored (h5::File::read
           // allocated the shape before reading; now bounded by the stored bytes × deflate's maximum ratio).
           {"hdf5_dataset_shape_2e64.h5", "its shape asks for more than 2^64 bytes, more than the 32 bytes stored"},
           // And from a dataspace whose dimension exceeds its own maximum.
           {"hdf5_attr_dataspace_segv.h5", "attribute 'image_size': a dataspace's dimension 0 is 4861932550820779776, "
                                           "above its maximum 2"}}) {
    const std::string path = dir + file;
    const std::string e = load_error(path);
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  // Also found: a root object header that libhdf5's H5Fopen fails on half-way (leaking 56 bytes inside libhdf5,
  // suppressed in fuzz/lsan.supp): refused as not an HDF5 results file, on one line.
  const std::string open_leak = dir + "hdf5_open_leak.h5";
  std::string e = load_error(open_leak);
  EXPECT_EQ(e.rfind("input '" + open_leak + "' is not a results file", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  // One whose root group header declares a first chunk of 0x4242424242424242 bytes (libhdf5's H5Fopen allocates it):
  // refused before libhdf5 opens it (h5::File checks the superblock and root header first), on one line.
  const std::string root_size = dir + "hdf5_root_header_size.h5";
  e = load_error(root_size);
  EXPECT_EQ(e.rfind("input '" + root_size + "' is not a results file", 0), 0u) << e;
  const std::string open_error = test::error_message([&] { h5::File f(root_size, h5::Mode::read); });
  EXPECT_NE(open_error.find("the root group's object header is corrupted"), std::string::npos) << open_error;
  // And one whose group object header fails to load (libhdf5 leaks there too): one line naming the file.
  const std::string load_leak = dir + "hdf5_header_load_leak.h5";
  e = load_error(load_leak);
  EXPECT_NE(e.find(load_leak), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(ReportCommand, ReusesAnExistingDirectoryAndKeepsOtherFiles) {
  test::TempDir tmp("rala_report");
  const auto out = tmp.path / "r";
  fs::create_directories(out / "figures");
  { std::ofstream(out / "notes.txt") << "mine"; }
  { std::ofstream(out / "figures" / "sketch.gp") << "plot x"; }
  int status = 0;
  for (int run = 0; run < 2; ++run) {
    auto o = test::run_command(
        report_cmd(fixture("ravlt_micro_LLSS.h5") + " --out " + out.string() + " --format svg --quiet"), &status);
    ASSERT_EQ(status, 0) << o;
  }
  EXPECT_EQ(read_file(out / "notes.txt"), "mine");
  EXPECT_EQ(read_file(out / "figures" / "sketch.gp"), "plot x");
  EXPECT_TRUE(fs::exists(out / "report.html"));
  EXPECT_TRUE(fs::exists(out / "figures" / "kv_buffer_rank.svg"));
  EXPECT_FALSE(fs::exists(out / "figures" / "kv_buffer_rank.png")) << "only the requested formats";
  for (const auto& e : fs::recursive_directory_iterator(out))
    EXPECT_EQ(e.path().string().find(".partial"), std::string::npos) << e.path();
}

TEST(ReportCommand, MissingDataIsSkippedWithANote) {
  test::TempDir tmp("rala_report");
  int status = 0;
  auto out = test::run_command(
      report_cmd(fixture("bench.h5") + " --out " + (tmp.path / "r").string() + " --format png"), &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("skipped rank figures"), std::string::npos) << out;
  EXPECT_NE(out.find("no ablation table"), std::string::npos) << out;
  const std::string html = read_file(tmp.path / "r" / "report.html");
  EXPECT_NE(html.find("no ablation table"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp.path / "r" / "figures" / "bench_scaling.png"));
  EXPECT_FALSE(fs::exists(tmp.path / "r" / "figures" / "kv_buffer_rank.png"));
  EXPECT_NE(html.find("<img"), std::string::npos) << "PNG embedded when no SVG was asked for";
}

TEST(ReportCommand, LayerProbeAndFormatAreChecked) {
  test::TempDir tmp("rala_report");
  report::ReportOptions o;
  o.inputs = {fixture("ravlt_micro_RRSS.h5")};
  o.out = (tmp.path / "r").string();
  o.quiet = true;
  o.layer = "9.9";
  EXPECT_NE(error_of(o).find("--layer 9.9 is in none of the rank files (layers: 0.0, 1.0, 2.0, 2.1, 3.0)"),
            std::string::npos)
      << error_of(o);
  o.layer = "";
  o.probe = "kv";
  EXPECT_NE(error_of(o).find("--probe kv is in none of the rank files (probes: kv_buffer, output, output_gated)"),
            std::string::npos)
      << error_of(o);
  EXPECT_FALSE(fs::exists(tmp.path / "r"));
  try {
    report::parse_formats("png,jpg");
    ADD_FAILURE() << "jpg accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("unknown figure format 'jpg'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(report::parse_formats("pdf,png,pdf"), (std::vector<std::string>{"pdf", "png"}));
  // A chosen layer and probe name the spectrum figure (through the command line).
  int status = 0;
  auto out = test::run_command(
      report_cmd(fixture("ravlt_micro_RRSS.h5") + " --out " + o.out + " --layer 1.0 --probe output --format svg --quiet"),
      &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_TRUE(fs::exists(tmp.path / "r" / "figures" / "spectrum_output_1.0.svg"));
  EXPECT_TRUE(fs::exists(tmp.path / "r" / "figures" / "heads_output.svg"));
}

TEST(ReportCommand, AttentionBenchTableGivesTimeAndMemoryVsTokens) {
  // A bench_attention table as `rala bench` writes it (the toolkit's table writer), made here.
  test::TempDir tmp("rala_report");
  ResultsTable t;
  t.add_column("variant", ColumnKind::text)
      .add_column("tokens", ColumnKind::integer)
      .add_column("channels", ColumnKind::integer)
      .add_column("time_ms", ColumnKind::number, "ms")
      .add_column("peak_memory_mb", ColumnKind::number, "MB");
  const std::vector<int64_t> tokens = {196, 784, 3136};
  for (size_t i = 0; i < tokens.size(); ++i) {
    const double n = static_cast<double>(tokens[i]);
    t.add_row({{"variant", std::string("softmax")}, {"tokens", tokens[i]}, {"channels", int64_t{64}},
               {"time_ms", 1e-4 * n * n}, {"peak_memory_mb", 1e-5 * n * n}});
    t.add_row({{"variant", std::string("rala")}, {"tokens", tokens[i]}, {"channels", int64_t{64}},
               {"time_ms", 1e-2 * n}, {"peak_memory_mb", 1e-3 * n}});
  }
  const auto file = (tmp.path / "attention.h5").string();
  write_table_files(t, file, [](h5::File& f) { f.set_attr("/", "table_kind", "bench_attention"); });
  report::ReportOptions o;
  o.inputs = {file};
  o.out = (tmp.path / "r").string();
  o.formats = {"svg"};
  o.quiet = true;
  const auto r = report::make_report(o);
  ASSERT_EQ(r.figures.size(), 1u);
  EXPECT_EQ(r.figures[0].name, "bench_attention_scaling");
  const std::string gp = read_file(tmp.path / "r" / "figures" / "bench_attention_scaling.gp");
  EXPECT_NE(gp.find("softmax (slope 2.00)"), std::string::npos) << gp;  // time and memory both ∝ N²
  EXPECT_NE(gp.find("rala (slope 1.00)"), std::string::npos) << gp;
  EXPECT_NE(gp.find("tokens N"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp.path / "r" / "tables" / "bench_attention.tex"));
}

TEST(ReportPaperProtocol, FigureNumbersAreTheFilesRanks) {
  // `rala rank --protocol paper` on the micro model, then `rala report`: the figure's bars are the file's ranks.
  test::TempDir tmp("rala_paper");
  int status = 0;
  auto log = test::run_command(std::string(RALA_BINARY) +
                                   " rank --model ravlt_micro --protocol paper --data synthetic --num-images 3 "
                                   "--batch-size 3 --quiet --out " + (tmp.path / "rank").string(),
                               &status);
  ASSERT_EQ(status, 0) << log;
  const auto file = (tmp.path / "rank" / "ravlt_micro_RRSS.h5").string();
  {
    h5::File f(file, h5::Mode::read);
    EXPECT_EQ(f.attr_string("/", "protocol"), "paper");
    EXPECT_NE(f.attr_string("/", "tolerance_rule").find("numpy"), std::string::npos);
    for (const char* p : {"kv_buffer", "kv_buffer_unweighted", "output", "output_gated", "output_all_heads",
                          "output_gated_all_heads"})
      EXPECT_TRUE(f.exists(std::string("/layers/0.0/") + p + "/rank")) << p;
    EXPECT_FALSE(f.exists("/layers/2.0/kv_buffer"));  // softmax: no buffer, outputs as the reference
    EXPECT_TRUE(f.exists("/layers/2.0/output_gated/rank"));
  }
  log = test::run_command(report_cmd(file + " --out " + (tmp.path / "report").string() + " --format png"), &status);
  ASSERT_EQ(status, 0) << log;
  const std::string dat = read_file(tmp.path / "report" / "figures" / "paper_rank.dat");
  const std::string full = read_file(tmp.path / "report" / "figures" / "paper_rank_full_map.dat");
  ASSERT_FALSE(dat.empty());
  ASSERT_FALSE(full.empty());
  h5::File f(file, h5::Mode::read);
  int checked = 0;
  for (const auto& l : f.list("/layers"))
    for (const char* p : {"kv_buffer_unweighted", "kv_buffer", "output", "output_gated", "output_all_heads",
                          "output_gated_all_heads"}) {
      const std::string g = "/layers/" + l + "/" + p;
      if (!f.exists(g + "/rank")) continue;
      const auto [m, sd] = mean_std(f, g, "rank");
      const bool whole = std::string(p).find("all_heads") != std::string::npos;
      EXPECT_NE((whole ? full : dat).find(" " + fmt("%.10g", m) + " " + fmt("%.10g", sd) + "\n"), std::string::npos)
          << l << " " << p;
      ++checked;
    }
  EXPECT_GE(checked, 5 * 4);
}

}  // namespace
}  // namespace rala
