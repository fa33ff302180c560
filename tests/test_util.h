#pragma once
/// \file test_util.h
/// Shared test helpers: golden-file access, weight loading by official key names, error measures, and the naive
/// building blocks (projections, feature maps, RoPE by its definition) used by the O(N²) reference formulas.

#include <torch/torch.h>

#include <string>

#include "attention_variants/attention.h"
#include "attention_variants/projected.h"

#include <filesystem>
#include <functional>

namespace rala::test {

/// Absolute path of a file in tests/data.
std::string data_path(const std::string& name);
/// A dataset of a tests/data file as a tensor.
torch::Tensor golden(const std::string& file, const std::string& dataset);

/// Copies every parameter and buffer of `module` from datasets `<group>/<name>` of a golden file (official key names).
/// A Linear weight (O, I) is accepted for a 1×1 conv weight (O, I, 1, 1). Fails the test if an entry is missing, has a
/// different number of elements, or the file holds entries the module does not have. `rename` maps module names to file names where they differ.
void load_state(torch::nn::Module& module, const std::string& file, const std::string& group = "state_dict",
                const std::map<std::string, std::string>& rename = {});

/// Fills every parameter with N(0, std) (seeded), so that no branch is hidden by a zero init.
void randomize(torch::nn::Module& module, uint64_t seed, double std = 0.3);

/// max |a − b| / max(|b|_max, tiny).
double max_rel_err(const torch::Tensor& a, const torch::Tensor& b);
/// max |a − b|.
double max_abs_err(const torch::Tensor& a, const torch::Tensor& b);
/// Largest error in units in the last place of `a`'s dtype (float32: 2⁻²³, bfloat16: 2⁻⁷ relative), measured
/// against the reference `b`: max over elements of |a − b| / ulp(max(|b|, floor)). `floor` > 0 measures small
/// elements in the ulps of that magnitude (for results that cancel, e.g. floor = max |b|).
double max_ulp_err(const torch::Tensor& a, const torch::Tensor& b, double floor = 0.0);
/// The same with an element-wise magnitude: ulps of max(|b|, magnitude) per element (e.g. |x|·|s| + |t| for x·s + t,
/// whose result may cancel to far below its terms).
double max_ulp_err(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& magnitude);

/// The same parameter tensor of a module by name (throws if absent).
torch::Tensor param(torch::nn::Module& module, const std::string& name);

/// 1×1 conv by its definition: y[b, o, n] = Σ_c w[o, c] x[b, c, n] + bias[o]; x (B, C, H, W) → (B, O, N) in float64.
torch::Tensor naive_conv1x1(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
/// Row r of the token-major (N, d) matrix of head `head` of channels [c0, c0+C) of a (B, *, N) projection, for image b.
torch::Tensor head_tokens(const torch::Tensor& proj, int64_t b, int64_t c0, int64_t C, int64_t heads, int64_t head);
/// RoPE by its definition: channel pair p of a d-vector at grid position (row, col) is rotated by pos·θ_a, where
/// pos = row for p < d/4 and col otherwise, a = p mod d/4, θ_a = 10000^(−a/(d/4 − 1)) (θ_0 = 1 when d = 4).
/// x: (N, d) in raster order of an H×W grid.
torch::Tensor naive_rope(const torch::Tensor& x, int64_t height, int64_t width);
/// elu(x) + 1 element-wise by its definition.
torch::Tensor naive_elu1(const torch::Tensor& x);
/// softmax of a 1-D tensor by its definition (max-shifted exp / sum).
torch::Tensor naive_softmax(const torch::Tensor& x);

/// Input helper: a seeded N(0,1) (B, C, H, W) tensor of the given dtype.
torch::Tensor random_input(int64_t B, int64_t C, int64_t H, int64_t W, uint64_t seed,
                           torch::Dtype dtype = torch::kFloat64);

/// The message of the error `fn` throws (c10::Error without its backtrace, or std::exception::what()), or
/// "<no exception>" when it throws none.
std::string error_message(const std::function<void()>& fn);

/// The golden rule of the parity tests: shapes equal and max |got − ref| ≤ rel·max(1, max|ref|). The measured deviation
/// is recorded as a test property (`--gtest_output=xml` lists it) and printed.
void expect_golden(const std::string& name, const torch::Tensor& got, const torch::Tensor& ref, double rel = 1e-5);

/// Runs a shell command as a user would (stderr merged into the result); *status gets pclose's status.
std::string run_command(const std::string& command, int* status);

/// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  explicit TempDir(const std::string& prefix = "rala_test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path path;
};

/// The attention matrix A (N, N) of image b, head `head`, given the float64 projection (B, 3C|4C, N).
using AttentionFormula = std::function<torch::Tensor(int64_t b, int64_t head, const torch::Tensor& proj)>;

struct NaiveResult {
  torch::Tensor attention;  ///< (B, h, N, N)
  torch::Tensor output;     ///< (B, h, N, d) = A·V, before LePE and gate
  torch::Tensor final;      ///< (B, C, H, W) after LePE (+ extra), gate and proj
};

/// O(N²) reference of a projected variant in float64: projection by definition, A from `formula`, y = A·V, then the
/// tail by definition (LePE as a depthwise conv of the raw v, `extra` added, ⊙ o when gated, 1×1 proj).
/// `extra(proj)`, if given, returns a (B, C, H, W) positional term (FLatten's DWC).
NaiveResult naive_attention(ProjectedAttention& module, const torch::Tensor& x, const AttentionFormula& formula,
                            const std::function<torch::Tensor(const torch::Tensor& proj)>& extra = {});

}  // namespace rala::test

/// Expects `stmt` to throw an error whose one-line message contains `text`.
#define EXPECT_ERROR_MENTIONS(stmt, text)                                                    \
  do {                                                                                       \
    const std::string msg_ = ::rala::test::error_message([&] { stmt; });                     \
    EXPECT_NE(msg_.find(text), std::string::npos) << "message: " << msg_;                    \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << "not one line: " << msg_;              \
  } while (0)
