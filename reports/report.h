#pragma once
/// \file report.h
/// `rala report`: results files → figures (gnuplot; each a .dat + .gp next to it), tables (Markdown, LaTeX, CSV) and
/// one self-contained report.html (SVG inline, tables as HTML, provenance of every input) with report.md beside it.
///
///   rala::report::ReportOptions o;
///   o.inputs = {"results/ravlt_micro_RRSS.h5", "results/ravlt_micro_LLSS.h5", "ablation.h5"};
///   o.out = "report";
///   auto r = rala::report::make_report(o);   // report/report.html, report/figures/*, report/tables/*
///
/// Layout of the output directory (an existing one is reused; only the files named here are replaced, each
/// atomically):
///   report.html, report.md, figures/<name>.{dat,gp,png,svg,pdf}, tables/<name>.{md,tex,csv}

#include <string>
#include <vector>

#include "reports/figures.h"
#include "reports/gnuplot.h"
#include "reports/report_inputs.h"
#include "reports/tables.h"

namespace rala::report {

struct ReportOptions {
  std::vector<std::string> inputs;  ///< results files (rank files and /table files, in any order)
  std::string out;                  ///< output directory (created when missing)
  std::string layer;                ///< layer of the spectra figure ("" = first linear-attention layer)
  std::string probe;                ///< probe of the spectra figure and the heat maps ("" = kv_buffer, unchecked)
  std::string command_line;         ///< shown in the report (the `rala report ...` that made it)
  std::vector<std::string> formats = {"png", "svg"};  ///< any of png, svg, pdf
  bool quiet = false;               ///< no progress lines on stderr (skipped figures are still printed)
};

/// What was made.
struct ReportResult {
  std::vector<RenderedFigure> figures;
  std::vector<ReportTable> tables;
  std::vector<std::string> notes;  ///< one line per skipped figure
  std::string html, markdown;      ///< paths of report.html and report.md
};

/// Parses "png,svg,pdf" (any order and subset, no duplicates). Throws naming an unknown format.
std::vector<std::string> parse_formats(const std::string& list);

/// Makes the report. Throws std::runtime_error with one line for: no inputs, an input that is not a results file
/// (naming it), an unknown layer or probe, a missing gnuplot (naming the package gnuplot-nox), an output path that is
/// not a directory.
ReportResult make_report(const ReportOptions& options);

}  // namespace rala::report
