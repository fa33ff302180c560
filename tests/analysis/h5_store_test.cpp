// rala::h5: reading the h5py-written golden files (values checked against h5dump output), round trips of every
// supported dtype, strings, attributes and extendible datasets, h5dump-compatibility of written files, one-line
// errors naming the path, and AtomicPath.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <H5Cpp.h>

#include "analysis/h5_store.h"

namespace rala::h5 {
namespace {

namespace fs = std::filesystem;

const std::string kData = RALA_TEST_DATA;
const std::string kAttention = kData + "/rala_attention.h5";
const std::string kRavlt = kData + "/ravlt_micro_rrss.h5";

/// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device rd;
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir_ = fs::temp_directory_path() / ("rala_h5_test_" + std::to_string(stamp) + "_" + std::to_string(rd()) + "_" +
                                        std::to_string(counter++));
    fs::create_directories(dir_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  const fs::path& path() const { return dir_; }

 private:
  fs::path dir_;
};

/// Runs f, expects a std::runtime_error, and returns its message ("" and a test failure when nothing is thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected std::runtime_error";
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void expect_one_line(const std::string& msg) {
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_EQ(msg.rfind("h5: ", 0), 0u) << msg;
}

// ---- golden files written by h5py ---------------------------------------------------------------------------------

TEST(H5Golden, AttentionDatasetsMatchH5dump) {
  File f(kAttention, Mode::read);
  EXPECT_EQ(f.path(), kAttention);
  EXPECT_TRUE(f.is_dataset("/input"));
  EXPECT_EQ(f.shape("/input"), (std::vector<int64_t>{2, 64, 7, 9}));
  EXPECT_EQ(f.shape("state_dict/qkvo.weight"), (std::vector<int64_t>{256, 64, 1, 1}));

  const torch::Tensor x = f.read("/input");
  ASSERT_EQ(x.scalar_type(), torch::kFloat32);
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({2, 64, 7, 9}));
  // h5dump -d /input -s "0,0,0,0" -c "1,1,2,9"
  const std::vector<float> row00 = {-0.693325f, 1.14272f, 0.0487732f, 0.475037f, -0.614338f,
                                    -0.729079f, -1.1555f, -0.645213f, 0.470262f};
  const std::vector<float> row01 = {1.92119f, 1.97493f, 0.375569f, -1.10708f, 0.240663f,
                                    -1.02142f, 0.91659f, -0.699531f, 0.00402702f};
  // h5dump -d /input -s "1,63,6,0" -c "1,1,1,9"
  const std::vector<float> last = {-0.492175f, -1.23156f, 0.446949f, 1.0097f, 0.382625f,
                                   0.433206f,  -0.368675f, 0.615405f, -1.22428f};
  for (int64_t w = 0; w < 9; ++w) {
    EXPECT_NEAR(x[0][0][0][w].item<float>(), row00[w], 1e-5) << w;
    EXPECT_NEAR(x[0][0][1][w].item<float>(), row01[w], 1e-5) << w;
    EXPECT_NEAR(x[1][63][6][w].item<float>(), last[w], 1e-5) << w;
  }

  const torch::Tensor wq = f.read("/state_dict/qkvo.weight");
  ASSERT_EQ(wq.sizes(), torch::IntArrayRef({256, 64, 1, 1}));
  // h5dump -d /state_dict/qkvo.weight -s "0,0,0,0" -c "2,4,1,1" and -s "255,60,0,0" -c "1,4,1,1"
  EXPECT_NEAR(wq[0][0][0][0].item<float>(), -0.175958f, 1e-6);
  EXPECT_NEAR(wq[0][3][0][0].item<float>(), -0.187574f, 1e-6);
  EXPECT_NEAR(wq[1][2][0][0].item<float>(), 0.386517f, 1e-6);
  EXPECT_NEAR(wq[1][3][0][0].item<float>(), 0.152369f, 1e-6);
  EXPECT_NEAR(wq[255][60][0][0].item<float>(), 0.0520588f, 1e-6);
  EXPECT_NEAR(wq[255][63][0][0].item<float>(), 0.115566f, 1e-6);

