// `rala rank --shard K/N` and `rala rank-merge` as a user runs them: shards joined in any order equal the single run's
// file bit for bit (every dataset; every attribute but the merge's provenance), the summary table recomputed from the
// merged file is the single run's; shards of different analyses, missing or repeated shards and non-shards are one
// line naming the problem, with nothing written.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "analysis/h5_store.h"
#include "analysis/probe_recorder.h"
#include "experiments/data/image_source.h"
#include "experiments/rank.h"
#include "experiments/rank_merge.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;

// 11 synthetic images in batches of 2: 6 batches, so 3 shards of 2 batches (4, 4 and 3 images); RALA stages (kv_buffer,
// alpha) and softmax stages, per-head and all-heads probes.
const std::string kRank = std::string(RALA_BINARY) +
                          " rank --model ravlt_micro --attn-pattern RRSS --data synthetic --num-images 11 --image-size 32 "
                          "--probes kv_buffer,output,output_gated_all_heads,alpha --quiet ";

std::string run(const std::string& cmd, int* status) { return test::run_command(cmd, status); }

/// Every dataset and every attribute under `path` of `f`, as path → printable content (datasets: dtype, shape and
/// the raw bytes; attributes: text).
void collect(const h5::File& f, const std::string& path, std::map<std::string, std::string>& out) {
  for (const auto& a : f.attr_names(path)) out[path + "@" + a] = f.attr_text(path, a);
  if (f.is_dataset(path)) {
    if (path == "/images/names") {
      std::string all;
      for (const auto& s : f.read_strings(path)) all += s + "\n";
      out[path] = all;
    } else {
      const auto t = f.read(path).contiguous();
      out[path] = std::string(c10::toString(t.scalar_type())) + c10::str(t.sizes()) +
                  std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
    }
    return;
  }
  for (const auto& child : f.list(path)) collect(f, (path == "/" ? "" : path) + "/" + child, out);
}

void expect_equal_except_provenance(const fs::path& merged, const fs::path& single) {
  h5::File a(merged.string(), h5::Mode::read), b(single.string(), h5::Mode::read);
  std::map<std::string, std::string> ma, mb;
  collect(a, "/", ma);
  collect(b, "/", mb);
  const std::set<std::string> provenance = {"/@created_utc", "/@command_line", "/@merged_from"};
  size_t datasets = 0;
  for (const auto& [k, v] : mb) {
    if (provenance.count(k)) continue;
    ASSERT_TRUE(ma.count(k)) << k << " missing in the merged file";
    EXPECT_TRUE(ma.at(k) == v) << k << " differs";
    datasets += k.find('@') == std::string::npos;
  }
  for (const auto& [k, v] : ma) EXPECT_TRUE(mb.count(k) || provenance.count(k)) << k << " only in the merged file";
  EXPECT_GT(datasets, 20u);
  EXPECT_TRUE(ma.count("/@merged_from"));
}

std::string table_of(const std::string& out) {
  const auto start = out.find("\n") == std::string::npos ? 0 : out.find("kv_buffer:");
  return out.substr(start, out.find("wrote") - start);
}

TEST(RankShards, MergedShardsEqualTheSingleRunBitForBit) {
  test::TempDir dir;
  int status = 0;
  const auto single = run(kRank + "--batch-size 2 --out " + (dir.path / "single").string(), &status);
  ASSERT_EQ(status, 0) << single;
  std::vector<std::string> shards;
  for (int k : {2, 0, 1}) {  // any order
    const auto out = run(kRank + "--batch-size 2 --shard " + std::to_string(k) + "/3 --out " +
                             (dir.path / "shards").string(),
                         &status);
    ASSERT_EQ(status, 0) << out;
    shards.push_back((dir.path / "shards" / ("ravlt_micro_RRSS.shard-" + std::to_string(k) + "-of-3.h5")).string());
    h5::File f(shards.back(), h5::Mode::read);
    const int64_t offsets[] = {0, 4, 8}, counts[] = {4, 4, 3};
    EXPECT_EQ(f.attr_int("/", "image_offset"), offsets[k]);
    EXPECT_EQ(f.attr_int("/", "image_count"), counts[k]);
    EXPECT_EQ(f.attr_int("/", "num_images"), counts[k]);
    EXPECT_EQ(f.read_strings("/images/names").front(), "synthetic:" + std::to_string(offsets[k]));
  }
  const auto merged = dir.path / "merged.h5";
  const auto out = run(std::string(RALA_BINARY) + " rank-merge " + shards[0] + " " + shards[1] + " " + shards[2] +
                           " --out " + merged.string(),
                       &status);
  ASSERT_EQ(status, 0) << out;
  for (int k = 0; k < 3; ++k)  // one progress line per shard
    EXPECT_NE(out.find("rank-merge: shard " + std::to_string(k) + "/3"), std::string::npos) << out;
  expect_equal_except_provenance(merged, dir.path / "single" / "ravlt_micro_RRSS.h5");
  EXPECT_EQ(table_of(out), table_of(single)) << "the summary recomputed from the merged file is the single run's";
  EXPECT_FALSE(fs::exists(merged.string() + ".partial"));
}

