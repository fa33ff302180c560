#pragma once
/// \file tables.h
/// Report tables: the rank summary of rank files and the display form of `/table` files (ablation, benchmark,
/// training), each rendered as Markdown, LaTeX (booktabs, ready to \input) and HTML, with a machine-readable CSV at
/// full precision beside them.
///
///   auto t = rala::report::rank_summary_table(inputs);
///   write_text(dir / (t.name + ".md"), to_markdown(t));   // "| probe | layer | RRSS rank | ..."

#include <string>
#include <vector>

#include "reports/report_inputs.h"

namespace rala::report {

/// A table ready for display: header cells (with units), display cells (numbers formatted with a precision chosen
/// per column), and the CSV holding the same data at full precision.
struct ReportTable {
  std::string name;                             ///< file stem, e.g. "rank_summary", "ablation"
  std::string title;                            ///< caption
  std::vector<std::string> header;              ///< e.g. "top1_mean (%)"
  std::vector<bool> numeric;                    ///< per column: right-aligned
  std::vector<std::vector<std::string>> rows;   ///< display cells; "±" separates mean and std
  std::string csv;                              ///< full-precision CSV (header = column names)
};

/// Mean ± std (sample std, n − 1) over images and heads, of the numerical and the effective rank, for every probe
/// and layer (rows) and every rank file (columns "<label> rank", "<label> eff. rank"); cells "mean ± std" with 2
/// decimals, "–" where a file lacks that probe. CSV: one row per (probe, layer, file) with the unrounded values.
/// Entries with status != 0 are left out. Returns a table with no rows when no input is a rank file.
ReportTable rank_summary_table(const std::vector<InputFile>& inputs);

/// The display form of a table file: every column, header "name (unit)", numbers with a per-column precision
/// (see format_cell), CSV = ResultsTable::to_csv().
ReportTable display_table(const InputFile& input, const std::string& name);

/// A number as shown in a table column called `column` with unit `unit`: "%", ms and rank columns 2 decimals; MB,
/// images/s, GFLOP/s and s 1; ratios 3; otherwise (GMACs, lr, losses, …) 4 significant
/// digits (%.4g), whole numbers from 10^4 on; "–" for NaN.
std::string format_cell(double value, const std::string& column, const std::string& unit);

std::string to_markdown(const ReportTable& t);
/// A booktabs `tabular` (no float environment), LaTeX special characters escaped, "±" as $\pm$.
std::string to_latex(const ReportTable& t);
/// A `<table>` with a `<caption>`, HTML-escaped.
std::string to_html(const ReportTable& t);

/// HTML-escapes &, <, >, ".
std::string html_escape(const std::string& s);

}  // namespace rala::report
