// `rala info` as a user runs it: the binary prints versions, threads, the BLAS in use and every variant.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <memory>

#include "attention_variants/registry.h"
#include "experiments/runtime.h"
#include "tests/test_util.h"

namespace rala {
namespace {

std::string run(const std::string& cmd, int* status) { return test::run_command(cmd, status); }

TEST(InfoCommand, PrintsVersionsThreadsBlasAndEveryVariant) {
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " --threads 2 info", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("LibTorch 1."), std::string::npos) << out;
  EXPECT_NE(out.find("threads  2 intra-op"), std::string::npos) << out;
  EXPECT_NE(out.find("BLAS     /"), std::string::npos) << out;
  for (const auto& v : kVariants) EXPECT_NE(out.find(v.name), std::string::npos) << v.name;
}

// The instruction-set flags the kernel reports, read independently of the compiler's cpuid builtins.
std::string cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) return line + " ";
  return "";
}

bool has_flag(const std::string& flags, const std::string& f) { return flags.find(" " + f + " ") != std::string::npos; }

TEST(BlasKernels, UnrecognisedCpuGetsTheKernelsOfItsInstructionSet) {
  const std::string flags = cpu_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags line";
  const bool avx512 = has_flag(flags, "avx512f") && has_flag(flags, "avx512bw") && has_flag(flags, "avx512dq") &&
                      has_flag(flags, "avx512vl") && has_flag(flags, "avx512cd");
  const bool avx2 = has_flag(flags, "avx2") && has_flag(flags, "fma");
  const std::string expected = avx512 ? "SkylakeX" : avx2 ? "Haswell" : "";
  EXPECT_EQ(better_blas_core("Prescott"), expected);
  EXPECT_EQ(better_blas_core("SkylakeX"), "");  // a recognised core is left alone
  EXPECT_EQ(better_blas_core("Zen"), "");

  // The binary as a user starts it: without OPENBLAS_CORETYPE it runs the better kernels when the library's own
  // choice (this test process's, which never re-executes) was a generic one; with RALA_BLAS_CORETYPE=keep it does not.
  int status = 0;
  const std::string own = run("unset OPENBLAS_CORETYPE; RALA_BLAS_CORETYPE=keep " + std::string(RALA_BINARY) + " info",
                              &status);
  ASSERT_EQ(status, 0) << own;
  const std::string tuned = run("unset OPENBLAS_CORETYPE RALA_BLAS_CORETYPE; " + std::string(RALA_BINARY) + " info",
                                &status);
  ASSERT_EQ(status, 0) << tuned;
  if (own.find("OpenBLAS") == std::string::npos) GTEST_SKIP() << "the BLAS is not OpenBLAS: " << own;
  if (own.find(" Prescott ") == std::string::npos || expected.empty())
    GTEST_SKIP() << "OpenBLAS recognises this CPU or it has no better kernels; nothing to select";
  EXPECT_NE(tuned.find(" " + expected + " "), std::string::npos) << tuned;
  EXPECT_EQ(tuned.find(" Prescott "), std::string::npos) << tuned;
}

TEST(InfoCommand, BadFlagsFailWithOneLine) {
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " --threads -3 info", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("--threads"), std::string::npos) << out;
  out = run(std::string(RALA_BINARY) + " frobnicate", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("frobnicate"), std::string::npos) << out;
}

TEST(InfoCommand, ModelParamsAndBothGmacs) {
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " info --model RAVLT_T", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("14897768"), std::string::npos) << out;  // official parameter count
  EXPECT_NE(out.find("2.41"), std::string::npos) << out;      // GMACs without / with attention matmuls
  EXPECT_NE(out.find("2.61"), std::string::npos) << out;
  out = run(std::string(RALA_BINARY) + " info --model ravlt_micro --attn-pattern RRRR --attn-opt alpha=0 --image-size 28",
            &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("RRRR with alpha=0"), std::string::npos) << out;
  EXPECT_NE(out.find("28x28"), std::string::npos) << out;
  out = run(std::string(RALA_BINARY) + " info", &status);
  for (const char* preset : {"ravlt_t", "ravlt_s", "ravlt_b", "ravlt_l", "ravlt_micro", "deit_tiny", "deit_small"})
    EXPECT_NE(out.find(preset), std::string::npos) << preset;
}

TEST(InfoCommand, UnknownModelOrPatternIsOneClearLine) {
  int status = 0;
  auto out = run(std::string(RALA_BINARY) + " info --model ravlt_xxl", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rala: error: unknown model preset 'ravlt_xxl'"), std::string::npos) << out;
  out = run(std::string(RALA_BINARY) + " info --model ravlt_t --attn-pattern RRQS", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("unknown attention pattern letter 'Q'"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

}  // namespace
}  // namespace rala
