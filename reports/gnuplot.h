#pragma once
/// \file gnuplot.h
/// Figures rendered by gnuplot: each figure is a data file plus a .gp script written next to it, so a user can
/// restyle and re-run it (`cd figures && gnuplot -e "fmt='pdf'" kv_buffer_rank.gp`). The script picks the terminal
/// from the variable `fmt` (png → pngcairo, svg → svg, pdf → pdfcairo) and the output from `out`.
///
///   const auto gnuplot = rala::report::find_gnuplot();             // throws naming the package gnuplot-nox
///   FigureSpec spec{"kv_buffer_rank", "title", "caption", data_text, "plot datafile using 1:2 with boxes"};
///   auto fig = rala::report::render_figure(spec, "out/figures", {"png", "svg"}, gnuplot);

#include <string>
#include <vector>

namespace rala::report {

/// The gnuplot executable: $RALA_GNUPLOT when set (must be an executable file), else `gnuplot` on PATH. Throws
/// std::runtime_error naming the Debian package to install (gnuplot-nox) when there is none.
std::string find_gnuplot();

/// What a figure is made of. `script` is the plotting part; it refers to its data file as `datafile`. The header
/// (terminal from `fmt`, output from `out`, `datafile`) is added by render_figure.
struct FigureSpec {
  std::string name;     ///< file stem, [A-Za-z0-9_.-]
  std::string title;    ///< heading in the report
  std::string caption;  ///< one or two sentences: what is plotted, how it was aggregated
  std::string data;     ///< content of <name>.dat
  std::string script;   ///< gnuplot commands after the header
  int width = 900, height = 540;  ///< pixels (PNG, SVG); the PDF keeps the aspect ratio
};

/// A rendered figure: the spec's texts and the files written (relative to the report directory's figures/).
struct RenderedFigure {
  std::string name, title, caption;
  std::vector<std::string> formats;  ///< rendered formats, in the order requested
  std::string file(const std::string& format) const { return name + "." + format; }
};

/// Writes <dir>/<name>.dat and <dir>/<name>.gp, then runs gnuplot once per format (each output written to
/// "<file>.partial" and renamed). Throws with gnuplot's own message when it fails or writes nothing.
RenderedFigure render_figure(const FigureSpec& spec, const std::string& dir, const std::vector<std::string>& formats,
                             const std::string& gnuplot);

/// A string as a gnuplot double-quoted literal for enhanced-text terminals: quotes and backslashes escaped, and the
/// enhanced-text control characters (_ ^ { } @ & ~) escaped so the text appears as written.
std::string gp_text(const std::string& s);

/// Writes `content` to `path` atomically (`<path>.partial`, then rename). Throws naming the path on failure.
void write_text_atomic(const std::string& path, const std::string& content);

}  // namespace rala::report
