// safetensors: fixtures written by an independent writer (tests/data/make_safetensors_fixtures.py, stdlib + numpy) read
// back exactly; the golden micro model loads from .safetensors and gives the official logits; our writer's files are
// read by an independent reader (Python stdlib + numpy, when /usr/bin/python3 has numpy); every hostile header is one
// line, before any allocation.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "analysis/h5_store.h"
#include "models/checkpoint.h"
#include "models/safetensors.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;


TEST(Safetensors, EveryDtypeOfTheIndependentFixtureReadsExactly) {
  auto st = read_safetensors(test::data_path("safetensors_dtypes.safetensors"));
  EXPECT_EQ(st.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"note", "fixture"}}));
  ASSERT_EQ(st.tensors.size(), 9u);
  const auto& t = st.tensors;
  EXPECT_TRUE(torch::equal(t.at("f32"), (torch::arange(6, torch::kFloat32) / 4 - 0.5).reshape({2, 3})));
  auto f64 = t.at("f64");
  ASSERT_EQ(f64.scalar_type(), torch::kFloat64);
  EXPECT_EQ(f64[0][1].item<double>(), -2.5);
  EXPECT_EQ(f64[1][0].item<double>(), 1e-300);
  EXPECT_EQ(f64[1][1].item<double>(), 3e300);
  auto f16 = t.at("f16");
  ASSERT_EQ(f16.scalar_type(), torch::kFloat16);
  EXPECT_TRUE(torch::equal(f16.to(torch::kFloat64),
                           torch::tensor({0.5, -1.25, 65504.0, std::ldexp(1.0, -24)}, torch::kFloat64)));
  auto bf16 = t.at("bf16");
  ASSERT_EQ(bf16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(bf16.to(torch::kFloat64), torch::tensor({1.0, -2.0, 3.140625}, torch::kFloat64)));
  EXPECT_TRUE(torch::equal(t.at("i64"), torch::tensor({-(int64_t{1} << 62), int64_t{0}, int64_t{7}})));
  EXPECT_TRUE(torch::equal(t.at("i32"), torch::tensor({-5, 123456}, torch::kInt32)));
  EXPECT_TRUE(torch::equal(t.at("u8"), torch::tensor({0, 128, 255}, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(t.at("bool"), torch::tensor({true, false, false, true})));
  EXPECT_EQ(t.at("empty").sizes(), (std::vector<int64_t>{0, 3}));
}

TEST(Safetensors, GoldenMicroModelLoadsAndGivesTheOfficialLogits) {
  test::TempDir tmp("rala_st");
  const auto out = (tmp.path / "logits.h5").string();
  int status = 0;
  auto log = test::run_command(std::string(RALA_BINARY) +
                                   " predict --model ravlt_micro --attn-pattern RRSS --checkpoint " +
                                   test::data_path("ravlt_micro_rrss.safetensors") + " --input-h5 " +
                                   test::data_path("ravlt_micro_rrss.h5") + " --output-h5 " + out,
                               &status);
  ASSERT_EQ(status, 0) << log;
  auto ref = test::golden("ravlt_micro_rrss.h5", "logits");
  EXPECT_LE(test::max_abs_err(h5::read_tensor(out, "logits"), ref), 1e-4 * std::max(1.0, ref.abs().max().item<double>()));
  // A key other than model does not apply to a safetensors file.
  EXPECT_NE(test::error_message([] { read_checkpoint(test::data_path("ravlt_micro_rrss.safetensors"), "model_ema"); })
                .find("holds one state dict"),
            std::string::npos);
}

TEST(Safetensors, OwnFilesRoundTripAndAnIndependentReaderAgrees) {
  test::TempDir tmp("rala_st");
  const auto path = (tmp.path / "own.safetensors").string();
  std::map<std::string, torch::Tensor> tensors{
      {"b.weight", torch::randn({3, 5}, torch::kFloat32)},
      {"a.half", torch::randn({7}).to(torch::kFloat16)},
      {"c.bf16", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"d.count", torch::tensor({int64_t{42}})},
      {"e.view", torch::arange(20, torch::kFloat64).reshape({4, 5}).t()},  // non-contiguous
  };
  write_safetensors(path, tensors, {{"rala_meta", R"({"attn_pattern": "RRSS"})"}, {"epoch", "3"}});
  EXPECT_FALSE(fs::exists(path + ".partial"));
  auto back = read_safetensors(path);
  ASSERT_EQ(back.tensors.size(), tensors.size());
  for (const auto& [k, v] : tensors) EXPECT_TRUE(torch::equal(back.tensors.at(k), v.contiguous())) << k;
  auto ck = read_checkpoint(path);
  EXPECT_EQ(ck.epoch, 3);
  EXPECT_EQ(ck.meta, R"({"attn_pattern": "RRSS"})");
  // An independent reader: Python's struct/json and numpy, from the format's definition.
  int status = 0;
  auto has_numpy = test::run_command("/usr/bin/python3 -c 'import numpy' 2>&1", &status);
  if (status != 0) GTEST_SKIP() << "/usr/bin/python3 with numpy not available: " << has_numpy;
  const std::string script =
      "import json,struct,sys,numpy as np\n"
      "b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); d=b[8+n:]\n"
      "assert (8+n) % 8 == 0\n"
      "e=h['e.view']; a=np.frombuffer(d[e['data_offsets'][0]:e['data_offsets'][1]],'<f8').reshape(e['shape'])\n"
      "assert (a==np.arange(20.).reshape(4,5).T).all(), a\n"
      "c=h['d.count']; assert np.frombuffer(d[c['data_offsets'][0]:c['data_offsets'][1]],'<i8')[0]==42\n"
      "print(h['__metadata__']['epoch'], sorted(k for k in h if k!='__metadata__'))\n";
  const auto py = (tmp.path / "check.py").string();
  std::ofstream(py) << script;
  auto out = test::run_command("/usr/bin/python3 " + py + " " + path, &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("3 ['a.half', 'b.weight', 'c.bf16', 'd.count', 'e.view']"), std::string::npos) << out;
}

/// Bytes of a safetensors file with the given header text and `data_bytes` zero bytes of data.
std::string file_bytes(const std::string& header, size_t data_bytes, int64_t claimed_length = -1) {
  std::string b(8, '\0');
  const uint64_t n = claimed_length < 0 ? header.size() : static_cast<uint64_t>(claimed_length);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return b + header + std::string(data_bytes, '\0');
}

TEST(Safetensors, HostileHeadersAreOneLineBeforeAnyAllocation) {
  struct Case {
    std::string bytes, expected;
  };
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::vector<Case> cases = {
      {"abc", "fewer than the 8-byte header length"},
      {file_bytes("{}", 0, int64_t{1} << 40), "header length 1099511627776 is impossible"},
      {file_bytes("[1,2]", 0), "does not start with '{'"},
      {file_bytes("{\"t\":", 0), "not a JSON object"},
      {file_bytes("{" + std::string(100, '[') + std::string(100, ']') + "}", 0), "nests deeper than 16"},
      {file_bytes(R"({"t":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2), "has dtype \"F8\""},
      {file_bytes(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative integers"},
      {file_bytes(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8), "non-negative integers"},
      {file_bytes(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "do not hold [3] F32"},
      {file_bytes(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "overflows"},
      {file_bytes(R"({"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}})", 8),
       "past the 8 bytes of data"},
      {file_bytes("{" + ok_entry + R"(,"u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "overlaps"},
      {file_bytes("{" + ok_entry + R"(,"u":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16),
       "unclaimed bytes [8, 12)"},
      {file_bytes("{" + ok_entry + "}", 12), "cover 8 of the 12 data bytes"},
      {file_bytes(R"({"__metadata__":{"a":1}})", 0), "__metadata__ entry 'a' is not a string"},
      {file_bytes(R"({"t":{"dtype":"F32","shape":[2]}})", 8), "must be an object with dtype, shape and data_offsets"},
      {file_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "do not hold"},
  };
  for (const auto& c : cases) {
    auto msg = test::error_message([&] { parse_safetensors(c.bytes, "hostile"); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << "expected '" << c.expected << "', got: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("safetensors 'hostile': ", 0), 0u) << msg;
  }
  // A valid file parses (the cases above differ from it in one thing each).
  EXPECT_EQ(parse_safetensors(file_bytes("{" + ok_entry + "}", 8), "ok").tensors.at("t").numel(), 2);
  // Through the checkpoint reader with a file on disk, the error names the file.
  test::TempDir tmp("rala_st");
  const auto bad = (tmp.path / "bad.safetensors").string();
  std::ofstream(bad, std::ios::binary) << file_bytes("{" + ok_entry + "}", 12);
  auto msg = test::error_message([&] { read_checkpoint(bad); });
  EXPECT_NE(msg.find(bad), std::string::npos) << msg;
}

TEST(Safetensors, ConvertWritesWhatPredictReadsBack) {
  // The official-format micro checkpoint → .safetensors → the official logits; and back to our own format.
  test::TempDir tmp("rala_st");
  const auto st = (tmp.path / "micro.safetensors").string(), pth = (tmp.path / "micro.pth").string();
  const auto logits = (tmp.path / "logits.h5").string();
  const std::string bin = RALA_BINARY;
  int status = 0;
  auto log = test::run_command(bin + " convert --checkpoint " + test::data_path("checkpoint_official_micro.pth") +
                                   " --out " + st, &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_NE(log.find("[model] to " + st), std::string::npos) << log;
  log = test::run_command(bin + " convert --checkpoint " + st + " --out " + pth, &status);
  ASSERT_EQ(status, 0) << log;
  for (const auto& ckpt : {st, pth}) {
    log = test::run_command(bin + " predict --model ravlt_micro --attn-pattern RRSS --checkpoint " + ckpt +
                                " --input-h5 " + test::data_path("ravlt_micro_rrss.h5") + " --output-h5 " + logits,
                            &status);
    ASSERT_EQ(status, 0) << log;
    auto ref = test::golden("ravlt_micro_rrss.h5", "logits");
    EXPECT_LE(test::max_abs_err(h5::read_tensor(logits, "logits"), ref),
              1e-4 * std::max(1.0, ref.abs().max().item<double>())) << ckpt;
  }
  // Refusals: an existing output, an unknown extension.
  log = test::run_command(bin + " convert --checkpoint " + st + " --out " + pth, &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(log.find("exists; pass --overwrite"), std::string::npos) << log;
  log = test::run_command(bin + " convert --checkpoint " + st + " --out " + (tmp.path / "x.bin").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(log.find("must end in .safetensors or .pth"), std::string::npos) << log;
}

}  // namespace
}  // namespace rala