  // The convenience reader agrees.
  const torch::Tensor bias = read_tensor(kAttention, "/state_dict/qkvo.bias");
  ASSERT_EQ(bias.sizes(), torch::IntArrayRef({256}));
  EXPECT_NEAR(bias[0].item<float>(), 0.159286f, 1e-6);
  EXPECT_NEAR(bias[3].item<float>(), 0.210578f, 1e-6);
}

TEST(H5Golden, AttentionStructureAndAttributes) {
  File f(kAttention, Mode::read);
  EXPECT_EQ(f.list(), (std::vector<std::string>{"input", "output", "probes", "rope_cos", "rope_sin", "state_dict"}));
  EXPECT_EQ(f.list("/probes"),
            (std::vector<std::string>{"alpha", "kv_buffer", "normalizer_z", "output_pre_lepe"}));
  EXPECT_TRUE(f.exists("/"));
  EXPECT_TRUE(f.exists("/probes/kv_buffer"));
  EXPECT_TRUE(f.exists("probes/kv_buffer/"));
  EXPECT_TRUE(f.exists("/state_dict"));
  EXPECT_FALSE(f.exists("/probes/nope"));
  EXPECT_FALSE(f.exists("/nope/deeper/still"));
  EXPECT_FALSE(f.exists("/input/child"));  // runs through a dataset
  EXPECT_TRUE(f.is_group("/probes"));
  EXPECT_FALSE(f.is_dataset("/probes"));
  EXPECT_FALSE(f.is_dataset("/nope"));

  EXPECT_TRUE(f.has_attr("/", "H"));
  EXPECT_FALSE(f.has_attr("/", "nope"));
  EXPECT_EQ(f.attr_int("/", "H"), 7);
  EXPECT_EQ(f.attr_int("/", "W"), 9);
  EXPECT_EQ(f.attr_int("/", "dim"), 64);
  EXPECT_EQ(f.attr_int("/", "num_heads"), 2);
  EXPECT_DOUBLE_EQ(f.attr_double("/", "H"), 7.0);  // integer accepted as double
  EXPECT_EQ(f.attr_ints("/", "H"), (std::vector<int64_t>{7}));
  EXPECT_EQ(f.attr_string("/", "source"), "official RALA classification model code, GateLinearAttentionNoSilu");
  EXPECT_EQ(f.attr_names("/"), (std::vector<std::string>{"H", "W", "dim", "num_heads", "source"}));
}

TEST(H5Golden, RavltAttributesMatchH5dump) {
  File f(kRavlt, Mode::read);
  EXPECT_EQ(f.attr_ints("/", "embed_dims"), (std::vector<int64_t>{16, 32, 64, 128}));
  EXPECT_EQ(f.attr_ints("/", "depths"), (std::vector<int64_t>{1, 1, 2, 1}));
  EXPECT_EQ(f.attr_ints("/", "num_heads"), (std::vector<int64_t>{1, 2, 4, 4}));
  EXPECT_EQ(f.attr_int("/", "num_classes"), 10);
  EXPECT_EQ(f.attr_int("/", "projection"), 64);
  EXPECT_DOUBLE_EQ(f.attr_double("/", "drop_path_rate"), 0.0);
  EXPECT_EQ(f.attr_doubles("/", "mlp_ratios"), (std::vector<double>{3.5, 3.5, 3.5, 3.5}));
  EXPECT_EQ(f.attr_string("/", "source"), "official RALA classification model code, RAVLT");

  // Wrong-kind reads fail with one line naming the attribute and what was expected.
  std::string msg = error_of([&] { f.attr_int("/", "embed_dims"); });
  expect_one_line(msg);
  EXPECT_TRUE(contains(msg, "embed_dims") && contains(msg, "4 elements") && contains(msg, kRavlt)) << msg;
  msg = error_of([&] { f.attr_ints("/", "layerscales"); });  // h5py bool enum
  EXPECT_TRUE(contains(msg, "layerscales") && contains(msg, "enum") && contains(msg, "expected an integer")) << msg;
  msg = error_of([&] { f.attr_string("/", "num_classes"); });
  EXPECT_TRUE(contains(msg, "num_classes") && contains(msg, "int64") && contains(msg, "expected a string")) << msg;
  msg = error_of([&] { f.attr_int("/", "drop_path_rate"); });
  EXPECT_TRUE(contains(msg, "float64") && contains(msg, "expected an integer")) << msg;

  const torch::Tensor logits = f.read("/logits");
  ASSERT_EQ(logits.sizes(), torch::IntArrayRef({2, 10}));
  // h5dump -d /logits
  EXPECT_NEAR(logits[0][0].item<float>(), -0.0915906f, 1e-6);
  EXPECT_NEAR(logits[0][9].item<float>(), -0.0286878f, 1e-6);
  EXPECT_NEAR(logits[1][3].item<float>(), -0.16046f, 1e-6);
  EXPECT_EQ(f.list("/features"), (std::vector<std::string>{"0", "1", "2", "3", "4"}));
}

// ---- round trips -------------------------------------------------------------------------------------------------

TEST(H5RoundTrip, EveryDtypeContiguousAndNot) {
  TempDir tmp;
  const std::string path = tmp.file("dtypes.h5");
  const std::vector<torch::ScalarType> dtypes = {torch::kFloat32, torch::kFloat64, torch::kInt64, torch::kInt32,
                                                 torch::kUInt8};
  std::vector<torch::Tensor> written;
  {
    File f(path, Mode::truncate);
    for (size_t i = 0; i < dtypes.size(); ++i) {
      const auto dt = dtypes[i];
      torch::Tensor base = torch::arange(0, 60, torch::kFloat64).reshape({3, 4, 5});
      if (dt == torch::kFloat32 || dt == torch::kFloat64) base = base * 0.37 - 7.25;
      if (dt == torch::kInt64) base = base * 1e9 - 3e10;  // beyond int32
      if (dt == torch::kInt32) base = base - 30;
      base = base.to(dt);
      const torch::Tensor strided = base.permute({2, 0, 1});     // non-contiguous
      const torch::Tensor sliced = base.index({torch::indexing::Slice(), torch::indexing::Slice(0, 4, 2)});
      ASSERT_FALSE(strided.is_contiguous());
      ASSERT_FALSE(sliced.is_contiguous());
      const std::string name = std::string("t") + std::to_string(i);
      f.write("/" + name + "/plain", base);
      f.write("/" + name + "/strided", strided);
      f.write("/" + name + "/sliced", sliced, /*compress=*/true);
      f.write("/" + name + "/compressed", base, /*compress=*/true);
      written.insert(written.end(), {base, strided, sliced, base});
    }
    f.write("/scalar", torch::tensor(3.5, torch::kFloat64));
    f.write("/empty", torch::zeros({0, 3}, torch::kInt32), /*compress=*/true);
  }
  File f(path, Mode::read);
  const std::vector<std::string> kinds = {"plain", "strided", "sliced", "compressed"};
  for (size_t i = 0; i < dtypes.size(); ++i) {
    for (size_t k = 0; k < kinds.size(); ++k) {
      const std::string name = "/t" + std::to_string(i) + "/" + kinds[k];
      const torch::Tensor expect = written[i * kinds.size() + k];
      const torch::Tensor got = f.read(name);
      EXPECT_EQ(got.scalar_type(), dtypes[i]) << name;
      EXPECT_EQ(got.sizes(), expect.sizes()) << name;
      EXPECT_TRUE(torch::equal(got, expect)) << name;
      EXPECT_EQ(f.shape(name), expect.sizes().vec()) << name;
    }
  }
  const torch::Tensor scalar = f.read("/scalar");
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_DOUBLE_EQ(scalar.item<double>(), 3.5);
  EXPECT_EQ(f.shape("/scalar"), std::vector<int64_t>{});
  const torch::Tensor empty = f.read("/empty");
  EXPECT_EQ(empty.sizes(), torch::IntArrayRef({0, 3}));
  EXPECT_EQ(empty.scalar_type(), torch::kInt32);
}

TEST(H5RoundTrip, Strings) {
  TempDir tmp;
  const std::string path = tmp.file("strings.h5");
  const std::vector<std::string> values = {"alpha", "", "ünïcödé ✓ 注意力", "with spaces  ", "a/b"};
  {
    File f(path, Mode::truncate);
    f.write_strings("/meta/names", values);
    f.write_strings("/meta/none", {});
  }
  File f(path, Mode::read);
  EXPECT_EQ(f.read_strings("/meta/names"), values);
  EXPECT_EQ(f.read_strings("/meta/none"), std::vector<std::string>{});
  EXPECT_EQ(f.shape("/meta/names"), std::vector<int64_t>{5});
  const std::string msg = error_of([&] { f.read("/meta/names"); });
  EXPECT_TRUE(contains(msg, "/meta/names") && contains(msg, "string")) << msg;
  const std::string msg2 = error_of([&] { File(kAttention, Mode::read).read_strings("/input"); });
  EXPECT_TRUE(contains(msg2, "/input") && contains(msg2, "float32") && contains(msg2, "expected strings")) << msg2;
}

TEST(H5RoundTrip, AttributesOfEveryTypeOnRootGroupAndDataset) {
  TempDir tmp;
  const std::string path = tmp.file("attrs.h5");
  {
    File f(path, Mode::truncate);
    f.write("/g/data", torch::ones({2, 2}));
    for (const std::string obj : {"/", "/g", "/g/data"}) {
      f.set_attr(obj, "s", std::string("héllo wörld"));
      f.set_attr(obj, "c", "literal");
      f.set_attr(obj, "i", int64_t{-1234567890123});
      f.set_attr(obj, "d", 2.718281828459045);
      f.set_attr(obj, "vi", std::vector<int64_t>{3, -1, 4, 1, 5});
      f.set_attr(obj, "vd", std::vector<double>{0.5, -1.25, 1e300});
      f.set_attr(obj, "empty", std::vector<int64_t>{});
      f.set_attr(obj, "estr", std::string());
    }
    // Replacing an attribute, also with another type.
    f.set_attr("/", "i", int64_t{42});
    f.set_attr("/g", "s", 1.5);
    f.set_attr("/g/data", "d", std::string("now a string"));
  }
  File f(path, Mode::read);
  for (const std::string obj : {"/", "/g", "/g/data"}) {
    SCOPED_TRACE(obj);
    EXPECT_EQ(f.attr_string(obj, "c"), "literal");
    EXPECT_EQ(f.attr_ints(obj, "vi"), (std::vector<int64_t>{3, -1, 4, 1, 5}));
    EXPECT_EQ(f.attr_doubles(obj, "vd"), (std::vector<double>{0.5, -1.25, 1e300}));
    EXPECT_EQ(f.attr_ints(obj, "empty"), std::vector<int64_t>{});
    EXPECT_EQ(f.attr_string(obj, "estr"), "");
    EXPECT_TRUE(f.has_attr(obj, "vi"));
    EXPECT_FALSE(f.has_attr(obj, "missing"));
    EXPECT_EQ(f.attr_names(obj), (std::vector<std::string>{"c", "d", "empty", "estr", "i", "s", "vd", "vi"}));
  }
  EXPECT_EQ(f.attr_int("/", "i"), 42);
  EXPECT_EQ(f.attr_int("/g", "i"), -1234567890123);
  EXPECT_EQ(f.attr_string("/", "s"), "héllo wörld");
  EXPECT_DOUBLE_EQ(f.attr_double("/g", "s"), 1.5);
  EXPECT_DOUBLE_EQ(f.attr_double("/", "d"), 2.718281828459045);
  EXPECT_DOUBLE_EQ(f.attr_double("/g", "i"), -1234567890123.0);
  EXPECT_EQ(f.attr_string("/g/data", "d"), "now a string");
  EXPECT_EQ(f.attr_ints("/", "i"), std::vector<int64_t>{42});

  const std::string msg = error_of([&] { f.attr_int("/g", "missing"); });
  expect_one_line(msg);
  EXPECT_TRUE(contains(msg, "missing") && contains(msg, "/g") && contains(msg, path)) << msg;
  const std::string msg2 = error_of([&] { f.has_attr("/nope", "x"); });
  EXPECT_TRUE(contains(msg2, "'/nope' not found in " + path)) << msg2;
}

TEST(H5RoundTrip, ExtendibleAppendAcrossCallsAndReopen) {
  TempDir tmp;
  const std::string path = tmp.file("stream.h5");
  const torch::Tensor all = torch::arange(0, 11 * 3 * 2, torch::kFloat32).reshape({11, 3, 2}) * 0.5f;
  {
    File f(path, Mode::truncate);
    f.create_extendible("/results/rows", torch::kFloat32, {3, 2}, /*chunk_rows=*/4);
    EXPECT_EQ(f.shape("/results/rows"), (std::vector<int64_t>{0, 3, 2}));
    EXPECT_EQ(f.read("/results/rows").sizes(), torch::IntArrayRef({0, 3, 2}));
    f.append("/results/rows", all.slice(0, 0, 1));
    f.append("/results/rows", all.slice(0, 1, 6));
    f.append("/results/rows", all.slice(0, 6, 6));  // n == 0: no-op
    EXPECT_EQ(f.shape("/results/rows"), (std::vector<int64_t>{6, 3, 2}));
    EXPECT_TRUE(torch::equal(f.read("/results/rows"), all.slice(0, 0, 6)));

    f.create_extendible("/results/ids", torch::kInt64, {}, 2);
    f.append("/results/ids", torch::tensor({7, 8, 9}, torch::kInt64));
    // Without the gzip filter: the same rows back, across chunk boundaries.
    f.create_extendible("/results/plain", torch::kFloat64, {2}, 4, /*deflate=*/false);
    const torch::Tensor plain = torch::randn({9, 2}, torch::kFloat64);
    f.append("/results/plain", plain.slice(0, 0, 3));
    f.append("/results/plain", plain.slice(0, 3, 9));
    EXPECT_TRUE(torch::equal(f.read("/results/plain"), plain));
    f.flush();
  }
  {
    File f(path, Mode::read_write);
    // Non-contiguous rows are fine too.
    const torch::Tensor rest = all.slice(0, 6, 11).transpose(1, 2).contiguous().transpose(1, 2);
    ASSERT_FALSE(rest.is_contiguous());
    f.append("/results/rows", rest);
    f.append("/results/ids", torch::tensor({10}, torch::kInt64));

    std::string msg = error_of([&] { f.append("/results/rows", torch::zeros({2, 2, 3})); });
    expect_one_line(msg);
    EXPECT_TRUE(contains(msg, "/results/rows") && contains(msg, "(2, 2, 3)") && contains(msg, "(n, 3, 2)")) << msg;
    msg = error_of([&] { f.append("/results/rows", torch::zeros({2, 3, 2}, torch::kFloat64)); });
    EXPECT_TRUE(contains(msg, "Double") && contains(msg, "float32")) << msg;
    f.write("/fixed", torch::zeros({2, 2}));
    msg = error_of([&] { f.append("/fixed", torch::zeros({1, 2})); });
    EXPECT_TRUE(contains(msg, "/fixed") && contains(msg, "not extendible")) << msg;
    msg = error_of([&] { f.create_extendible("/bad", torch::kFloat32, {3, 0}); });
    EXPECT_TRUE(contains(msg, "/bad") && contains(msg, "(3, 0)")) << msg;
    msg = error_of([&] { f.create_extendible("/bad", torch::kFloat32, {3}, 0); });
    EXPECT_TRUE(contains(msg, "chunk_rows")) << msg;
  }
  File f(path, Mode::read);
  EXPECT_EQ(f.shape("/results/rows"), (std::vector<int64_t>{11, 3, 2}));
  EXPECT_TRUE(torch::equal(f.read("/results/rows"), all));
  EXPECT_TRUE(torch::equal(f.read("/results/ids"), torch::tensor({7, 8, 9, 10}, torch::kInt64)));
}

TEST(H5RoundTrip, AppendHandlesStayOpenAcrossReplaceMoveAndManySmallAppends) {
  // append() keeps datasets open (their chunk caches persist): reads in between, a dataset replaced while open, a
  // moved File and hundreds of one-row appends must all still give exactly the rows written.
  TempDir tmp;
  const std::string path = tmp.file("open.h5");
  const torch::Tensor rows = torch::arange(0, 300 * 4, torch::kFloat64).reshape({300, 4});
  {
    File f(path, Mode::truncate);
    f.create_extendible("/s/v", torch::kFloat64, {4}, 64);
    for (int64_t i = 0; i < 150; ++i) f.append("/s/v", rows.slice(0, i, i + 1));
    EXPECT_TRUE(torch::equal(f.read("/s/v"), rows.slice(0, 0, 150)));  // a second handle sees the cached rows
    File moved(std::move(f));
    for (int64_t i = 150; i < 300; ++i) moved.append("/s/v", rows.slice(0, i, i + 1));
    moved.create_extendible("/s/w", torch::kInt32, {2});
    moved.append("/s/w", torch::ones({3, 2}, torch::kInt32));
    moved.create_extendible("/s/w", torch::kInt32, {2});  // replaced while our handle was open
    moved.append("/s/w", torch::full({1, 2}, 7, torch::kInt32));
    moved.write("/s/w", torch::full({2, 2}, 5, torch::kInt32));  // replaced by a fixed dataset
    std::string msg = error_of([&] { moved.append("/s/w", torch::ones({1, 2}, torch::kInt32)); });
    EXPECT_TRUE(contains(msg, "not extendible")) << msg;
  }
  File f(path, Mode::read);
  EXPECT_TRUE(torch::equal(f.read("/s/v"), rows));
  EXPECT_TRUE(torch::equal(f.read("/s/w"), torch::full({2, 2}, 5, torch::kInt32)));
}

TEST(H5RoundTrip, NestedGroupsAndOverwrite) {
  TempDir tmp;
  const std::string path = tmp.file("nested.h5");
  {
    File f(path, Mode::truncate);
    f.write("a/b/c/d", torch::ones({3}));  // relative path, parents made on demand
    EXPECT_TRUE(f.exists("/a"));
    EXPECT_TRUE(f.is_group("/a/b"));
    EXPECT_TRUE(f.is_group("/a/b/c"));
    EXPECT_TRUE(f.is_dataset("/a/b/c/d"));
    f.write("/a/b/e", torch::zeros({1}));
    EXPECT_EQ(f.list("/a/b"), (std::vector<std::string>{"c", "e"}));
    EXPECT_EQ(f.list("/"), std::vector<std::string>{"a"});

    // Overwrite with a different shape and dtype.
    f.write("/a/b/c/d", torch::arange(6, torch::kInt32).reshape({2, 3}));
    f.write("/a/b/c/d", torch::arange(4, torch::kInt64).reshape({2, 2}));
    EXPECT_EQ(f.list("/a/b/c"), std::vector<std::string>{"d"});

    std::string msg = error_of([&] { f.write("/a/b/c/d/x", torch::ones({1})); });
    expect_one_line(msg);
    EXPECT_TRUE(contains(msg, "/a/b/c/d/x") && contains(msg, "'/a/b/c/d' is a dataset")) << msg;
    msg = error_of([&] { f.write("/a/b", torch::ones({1})); });
    EXPECT_TRUE(contains(msg, "/a/b") && contains(msg, "group")) << msg;
    msg = error_of([&] { f.write("/", torch::ones({1})); });
    EXPECT_TRUE(contains(msg, "root")) << msg;
    msg = error_of([&] { f.write("/bool", torch::ones({2}, torch::kBool)); });
    EXPECT_TRUE(contains(msg, "/bool") && contains(msg, "Bool") && contains(msg, "expected float32")) << msg;
    msg = error_of([&] { f.list("/a/b/e"); });
    EXPECT_TRUE(contains(msg, "/a/b/e") && contains(msg, "not a group")) << msg;
  }
  File f(path, Mode::read);
  const torch::Tensor d = f.read("/a/b/c/d");
  EXPECT_EQ(d.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(d, torch::arange(4, torch::kInt64).reshape({2, 2})));
}

TEST(H5RoundTrip, ReadWriteCreatesMissingFileAndWriteTensorHelper) {
  TempDir tmp;
  const std::string path = tmp.file("created.h5");
  {
    File f(path, Mode::read_write);
    f.write("/x", torch::full({2}, 4.0));
  }
  write_tensor(path, "/y", torch::full({3}, 5, torch::kInt32));
  EXPECT_TRUE(torch::equal(read_tensor(path, "/x"), torch::full({2}, 4.0)));
  EXPECT_TRUE(torch::equal(read_tensor(path, "/y"), torch::full({3}, 5, torch::kInt32)));
  // Mode::truncate starts over.
  { File f(path, Mode::truncate); }
  EXPECT_EQ(File(path, Mode::read).list(), std::vector<std::string>{});
}

TEST(H5RoundTrip, MovedFileKeepsWorking) {
  TempDir tmp;
  File a(tmp.file("m.h5"), Mode::truncate);
  File b(std::move(a));
  b.write("/v", torch::ones({2}));
  File c(tmp.file("n.h5"), Mode::truncate);
  c = std::move(b);
  EXPECT_TRUE(c.exists("/v"));
  EXPECT_EQ(c.path(), tmp.file("m.h5"));
}

TEST(H5RoundTrip, WrittenFileOpensWithH5dump) {
  if (std::system("command -v h5dump > /dev/null 2>&1") != 0) GTEST_SKIP() << "h5dump not installed";
  TempDir tmp;
  const std::string path = tmp.file("dump me.h5");
  {
    File f(path, Mode::truncate);
    f.write("/g/t", torch::randn({4, 5}), /*compress=*/true);
    f.write("/u8", torch::arange(10, torch::kUInt8));
    f.write_strings("/names", {"a", "bé"});
    f.create_extendible("/rows", torch::kFloat64, {2});
    f.append("/rows", torch::ones({3, 2}, torch::kFloat64));
    f.set_attr("/", "note", "written by rala::h5");
    f.set_attr("/g/t", "shape", std::vector<int64_t>{4, 5});
  }
  const std::string out = tmp.file("dump.txt");
  const int rc = std::system(("h5dump '" + path + "' > '" + out + "' 2>&1").c_str());
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << text;
  EXPECT_TRUE(contains(text, "written by rala::h5")) << text;
  EXPECT_TRUE(contains(text, "H5T_STD_U8LE")) << text;
  EXPECT_TRUE(contains(text, "H5S_UNLIMITED")) << text;
}

TEST(H5RoundTrip, ReadsFixedLengthStringsAndOtherNumericAttributeTypes) {
  // Written with the raw HDF5 C++ API: types the wrapper never writes but must read.
  TempDir tmp;
  const std::string path = tmp.file("foreign.h5");
  {
    H5::H5File raw(path, H5F_ACC_TRUNC);
    H5::StrType nullpad(H5::PredType::C_S1, 6);
    nullpad.setStrpad(H5T_STR_NULLPAD);
    const hsize_t n = 3;
    H5::DataSet ds = raw.createDataSet("/fixed", nullpad, H5::DataSpace(1, &n));
    const char names[] = {'a', 'b', 0, 0, 0, 0, 's', 'i', 'x', 'c', 'h', 'r', 0, 0, 0, 0, 0, 0};
    ds.write(names, nullpad);
    H5::StrType spacepad(H5::PredType::C_S1, 8);
    spacepad.setStrpad(H5T_STR_SPACEPAD);
    H5::Group root = raw.openGroup("/");
    root.createAttribute("padded", spacepad, H5::DataSpace(H5S_SCALAR)).write(spacepad, "ok      ");
    const uint16_t u16 = 65535;
    root.createAttribute("u16", H5::PredType::STD_U16BE, H5::DataSpace(H5S_SCALAR)).write(H5::PredType::NATIVE_UINT16,
                                                                                            &u16);
    const int8_t i8[2] = {-3, 4};
    const hsize_t two = 2;
    root.createAttribute("i8", H5::PredType::STD_I8LE, H5::DataSpace(1, &two)).write(H5::PredType::NATIVE_INT8, i8);
    const float f32 = 0.25f;
    root.createAttribute("f32", H5::PredType::IEEE_F32LE, H5::DataSpace(H5S_SCALAR)).write(H5::PredType::NATIVE_FLOAT,
                                                                                             &f32);
  }
  File f(path, Mode::read);
  EXPECT_EQ(f.read_strings("/fixed"), (std::vector<std::string>{"ab", "sixchr", ""}));
  EXPECT_EQ(f.attr_string("/", "padded"), "ok");
  EXPECT_EQ(f.attr_int("/", "u16"), 65535);
  EXPECT_EQ(f.attr_ints("/", "i8"), (std::vector<int64_t>{-3, 4}));
  EXPECT_DOUBLE_EQ(f.attr_double("/", "f32"), 0.25);
  EXPECT_DOUBLE_EQ(f.attr_double("/", "u16"), 65535.0);
}

// Variable-length string attributes pass the pre-read check (analysis/h5_vlen_check.h) in every object header layout
// libhdf5 writes: version 1 headers (the default), version 2 ("OHDR", libver latest, with creation order tracked),
// continuation chunks (many attributes), a 512-byte user block (addresses relative to the superblock), an empty
// string, and a contiguous dataset of them; and the check refuses the same file once the string's heap object is shorter than its declared length.
TEST(H5VlenCheck, EveryHeaderLayoutReadsAndACorruptedLengthIsRefused) {
  TempDir tmp;
  for (int layout = 0; layout < 4; ++layout) {
    const std::string path = tmp.file("vlen" + std::to_string(layout) + ".h5");
    {
      H5::FileCreatPropList fcpl;
      H5::FileAccPropList fapl;
      if (layout == 1) {
        fapl.setLibverBounds(H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
        H5Pset_attr_creation_order(fcpl.getId(), H5P_CRT_ORDER_TRACKED);
      }
      if (layout == 3) fcpl.setUserblock(512);
      H5::H5File raw(path, H5F_ACC_TRUNC, fcpl, fapl);
      H5::Group root = raw.openGroup("/");
      H5::StrType vstr(H5::PredType::C_S1, H5T_VARIABLE);
      const int extra = layout == 2 ? 40 : 0;  // forces continuation chunks in a version 1 header
      for (int i = 0; i < extra; ++i) {
        const std::string v = "filler " + std::to_string(i);
        const char* p = v.c_str();
        root.createAttribute("a" + std::to_string(i), vstr, H5::DataSpace(H5S_SCALAR)).write(vstr, &p);
      }
      const char* text = "the value that is read";
      root.createAttribute("note", vstr, H5::DataSpace(H5S_SCALAR)).write(vstr, &text);
      const char* empty = "";
      root.createAttribute("empty", vstr, H5::DataSpace(H5S_SCALAR)).write(vstr, &empty);
      const char* rows[3] = {"first", "", "third row"};
      const hsize_t three = 3;
      raw.createDataSet("/names", vstr, H5::DataSpace(1, &three)).write(rows, vstr);
    }
    File f(path, Mode::read);
    EXPECT_EQ(f.attr_string("/", "note"), "the value that is read") << "layout " << layout;
    EXPECT_EQ(f.attr_string("/", "empty"), "") << "layout " << layout;
    if (layout == 2) {
      EXPECT_EQ(f.attr_string("/", "a39"), "filler 39");
    }
    EXPECT_EQ(f.read_strings("/names"), (std::vector<std::string>{"first", "", "third row"})) << "layout " << layout;
  }
  // Corrupt the first file's global heap: the object holding "the value that is read" (22 bytes) declares 3.
  const std::string path = tmp.file("vlen0.h5");
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string text = "the value that is read";
  const size_t at = bytes.find(text);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(bytes[at - 8], 22);  // the object's 8-byte size precedes its data
  bytes[at - 8] = 3;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  File f(path, Mode::read);
  try {
    f.attr_string("/", "note");
    ADD_FAILURE() << "a 22-byte string in a 3-byte heap object was read";
  } catch (const std::exception& e) {
    // The shorter object also shifts every entry after it: refused, whichever inconsistency the walk meets first.
    // The dataset's strings live in the same collection: refused too.
    EXPECT_THROW(f.read_strings("/names"), std::runtime_error);
    EXPECT_NE(std::string(e.what()).find("is a corrupted variable-length string: it declares a string of 22 bytes"),
              std::string::npos)
        << e.what();
  }
}

// ---- errors ------------------------------------------------------------------------------------------------------

TEST(H5Errors, MissingFile) {
  TempDir tmp;
  const std::string path = tmp.file("does_not_exist.h5");
  std::string msg = error_of([&] { File f(path, Mode::read); });
  expect_one_line(msg);
  EXPECT_TRUE(contains(msg, path) && contains(msg, "no such file")) << msg;
  msg = error_of([&] { read_tensor(path, "/x"); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  const std::string in_missing_dir = tmp.file("no/such/dir/out.h5");
  msg = error_of([&] { File f(in_missing_dir, Mode::truncate); });
  expect_one_line(msg);
  EXPECT_TRUE(contains(msg, in_missing_dir) && contains(msg, "does not exist")) << msg;
  EXPECT_FALSE(fs::exists(path));
}

TEST(H5Errors, NotAnHdf5File) {
  TempDir tmp;
  const std::string path = tmp.file("text.h5");
  std::ofstream(path) << "this is plain text, not HDF5\n";
  for (Mode mode : {Mode::read, Mode::read_write}) {
    const std::string msg = error_of([&] { File f(path, mode); });
    expect_one_line(msg);
    EXPECT_TRUE(contains(msg, path) && contains(msg, "not an HDF5 file")) << msg;
  }
  const std::string empty = tmp.file("empty.h5");
  std::ofstream{empty};
  const std::string msg = error_of([&] { File f(empty, Mode::read); });
  EXPECT_TRUE(contains(msg, empty) && contains(msg, "not an HDF5 file")) << msg;
  const std::string dir_msg = error_of([&] { File f(tmp.path().string(), Mode::read); });
  EXPECT_TRUE(contains(dir_msg, "directory")) << dir_msg;
}

TEST(H5Errors, MissingDatasetAndReadOnlyWrites) {
  File f(kAttention, Mode::read);
  std::string msg = error_of([&] { f.read("/x/y"); });
  expect_one_line(msg);
  EXPECT_EQ(msg, "h5: '/x/y' not found in " + kAttention);
  msg = error_of([&] { f.shape("/state_dict/missing.weight"); });
  EXPECT_TRUE(contains(msg, "/state_dict/missing.weight") && contains(msg, kAttention)) << msg;
  msg = error_of([&] { f.read("/probes"); });
  EXPECT_TRUE(contains(msg, "/probes") && contains(msg, "is a group, not a dataset")) << msg;
  msg = error_of([&] { f.list("/nope"); });
  EXPECT_TRUE(contains(msg, "'/nope' not found")) << msg;
  msg = error_of([&] { f.write("/new", torch::ones({1})); });
  expect_one_line(msg);
  EXPECT_TRUE(contains(msg, "/new") && contains(msg, "read-only")) << msg;
  msg = error_of([&] { f.set_attr("/", "x", int64_t{1}); });
  EXPECT_TRUE(contains(msg, "read-only")) << msg;
  msg = error_of([&] { f.attr_int("/input", "nope"); });
  EXPECT_TRUE(contains(msg, "'nope' not found on '/input'")) << msg;
}

// ---- AtomicPath ----------------------------------------------------------------------------------------------------

TEST(H5AtomicPath, DestructorWithoutCommitRemovesPartial) {
  TempDir tmp;
  const std::string final_path = tmp.file("result.h5");
  {
    AtomicPath atomic(final_path);
    EXPECT_EQ(atomic.partial(), final_path + ".partial");
    {
      File f(atomic.partial(), Mode::truncate);
      f.write("/x", torch::ones({2}));
    }
    EXPECT_TRUE(fs::exists(atomic.partial()));
    EXPECT_FALSE(fs::exists(final_path));
  }
  EXPECT_FALSE(fs::exists(final_path));
  EXPECT_FALSE(fs::exists(final_path + ".partial"));
}

TEST(H5AtomicPath, CommitRenames) {
  TempDir tmp;
  const std::string final_path = tmp.file("result.h5");
  std::ofstream(final_path) << "old content";  // an existing final file is replaced
  {
    AtomicPath atomic(final_path);
    {
      File f(atomic.partial(), Mode::truncate);
      f.write("/x", torch::arange(3, torch::kInt64));
    }
    atomic.commit();
    EXPECT_TRUE(atomic.committed());
    EXPECT_FALSE(fs::exists(atomic.partial()));
    const std::string msg = error_of([&] { atomic.commit(); });
    EXPECT_TRUE(contains(msg, "already committed")) << msg;
  }
  ASSERT_TRUE(fs::exists(final_path));
  EXPECT_TRUE(torch::equal(read_tensor(final_path, "/x"), torch::arange(3, torch::kInt64)));
}

TEST(H5AtomicPath, CommitWithoutPartialThrowsAndStalePartialIsCleared) {
  TempDir tmp;
  const std::string final_path = tmp.file("result.h5");
  std::ofstream(final_path + ".partial") << "stale";
  AtomicPath atomic(final_path);
  EXPECT_FALSE(fs::exists(atomic.partial()));
  const std::string msg = error_of([&] { atomic.commit(); });
  expect_one_line(msg);
  EXPECT_TRUE(contains(msg, final_path) && contains(msg, ".partial") && contains(msg, "does not exist")) << msg;
  EXPECT_FALSE(fs::exists(final_path));

  // A moved-from AtomicPath does not remove the partial that now belongs to the new owner.
  AtomicPath moved(std::move(atomic));
  std::ofstream(moved.partial()) << "data";
  moved.commit();
  EXPECT_TRUE(fs::exists(final_path));
}

}  // namespace
}  // namespace rala::h5
