#pragma once
/// \file figures.h
/// The report's figures as gnuplot specs (data + script), built from loaded inputs. Each builder returns the spec,
/// or sets `*skip` to a one-line reason and returns nothing when the inputs lack its data.
///
///   std::string why;
///   if (auto spec = rala::report::kv_buffer_rank_figure(inputs, &why)) render_figure(*spec, dir, formats, gp);
///   else notes.push_back(why);

#include <optional>
#include <string>
#include <vector>

#include "reports/gnuplot.h"
#include "reports/report_inputs.h"

namespace rala::report {

/// (1) Numerical rank of `kv_buffer` per layer: grouped bars (one group per layer, one bar per rank file), mean over
/// images and heads, error bars = sample std; the bound d (= k, the smaller matrix dimension) marked per layer.
std::optional<FigureSpec> kv_buffer_rank_figure(const std::vector<InputFile>& inputs, std::string* skip);

/// The layer figure (2) uses: `requested` when given (must exist in some rank file, else throws listing the layers),
/// else the first layer (in (stage, block) order) whose variant is not softmax and that holds `probe`.
std::string spectrum_layer(const std::vector<InputFile>& inputs, const std::string& requested,
                           const std::string& probe);

/// (2) Normalised spectra σ_i/σ_1 (log scale) of `probe` in `layer`: one curve per rank file, median over images and
/// heads, inter-quartile band.
std::optional<FigureSpec> spectrum_figure(const std::vector<InputFile>& inputs, const std::string& layer,
                                          const std::string& probe, std::string* skip);

/// (3) Numerical rank of `output` (before the gate) vs `output_gated` (after) per layer, bars per rank file.
std::optional<FigureSpec> gate_rank_figure(const std::vector<InputFile>& inputs, std::string* skip);

/// (3b) The paper's Figure 2, sharper, for a rank file made with `rala rank --protocol paper`: per layer, the numerical
/// rank (numpy rule, mean over images and heads) of the KV buffer without α (kv_buffer_unweighted: what a linear
/// attention on the same keys holds) and with α (kv_buffer), and of the output before the gate (output) and after it
/// (output_gated); softmax layers (no buffer) show their outputs as the reference. `full_map`: the same for the whole
/// N×C output of the layer (output_all_heads, output_gated_all_heads) instead of per head.
std::optional<FigureSpec> paper_rank_figure(const InputFile& input, const std::string& name, bool full_map,
                                            std::string* skip);

/// (4) Effective rank of `probe` per head (mean over images) as a heat map, layers × heads, for one rank file.
std::optional<FigureSpec> head_heatmap_figure(const InputFile& input, const std::string& name,
                                              const std::string& probe, std::string* skip);

/// (5) From an ablation table: top-1 (mean ± std over seeds) against the mean kv_buffer effective rank, one labelled
/// point per configuration.
std::optional<FigureSpec> ablation_figure(const InputFile& input, const std::string& name, std::string* skip);

/// (6) From a benchmark table (`bench`: throughput and peak memory vs image size; `bench_attention`: time and peak
/// memory vs tokens), log-log, one line per pattern/variant (and mode, model, … where those vary), the least-squares
/// slope of log y on log x in the legend.
std::optional<FigureSpec> scaling_figure(const InputFile& input, const std::string& name, std::string* skip);

/// Training curve: test top-1 (and its EMA when present) per epoch, one line per training file.
std::optional<FigureSpec> training_figure(const std::vector<InputFile>& inputs, std::string* skip);

/// Least-squares slope of log(y) on log(x) over the points with x, y > 0; NaN with fewer than two distinct x.
double loglog_slope(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace rala::report
