#include "experiments/report.h"

#include <CLI/CLI.hpp>

#include <memory>

#include "experiments/runtime.h"
#include "reports/report.h"

namespace rala {

namespace {

struct ReportArgs {
  std::vector<std::string> files;
  std::string out;
  std::string layer;
  std::string probe;
  std::string formats = "png,svg";
  bool quiet = false;
};

}  // namespace

void add_report_command(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  auto* cmd = app.add_subcommand(
      "report", "Figures (gnuplot), tables (Markdown, LaTeX, CSV) and report.html from results files");
  cmd->add_option("files", args->files, "Results files: rank files (rala rank) and tables (train, ablate, bench)")
      ->required();
  cmd->add_option("--out", args->out, "Output directory (created; an existing one is reused, other files kept)")
      ->required();
  cmd->add_option("--layer", args->layer, "Layer of the spectra figure, e.g. 0.0 (default: first linear-attention layer)");
  cmd->add_option("--probe", args->probe, "Probe of the spectra figure and the per-head heat maps (default kv_buffer)");
  cmd->add_option("--format", args->formats, "Figure formats, comma list of png, svg, pdf")->capture_default_str();
  cmd->add_flag("--quiet", args->quiet, "No progress lines (skipped figures are still reported)");
  cmd->callback([args] {
    report::ReportOptions o;
    o.inputs = args->files;
    o.out = args->out;
    o.layer = args->layer;
    o.probe = args->probe;
    o.formats = report::parse_formats(args->formats);
    o.quiet = args->quiet;
    o.command_line = command_line();
    const auto r = report::make_report(o);
    std::printf("report: %zu figures, %zu tables, %zu skipped -> %s\n", r.figures.size(), r.tables.size(),
                r.notes.size(), r.html.c_str());
  });
}

}  // namespace rala