// The recorder's summary, recomputed from the file it wrote, is the same numbers (the merge prints this).
TEST(RankShards, SummaryFromTheFileIsTheRecordersBitForBit) {
  test::TempDir dir;
  RankArgs a;
  a.model.model = "ravlt_micro";
  a.data = "synthetic";
  a.num_images = 5;
  a.batch_size = 2;
  a.image_size = 32;
  a.probes = "kv_buffer,output,output_all_heads";
  a.quiet = true;
  const auto path = (dir.path / "r.h5").string();
  const auto from_run = run_rank(a, "RRSS", path);
  h5::File f(path, h5::Mode::read);
  const auto from_file = summarize_results(f, /*block_rows=*/2);  // blocks do not change the order
  ASSERT_EQ(from_run.size(), from_file.size());
  for (const auto& [layer, probes] : from_run)
    for (const auto& [probe, s] : probes) {
      const auto& t = from_file.at(layer).at(probe);
      EXPECT_EQ(s.rank.count, t.rank.count) << layer << " " << probe;
      EXPECT_EQ(s.rank.mean, t.rank.mean) << layer << " " << probe;
      EXPECT_EQ(s.rank.m2, t.rank.m2) << layer << " " << probe;
      EXPECT_EQ(s.effective_rank.mean, t.effective_rank.mean) << layer << " " << probe;
      EXPECT_EQ(s.effective_rank.m2, t.effective_rank.m2) << layer << " " << probe;
    }
}

TEST(RankShards, ShardRangesAreWholeBatchesAndTileTheImages) {
  for (int64_t total : {1, 7, 11, 100}) {
    for (int64_t batch : {1, 3, 8}) {
      const int64_t batches = (total + batch - 1) / batch;
      for (int64_t n = 1; n <= std::min<int64_t>(batches, 5); ++n) {
        int64_t next = 0;
        for (int64_t k = 0; k < n; ++k) {
          const auto [b, e] = shard_range(ShardSpec{k, n}, total, batch);
          EXPECT_EQ(b, next);
          EXPECT_EQ(b % batch, 0);
          EXPECT_GT(e, b);
          next = e;
        }
        EXPECT_EQ(next, total);
      }
    }
  }
  try {
    shard_range(ShardSpec{6, 7}, 11, 2);
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("too few for 7 shards (use at most 6"), std::string::npos)
        << e.what_without_backtrace();
  }
  for (const char* bad : {"3/3", "a/b", "1/0", "-1/2", "1", "1/2/3", "+1/2"})
    EXPECT_THROW(parse_shard(bad), c10::Error) << bad;
  EXPECT_EQ(parse_shard("2/5").index, 2);
  EXPECT_FALSE(parse_shard("").sharded());
}

// Synthetic images are drawn batch by batch from one generator: a shard draws (and drops) the batches before it.
TEST(RankShards, ARestrictedSourceYieldsTheFullRunsImages) {
  for (const std::string spec : {"synthetic", "fashion-mnist"}) {
    if (spec == "fashion-mnist" && !fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")) continue;
    data::ImageSource full(spec, 16, 9, 4), part(spec, 16, 9, 4);
    part.restrict_to(4, 7, 2);
    EXPECT_EQ(part.size(), 3);
    EXPECT_EQ(part.total(), 9);
    std::vector<torch::Tensor> all;
    std::vector<std::string> names;
    while (auto b = full.next(2)) {
      all.push_back(b->images);
      names.insert(names.end(), b->names.begin(), b->names.end());
    }
    const auto whole = torch::cat(all);
    auto b = part.next(2);
    ASSERT_TRUE(b);
    EXPECT_TRUE(torch::equal(b->images, whole.narrow(0, 4, 2))) << spec;
    EXPECT_EQ(b->names.front(), names[4]);
    b = part.next(2);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->images.size(0), 1);
    EXPECT_TRUE(torch::equal(b->images, whole.narrow(0, 6, 1))) << spec;
    EXPECT_FALSE(part.next(2));
  }
}

class RankMergeErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    int status = 0;
    for (int k = 0; k < 3; ++k) {
      auto out = run(kRank + "--batch-size 2 --shard " + std::to_string(k) + "/3 --out " + dir_.path.string(), &status);
      ASSERT_EQ(status, 0) << out;
    }
  }
  std::string shard(int k) const {
    return (dir_.path / ("ravlt_micro_RRSS.shard-" + std::to_string(k) + "-of-3.h5")).string();
  }
  /// Runs rank-merge; expects failure with one error line containing `expected`, and no output file.
  void expect_refused(const std::string& files, const std::string& expected) {
    int status = 0;
    const auto out_file = dir_.path / "merged.h5";
    const auto out = run(std::string(RALA_BINARY) + " rank-merge --quiet " + files + " --out " + out_file.string(),
                         &status);
    EXPECT_NE(status, 0) << out;
    EXPECT_NE(out.find("rala: error: "), std::string::npos) << out;
    EXPECT_NE(out.find(expected), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    EXPECT_FALSE(fs::exists(out_file));
    EXPECT_FALSE(fs::exists(out_file.string() + ".partial"));
  }
  test::TempDir dir_;
};

TEST_F(RankMergeErrors, DifferentSettingsNameTheFirstDifference) {
  int status = 0;
  const auto other = dir_.path / "other";
  auto out = run(kRank + "--batch-size 2 --attn-opt rala.alpha=0 --shard 1/3 --out " + other.string(), &status);
  ASSERT_EQ(status, 0) << out;
  expect_refused(shard(0) + " " + (other / "ravlt_micro_RRSS_rala-alpha-0.shard-1-of-3.h5").string() + " " + shard(2),
                 "the shards disagree on attn_settings");
  out = run(kRank + "--batch-size 3 --shard 1/3 --out " + (dir_.path / "b3").string(), &status);
  ASSERT_EQ(status, 0) << out;
  expect_refused(shard(0) + " " + (dir_.path / "b3" / "ravlt_micro_RRSS.shard-1-of-3.h5").string() + " " + shard(2),
                 "the shards disagree on batch_size");
  out = run(std::string(RALA_BINARY) +
                " rank --model ravlt_micro --attn-pattern RRSS --data synthetic --num-images 11 --image-size 32 "
                "--probes kv_buffer,output --quiet --batch-size 2 --shard 1/3 --out " +
                (dir_.path / "probes").string(),
            &status);
  ASSERT_EQ(status, 0) << out;
  expect_refused(shard(0) + " " + (dir_.path / "probes" / "ravlt_micro_RRSS.shard-1-of-3.h5").string() + " " + shard(2),
                 "the shards disagree on the probes of layer 0.0");
}

TEST_F(RankMergeErrors, MissingRepeatedAndForeignFiles) {
  expect_refused(shard(0) + " " + shard(2), "shard 1 of 3 is missing");
  expect_refused(shard(0) + " " + shard(1) + " " + shard(1) + " " + shard(2), "shard 1/3 is given twice");
  int status = 0;
  auto out = run(kRank + "--batch-size 2 --out " + (dir_.path / "single").string(), &status);
  ASSERT_EQ(status, 0) << out;
  expect_refused((dir_.path / "single" / "ravlt_micro_RRSS.h5").string(), "is not a shard of a rank analysis");
  expect_refused((dir_.path / "nothing.h5").string(), "nothing.h5");
  // an existing --out is kept unless --overwrite
  const auto out_file = dir_.path / "merged.h5";
  { std::ofstream(out_file) << "keep"; }
  out = run(std::string(RALA_BINARY) + " rank-merge " + shard(0) + " " + shard(1) + " " + shard(2) + " --out " +
                out_file.string(),
            &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("exists; pass --overwrite"), std::string::npos) << out;
  std::ifstream in(out_file);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), "keep");
}

TEST(RankShards, BadShardFlagsAreOneLine) {
  test::TempDir dir;
  int status = 0;
  auto out = run(kRank + "--batch-size 2 --shard 3/3 --out " + dir.path.string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rala: error: --shard must be K/N with 0 <= K < N"), std::string::npos) << out;
  out = run(kRank + "--batch-size 2 --shard 6/7 --out " + dir.path.string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("too few for 7 shards"), std::string::npos) << out;
  EXPECT_TRUE(fs::is_empty(dir.path) || !fs::exists(dir.path / "ravlt_micro_RRSS.shard-6-of-7.h5"));
}

}  // namespace
}  // namespace rala
