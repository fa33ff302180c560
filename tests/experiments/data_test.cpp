// experiments/data: Fashion-MNIST loading, image decoding, ImageFolder and transforms, each checked against an
// independent reference (raw bytes via `gzip -dc`, fixtures written by ImageMagick, a double-precision resampler
// written from the PIL filter definition, brute-force window searches).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "experiments/data/fashion_mnist.h"
#include "experiments/data/image_folder.h"
#include "experiments/data/transforms.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
// stb_image_write 1.16's JPEG bit writer left-shifts negative ints (UB that every compiler defines as the two's
// complement shift): the sanitizer build does not check this test-only writer's functions.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((no_sanitize("shift"))), apply_to = function)
#endif
#include <stb/stb_image_write.h>
#if defined(__clang__)
#pragma clang attribute pop
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace rala::data {
namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("rala_data_test_" + std::to_string(::getpid()) + "_" +
                                         std::to_string(counter++) + "_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string str(const std::string& name = "") const {
    return name.empty() ? path_.string() : (path_ / name).string();
  }

 private:
  fs::path path_;
};

std::string fixture(const std::string& name) { return std::string(RALA_TEST_DATA) + "/images/" + name; }

/// Runs `fn`, expects a c10::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "expected one line: " << msg;
    return;
  }
  ADD_FAILURE() << "no c10::Error thrown";
}

/// The first `n` bytes of the decompressed file, read by the gzip tool (independent of the loader's zlib code).
std::vector<uint8_t> gunzip_prefix(const std::string& path, size_t n) {
  const std::string cmd = "gzip -dc '" + path + "' 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << cmd;
  std::vector<uint8_t> out(n);
  size_t got = pipe ? fread(out.data(), 1, n, pipe) : 0;
  if (pipe) pclose(pipe);  // gzip may die of SIGPIPE when we stop early: fine
  out.resize(got);
  return out;
}

void put_u32(std::vector<uint8_t>& v, uint32_t x) {
  v.push_back(static_cast<uint8_t>(x >> 24));
  v.push_back(static_cast<uint8_t>(x >> 16));
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), int(bytes.size()));
  }
  gzclose(f);
}

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

/// IDX image file bytes: magic, count, rows, cols, then `pixels` (or count·rows·cols bytes of i mod 251).
std::vector<uint8_t> idx_images(uint32_t magic, uint32_t count, uint32_t rows, uint32_t cols, int64_t data_images) {
  std::vector<uint8_t> v;
  put_u32(v, magic);
  put_u32(v, count);
  put_u32(v, rows);
  put_u32(v, cols);
  for (int64_t i = 0; i < data_images * rows * cols; ++i) v.push_back(static_cast<uint8_t>(i % 251));
  return v;
}

std::vector<uint8_t> idx_labels(uint32_t magic, const std::vector<uint8_t>& labels, uint32_t count) {
  std::vector<uint8_t> v;
  put_u32(v, magic);
  put_u32(v, count);
  v.insert(v.end(), labels.begin(), labels.end());
  return v;
}

/// A (H, W, comp) interleaved byte image as stb_image_write wants it.
std::vector<uint8_t> random_pixels(int h, int w, int comp, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> px(static_cast<size_t>(h * w * comp));
  for (auto& p : px) p = static_cast<uint8_t>(rng() & 0xff);
  return px;
}

void write_png(const std::string& path, int h, int w, int comp, const std::vector<uint8_t>& px) {
  ASSERT_NE(stbi_write_png(path.c_str(), w, h, comp, px.data(), w * comp), 0) << path;
}

/// Expected (3, H, W) RGB tensor of interleaved pixels with `comp` channels (grey replicated, alpha dropped).
torch::Tensor expected_rgb(int h, int w, int comp, const std::vector<uint8_t>& px) {
  auto t = torch::empty({3, h, w}, torch::kUInt8);
  auto a = t.accessor<uint8_t, 3>();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const size_t base = static_cast<size_t>((y * w + x) * comp);
        a[c][y][x] = comp >= 3 ? px[base + c] : px[base];
      }
  return t;
}

// ------------------------------------------------------------------------------------------------
// Fashion-MNIST
// ------------------------------------------------------------------------------------------------

const std::string kFashionDir = "/usr/share/datasets/fashion-mnist";

void check_first_100(bool train) {
  ASSERT_TRUE(fs::is_directory(kFashionDir)) << kFashionDir << " missing: install dataset-fashion-mnist";
  const auto d = load_fashion_mnist(train, 100, kFashionDir);
  ASSERT_EQ(d.images.sizes(), torch::IntArrayRef({100, 1, 28, 28}));
  ASSERT_EQ(d.labels.sizes(), torch::IntArrayRef({100}));
  EXPECT_EQ(d.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(d.labels.scalar_type(), torch::kInt64);
  EXPECT_GE(d.labels.min().item<int64_t>(), 0);
  EXPECT_LE(d.labels.max().item<int64_t>(), 9);
  ASSERT_EQ(d.classes.size(), 10u);
  EXPECT_EQ(d.classes[0], "T-shirt/top");
  EXPECT_EQ(d.classes[9], "Ankle boot");

  const std::string prefix = kFashionDir + (train ? "/train" : "/t10k");
  const auto raw_labels = gunzip_prefix(prefix + "-labels-idx1-ubyte.gz", 8 + 100);
  ASSERT_EQ(raw_labels.size(), 108u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(d.labels[i].item<int64_t>(), raw_labels[8 + i]) << "label " << i;
  // Known fact: the first image of both the training and the test set is an ankle boot.
  EXPECT_EQ(d.labels[0].item<int64_t>(), 9);
  EXPECT_EQ(d.classes[d.labels[0].item<int64_t>()], "Ankle boot");

  const auto raw_images = gunzip_prefix(prefix + "-images-idx3-ubyte.gz", 16 + 100 * 784);
  ASSERT_EQ(raw_images.size(), size_t{16 + 100 * 784});
  int64_t raw_sum0 = 0;
  for (int k = 0; k < 784; ++k) raw_sum0 += raw_images[16 + k];
  EXPECT_EQ(d.images[0].sum().item<int64_t>(), raw_sum0);
  EXPECT_GT(raw_sum0, 0);
  const auto expected = torch::from_blob(const_cast<uint8_t*>(raw_images.data()) + 16, {100, 1, 28, 28}, torch::kUInt8);
  EXPECT_TRUE(torch::equal(d.images, expected));
}

TEST(FashionMnist, TrainFirst100MatchRawFiles) { check_first_100(true); }
TEST(FashionMnist, TestFirst100MatchRawFiles) { check_first_100(false); }

TEST(FashionMnist, FullSetsHaveKnownSizesAndBalancedClasses) {
  ASSERT_TRUE(fs::is_directory(kFashionDir)) << kFashionDir << " missing: install dataset-fashion-mnist";
  for (bool train : {true, false}) {
    const auto d = load_fashion_mnist(train, -1, kFashionDir);
    const int64_t n = train ? 60000 : 10000;
    ASSERT_EQ(d.images.sizes(), torch::IntArrayRef({n, 1, 28, 28}));
    ASSERT_EQ(d.labels.size(0), n);
    const auto counts = torch::bincount(d.labels, {}, 10);
    for (int k = 0; k < 10; ++k) EXPECT_EQ(counts[k].item<int64_t>(), n / 10) << "class " << k;
  }
}

TEST(FashionMnist, DefaultDirHonoursEnvironment) {
  const char* old = std::getenv("RALA_FASHION_MNIST_DIR");
  const std::string saved = old ? old : "";
  unsetenv("RALA_FASHION_MNIST_DIR");
  EXPECT_EQ(default_fashion_mnist_dir(), "/usr/share/datasets/fashion-mnist");
  setenv("RALA_FASHION_MNIST_DIR", "/tmp/elsewhere", 1);
  EXPECT_EQ(default_fashion_mnist_dir(), "/tmp/elsewhere");
  if (old)
    setenv("RALA_FASHION_MNIST_DIR", saved.c_str(), 1);
  else
    unsetenv("RALA_FASHION_MNIST_DIR");
}

TEST(FashionMnist, SyntheticFilesGzipAndPlainAndLimit) {
  TempDir dir;
  const std::vector<uint8_t> labels = {3, 1, 4};
  write_gz(dir.str("t10k-images-idx3-ubyte.gz"), idx_images(2051, 3, 28, 28, 3));
  write_gz(dir.str("t10k-labels-idx1-ubyte.gz"), idx_labels(2049, labels, 3));
  // Plain (uncompressed) files are read when the .gz is absent.
  write_raw(dir.str("train-images-idx3-ubyte"), idx_images(2051, 3, 28, 28, 3));
  write_raw(dir.str("train-labels-idx1-ubyte"), idx_labels(2049, labels, 3));
  for (bool train : {false, true}) {
    const auto d = load_fashion_mnist(train, -1, dir.str());
    ASSERT_EQ(d.images.sizes(), torch::IntArrayRef({3, 1, 28, 28}));
    EXPECT_EQ(d.labels[0].item<int64_t>(), 3);
    EXPECT_EQ(d.labels[2].item<int64_t>(), 4);
    const int64_t k = 2 * 784 + 5 * 28 + 7;  // byte k of the pixel data
    EXPECT_EQ(d.images[2][0][5][7].item<int64_t>(), k % 251);
    EXPECT_EQ(load_fashion_mnist(train, 2, dir.str()).images.size(0), 2);
    EXPECT_EQ(load_fashion_mnist(train, 10, dir.str()).images.size(0), 3);
    EXPECT_EQ(load_fashion_mnist(train, 0, dir.str()).images.sizes(), torch::IntArrayRef({0, 1, 28, 28}));
  }
}

TEST(FashionMnist, WrongMagicNamesFileAndBothNumbers) {
  TempDir dir;
  const std::string images = dir.str("train-images-idx3-ubyte.gz");
  write_gz(images, idx_images(2049, 1, 28, 28, 1));
  write_gz(dir.str("train-labels-idx1-ubyte.gz"), idx_labels(2049, {0}, 1));
  expect_error([&] { load_fashion_mnist(true, -1, dir.str()); }, {images, "magic 2049", "expected 2051"});

  const std::string labels = dir.str("train-labels-idx1-ubyte.gz");
  write_gz(images, idx_images(2051, 1, 28, 28, 1));
  write_gz(labels, idx_labels(2051, {0}, 1));
  expect_error([&] { load_fashion_mnist(true, -1, dir.str()); }, {labels, "magic 2051", "expected 2049"});
}

TEST(FashionMnist, MissingDirAndMissingFile) {
  const std::string nowhere = (fs::temp_directory_path() / "rala_data_test_no_such_dir_8c1f").string();
  expect_error([&] { load_fashion_mnist(true, -1, nowhere); }, {nowhere, "does not exist"});
  TempDir dir;
  expect_error([&] { load_fashion_mnist(false, -1, dir.str()); },
               {"missing file", dir.str("t10k-images-idx3-ubyte.gz")});
}

TEST(FashionMnist, WrongSizeCountMismatchTruncationAndBadLabel) {
  TempDir dir;
  const std::string images = dir.str("train-images-idx3-ubyte.gz");
  const std::string labels = dir.str("train-labels-idx1-ubyte.gz");
  write_gz(images, idx_images(2051, 2, 32, 32, 2));
  write_gz(labels, idx_labels(2049, {0, 1}, 2));
  expect_error([&] { load_fashion_mnist(true, -1, dir.str()); }, {images, "32x32", "expected 28x28"});

  write_gz(images, idx_images(2051, 2, 28, 28, 2));
  write_gz(labels, idx_labels(2049, {0, 1, 2}, 3));
  expect_error([&] { load_fashion_mnist(true, -1, dir.str()); }, {images, "2 images", labels, "3 labels"});

  write_gz(images, idx_images(2051, 5, 28, 28, 2));  // header says 5, data for 2
  write_gz(labels, idx_labels(2049, {0, 1, 2, 3, 4}, 5));
  expect_error([&] { load_fashion_mnist(true, -1, dir.str()); }, {images, "truncated"});
  EXPECT_EQ(load_fashion_mnist(true, 2, dir.str()).images.size(0), 2);  // the first 2 are there

  write_gz(images, idx_images(2051, 2, 28, 28, 2));
  write_gz(labels, idx_labels(2049, {0, 12}, 2));
  expect_error([&] { load_fashion_mnist(true, -1, dir.str()); }, {labels, "label 12", "index 1", "0..9"});
}

// ------------------------------------------------------------------------------------------------
// decode_image
// ------------------------------------------------------------------------------------------------

TEST(DecodeImage, RgbPngFixtureExactPixels) {
  // rgb_3x2.png was written by ImageMagick from a text PPM: row 0 red, green, blue; row 1 (10,20,30), (128,64,32),
  // (250,251,252).
  const auto img = decode_image(fixture("rgb_3x2.png"));
  ASSERT_EQ(img.sizes(), torch::IntArrayRef({3, 2, 3}));
  ASSERT_EQ(img.scalar_type(), torch::kUInt8);
  const auto expected = torch::tensor({255, 0, 0, 10, 128, 250,  // R: row 0, row 1
                                       0, 255, 0, 20, 64, 251,   // G
                                       0, 0, 255, 30, 32, 252},  // B
                                      torch::kUInt8)
                            .view({3, 2, 3});
  EXPECT_TRUE(torch::equal(img, expected)) << img;
}

TEST(DecodeImage, GreyAndRgbaFixturesBecomeRgb) {
  const auto grey = decode_image(fixture("grey_3x2.png"));  // 0 17 34 / 128 200 255
  ASSERT_EQ(grey.sizes(), torch::IntArrayRef({3, 2, 3}));
  const auto g = torch::tensor({0, 17, 34, 128, 200, 255}, torch::kUInt8).view({2, 3});
  for (int c = 0; c < 3; ++c) EXPECT_TRUE(torch::equal(grey[c], g)) << grey;

  const auto rgba = decode_image(fixture("rgba_2x2.png"));  // alpha 255, 128, 0, 200 is dropped, not blended
  ASSERT_EQ(rgba.sizes(), torch::IntArrayRef({3, 2, 2}));
  const auto expected = torch::tensor({255, 0, 0, 40, 0, 255, 0, 50, 0, 0, 255, 60}, torch::kUInt8).view({3, 2, 2});
  EXPECT_TRUE(torch::equal(rgba, expected)) << rgba;
}

TEST(DecodeImage, JpegFixtureIsClose) {
  const auto img = decode_image(fixture("solid_16x16.jpg"));  // ImageMagick, rgb(200,100,50), quality 100
  ASSERT_EQ(img.sizes(), torch::IntArrayRef({3, 16, 16}));
  const std::array<int, 3> rgb = {200, 100, 50};
  for (int c = 0; c < 3; ++c) {
    const auto diff = (img[c].to(torch::kInt32) - rgb[c]).abs().max().item<int>();
    EXPECT_LE(diff, 3) << "channel " << c;
  }
}

TEST(DecodeImage, StbWrittenPngRoundTripsForEveryChannelCount) {
  TempDir dir;
  for (int comp : {1, 2, 3, 4}) {
    const int h = 5, w = 7;
    const auto px = random_pixels(h, w, comp, 100 + comp);
    const std::string path = dir.str("img" + std::to_string(comp) + ".png");
    write_png(path, h, w, comp, px);
    const auto img = decode_image(path);
    EXPECT_TRUE(torch::equal(img, expected_rgb(h, w, comp, px))) << "components " << comp;
  }
}

TEST(DecodeImage, StbWrittenJpegQuality100IsClose) {
  TempDir dir;
  const int h = 24, w = 32;
  std::vector<uint8_t> px(static_cast<size_t>(h * w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      px[(y * w + x) * 3 + 0] = static_cast<uint8_t>(40 + 5 * x);
      px[(y * w + x) * 3 + 1] = static_cast<uint8_t>(30 + 7 * y);
      px[(y * w + x) * 3 + 2] = 120;
    }
  const std::string path = dir.str("ramp.jpg");
  ASSERT_NE(stbi_write_jpg(path.c_str(), w, h, 3, px.data(), 100), 0);
  const auto img = decode_image(path).to(torch::kInt32);
  const auto ref = expected_rgb(h, w, 3, px).to(torch::kInt32);
  const auto diff = (img - ref).abs();
  EXPECT_LE(diff.max().item<int>(), 4);
  EXPECT_LT(diff.to(torch::kFloat64).mean().item<double>(), 1.0);
}

TEST(DecodeImage, CorruptTruncatedAndMissingFilesNameThePath) {
  expect_error([] { decode_image(fixture("corrupt.png")); }, {fixture("corrupt.png"), "cannot be decoded"});
  expect_error([] { decode_image(fixture("truncated.png")); }, {fixture("truncated.png"), "cannot be decoded"});
  expect_error([] { decode_image(fixture("no_such_image.png")); }, {fixture("no_such_image.png"), "missing file"});
  TempDir dir;
  write_raw(dir.str("empty.jpg"), {});
  expect_error([&] { decode_image(dir.str("empty.jpg")); }, {dir.str("empty.jpg"), "empty"});
}

// Inputs made to hurt (issue 17): each is refused with one line before stb allocates or writes anything.
TEST(DecodeImage, HostileFilesAreRefusedBeforeDecoding) {
  // Found by fuzz/image_fuzz.cpp: a JPEG Huffman table declaring more than 256 codes; stb_image 2.27 writes past its
  // 257-entry code-length table on it (an ASan heap-buffer-overflow before the check).
  const std::string dht = std::string(RALA_TEST_DATA) + "/fuzz/image/jpeg_dht_overflow.jpg";
  expect_error([&] { decode_image(dht); }, {dht, "Huffman table declares", "at most 256"});
  // The same in a table before the frame header, where stbi_info already reads it (found by the fuzzer after the check
  // first ran only between stbi_info and the decode).
  const std::string dht_header = std::string(RALA_TEST_DATA) + "/fuzz/image/jpeg_dht_overflow_in_header.jpg";
  expect_error([&] { decode_image(dht_header); }, {dht_header, "Huffman table declares 1861 codes", "at most 256"});
  // And a third form (CI fuzz run): the file starts 0xFF 0xFF 0xD8 — stb skips fill bytes before SOI as before any
  // marker, and the check used to take such a file for "not a JPEG" and let stb build its Huffman tables.
  const std::string dht_fill = std::string(RALA_TEST_DATA) + "/fuzz/image/jpeg_dht_overflow_after_fill_bytes.jpg";
  expect_error([&] { decode_image(dht_fill); }, {dht_fill, "Huffman table declares", "at most 256"});
  // A JPEG whose Huffman code maps outside the 256 symbols (stb 2.27 read past its table; the vendored copy has
  // upstream 2.28's bounds check, third_party/stb/README.md): refused by stb itself now, on one line.
  const std::string sym = std::string(RALA_TEST_DATA) + "/fuzz/image/jpeg_huffman_symbol_oob.jpg";
  expect_error([&] { decode_image(sym); }, {sym, "cannot be decoded"});
  // A 60-byte PNG whose IDAT chunk declares 577,899,790 bytes: stb grows its buffer to that before reading (CI fuzz run).
  const std::string idat = std::string(RALA_TEST_DATA) + "/fuzz/image/png_idat_length_578mb.png";
  expect_error([&] { decode_image(idat); }, {idat, "a PNG chunk declares", "only", "bytes of the file follow it"});
  // Also found by it: stb quotes a PNG chunk's type in its reason, and this one's type is four line feeds. (Its
  // length field is bytes of the fuzzed file too: the chunk walk refuses it now, before stb.)
  const std::string chunk = std::string(RALA_TEST_DATA) + "/fuzz/image/png_chunk_type_newlines.png";
  expect_error([&] { decode_image(chunk); }, {chunk, "a PNG chunk declares 168430090 bytes"});
  {
    // The same quoting with a well-formed chunk of that type (length 0) after IHDR: stb's reason, on one line.
    TempDir d;
    const std::string p = d.str("newline_chunk.png");
    write_png(p, 1, 1, 3, {1, 2, 3});
    std::ifstream in(p, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    bytes.insert(8 + 25, std::string("\0\0\0\0\n\n\n\n\0\0\0\0", 12));
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
    expect_error([&] { decode_image(p); }, {p, "\\n\\n\\n\\n PNG chunk not known"});
  }

  // A decompression bomb: a valid 1x1 PNG whose header is patched to claim 16000x16000 pixels (768 MB of RGB from a
  // file of ~70 bytes, under stb's own 1 GiB limit; stb does not check the header's CRC).
  TempDir dir;
  const std::string bomb = dir.str("bomb.png");
  write_png(bomb, 1, 1, 3, {1, 2, 3});
  std::fstream f(bomb, std::ios::in | std::ios::out | std::ios::binary);
  const char dims[8] = {0, 0, '\x3e', '\x80', 0, 0, '\x3e', '\x80'};  // 16000 = 0x3e80, big-endian, width then height
  f.seekp(16);
  f.write(dims, 8);
  f.close();
  expect_error([&] { decode_image(bomb); }, {bomb, "16000x16000", "per byte"});

  // Formats other than PNG and JPEG are not decoded (stb is built with its PNG and JPEG decoders only).
  const std::string bmp = dir.str("image.png");  // the name does not decide the format
  ASSERT_NE(stbi_write_bmp(bmp.c_str(), 2, 2, 3, std::vector<uint8_t>(12, 7).data()), 0);
  expect_error([&] { decode_image(bmp); }, {bmp, "expected a PNG or JPEG"});
}

// ------------------------------------------------------------------------------------------------
// ImageFolder
// ------------------------------------------------------------------------------------------------

void make_png(const fs::path& path, int h = 3, int w = 4, uint32_t seed = 1) {
  fs::create_directories(path.parent_path());
  write_png(path.string(), h, w, 3, random_pixels(h, w, 3, seed));
}

TEST(ImageFolder, ClassSubFoldersSortedToLabels) {
  TempDir dir;
  const fs::path root = dir.path();
  make_png(root / "dog" / "b.PNG");
  make_png(root / "dog" / "a.jpg.png");
  make_png(root / "cat" / "z.png", 5, 6);
  make_png(root / "cat" / "sub" / "y.png");  // recursive inside a class folder
  make_png(root / "cat" / ".hidden.png");    // hidden: ignored
  make_png(root / "Zebra" / "x.png");
  std::ofstream(root / "cat" / "notes.txt") << "not an image";
  fs::create_directories(root / ".cache");  // hidden folder: not a class
  // A JPEG with an upper-case .JPEG extension.
  {
    const auto px = random_pixels(4, 4, 3, 9);
    ASSERT_NE(stbi_write_jpg((root / "Zebra" / "w.JPEG").c_str(), 4, 4, 3, px.data(), 90), 0);
  }

  ImageFolder folder(root.string());
  EXPECT_EQ(folder.classes(), (std::vector<std::string>{"Zebra", "cat", "dog"}));  // byte-wise: upper case first
  ASSERT_EQ(folder.size(), 6);
  const std::vector<std::pair<fs::path, int64_t>> expected = {
      {root / "Zebra" / "w.JPEG", 0}, {root / "Zebra" / "x.png", 0},   {root / "cat" / "sub" / "y.png", 1},
      {root / "cat" / "z.png", 1},    {root / "dog" / "a.jpg.png", 2}, {root / "dog" / "b.PNG", 2}};
  for (int64_t i = 0; i < folder.size(); ++i) {
    EXPECT_EQ(folder.path(i), expected[i].first.string()) << i;
    EXPECT_EQ(folder.label(i), expected[i].second) << i;
  }
  EXPECT_TRUE(torch::equal(folder.labels(), torch::tensor({0, 0, 1, 1, 2, 2}, torch::kInt64)));
  EXPECT_EQ(folder.load(3).sizes(), torch::IntArrayRef({3, 5, 6}));
  EXPECT_EQ(folder.load(0).sizes(), torch::IntArrayRef({3, 4, 4}));
  expect_error([&] { folder.path(6); }, {"index 6", "0..5"});
  expect_error([&] { folder.label(-1); }, {"index -1"});
}

TEST(ImageFolder, FlatFolderHasNoClasses) {
  TempDir dir;
  make_png(dir.path() / "b.png", 2, 2);
  make_png(dir.path() / "a.png", 3, 2);
  make_png(dir.path() / "C.Png", 2, 5);
  std::ofstream(dir.path() / "readme.md") << "x";
  ImageFolder folder(dir.str());
  EXPECT_TRUE(folder.classes().empty());
  ASSERT_EQ(folder.size(), 3);
  EXPECT_EQ(folder.path(0), dir.str("C.Png"));
  EXPECT_EQ(folder.path(1), dir.str("a.png"));
  EXPECT_EQ(folder.path(2), dir.str("b.png"));
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(folder.label(i), -1);
  EXPECT_EQ(folder.load(1).sizes(), torch::IntArrayRef({3, 3, 2}));
}

TEST(ImageFolder, EmptyMissingAndMalformedFoldersFail) {
  TempDir dir;
  expect_error([&] { ImageFolder f(dir.str()); }, {dir.str(), "no images"});
  std::ofstream(dir.path() / "list.txt") << "x";
  expect_error([&] { ImageFolder f(dir.str()); }, {dir.str(), "no images"});
  const std::string missing = dir.str("absent");
  expect_error([&] { ImageFolder f(missing); }, {missing, "missing directory"});
  expect_error([&] { ImageFolder f(dir.str("list.txt")); }, {dir.str("list.txt"), "not a directory"});

  make_png(dir.path() / "cls" / "a.png");
  fs::create_directories(dir.path() / "empty_cls");
  expect_error([&] { ImageFolder f(dir.str()); }, {dir.str("empty_cls"), "no images"});
  fs::remove(dir.path() / "empty_cls");
  make_png(dir.path() / "loose.png");
  expect_error([&] { ImageFolder f(dir.str()); }, {dir.str(), "loose images"});
  fs::remove(dir.path() / "loose.png");
  EXPECT_EQ(ImageFolder(dir.str()).size(), 1);
}

// ------------------------------------------------------------------------------------------------
// Independent resampling reference (PIL's separable filter, as torch's antialiased kernels define it), in double.
// ------------------------------------------------------------------------------------------------

double cubic_filter(double x) {  // Keys cubic, a = -0.5
  const double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}
double triangle_filter(double x) { return std::max(0.0, 1.0 - std::abs(x)); }

/// Row o of the (out, in) resampling matrix: antialiased (support widened by the scale when shrinking).
torch::Tensor aa_matrix(int64_t in, int64_t out, bool cubic) {
  auto m = torch::zeros({out, in}, torch::kFloat64);
  auto a = m.accessor<double, 2>();
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double support = (cubic ? 2.0 : 1.0) * std::max(scale, 1.0);
  const double inv = scale >= 1.0 ? 1.0 / scale : 1.0;
  for (int64_t o = 0; o < out; ++o) {
    const double center = scale * (o + 0.5);
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    double total = 0;
    for (int64_t j = lo; j < hi; ++j) {
      const double w = cubic ? cubic_filter((j - center + 0.5) * inv) : triangle_filter((j - center + 0.5) * inv);
      a[o][j] = w;
      total += w;
    }
    for (int64_t j = lo; j < hi; ++j) a[o][j] /= total;
  }
  return m;
}

/// image (C, H, W) any dtype → (C, h, w) float64.
torch::Tensor reference_resize(const torch::Tensor& image, int64_t h, int64_t w, bool cubic) {
  const auto x = image.to(torch::kFloat64);
  const auto rows = aa_matrix(image.size(1), h, cubic);  // (h, H)
  const auto cols = aa_matrix(image.size(2), w, cubic);  // (w, W)
  return torch::matmul(torch::matmul(rows, x), cols.t());
}

torch::Tensor unnormalize_levels(const torch::Tensor& x) {  // (3, h, w) normalised → pixel levels 0..255 (float64)
  const auto m = torch::tensor({0.485, 0.456, 0.406}, torch::kFloat64).view({3, 1, 1});
  const auto s = torch::tensor({0.229, 0.224, 0.225}, torch::kFloat64).view({3, 1, 1});
  return (x.to(torch::kFloat64) * s + m) * 255.0;
}

// ------------------------------------------------------------------------------------------------
// Transforms
// ------------------------------------------------------------------------------------------------

TEST(Transforms, ResizedShorterSizeFollowsTorchvision) {
  EXPECT_EQ(resized_shorter_size(200, 300, 256), std::make_pair(int64_t{256}, int64_t{384}));
  EXPECT_EQ(resized_shorter_size(300, 200, 256), std::make_pair(int64_t{384}, int64_t{256}));
  EXPECT_EQ(resized_shorter_size(375, 500, 256), std::make_pair(int64_t{256}, int64_t{341}));  // 341.33 → 341
  EXPECT_EQ(resized_shorter_size(500, 333, 438), std::make_pair(int64_t{657}, int64_t{438}));  // 657.66 → 657
  EXPECT_EQ(resized_shorter_size(64, 64, 32), std::make_pair(int64_t{32}, int64_t{32}));
}

TEST(Transforms, CenterCropRoundsHalfToEven) {
  const auto img = torch::arange(9, torch::kInt64).view({1, 1, 9}).expand({1, 4, 9}).contiguous();
  // (9 − 4) / 2 = 2.5 → 2 ; (9 − 6) / 2 = 1.5 → 2 ; (9 − 8) / 2 = 0.5 → 0 (Python round).
  EXPECT_EQ(center_crop(img, 1, 4)[0][0][0].item<int64_t>(), 2);
  EXPECT_EQ(center_crop(img, 1, 6)[0][0][0].item<int64_t>(), 2);
  EXPECT_EQ(center_crop(img, 1, 8)[0][0][0].item<int64_t>(), 0);
  EXPECT_EQ(center_crop(img, 1, 9)[0][0][0].item<int64_t>(), 0);
  expect_error([&] { center_crop(img, 5, 9); }, {"5x9", "4x9"});
}

TEST(Transforms, ResizeMatchesIndependentAntialiasedReference) {
  torch::manual_seed(3);
  const auto img = torch::rand({3, 37, 53}, torch::kFloat32);
  for (bool cubic : {true, false}) {
    const auto mode = cubic ? Interpolation::bicubic : Interpolation::bilinear;
    for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{16, 20}, {37, 29}, {80, 61}, {9, 90}}) {
      const auto got = resize(img, hw.first, hw.second, mode, /*antialias=*/true);
      ASSERT_EQ(got.sizes(), torch::IntArrayRef({3, hw.first, hw.second}));
      ASSERT_EQ(got.scalar_type(), torch::kFloat32);
      const auto ref = reference_resize(img, hw.first, hw.second, cubic);
      EXPECT_LT((got.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-4)
          << (cubic ? "bicubic " : "bilinear ") << hw.first << "x" << hw.second;
    }
  }
  // uint8 in: the float result rounded and clamped, back to uint8.
  const auto u8 = (img * 255).round().to(torch::kUInt8);
  const auto got = resize(u8, 20, 24, Interpolation::bicubic, true);
  ASSERT_EQ(got.scalar_type(), torch::kUInt8);
  const auto ref = reference_resize(u8, 20, 24, true).round().clamp(0, 255);
  EXPECT_LE((got.to(torch::kFloat64) - ref).abs().max().item<double>(), 1.0);
}

/// Reads `n` values of type T from a raw file.
template <typename T>
std::vector<T> read_raw(const std::string& path, size_t n) {
  std::vector<T> v(n);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
  EXPECT_TRUE(in.good()) << path;
  return v;
}

// Python torch (Debian python3-torch, /usr/bin/python3) as the reference for: F.interpolate bicubic/bilinear with
// antialias, torchvision 0.14's tensor eval pipeline (Resize(256, BICUBIC, antialias) on uint8, CenterCrop,
// ConvertImageDtype, Normalize) and torchvision 0.14's RandomResizedCrop.get_params (copied verbatim, since
// torchvision itself is not packaged) under torch.manual_seed.
TEST(Transforms, MatchesPythonTorchIfAvailable) {
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "Debian python3-torch not installed (/usr/bin/python3 cannot import torch)";
  }
  TempDir dir;
  const std::string d = dir.str() + "/";
  torch::manual_seed(5);
  const auto x = torch::rand({3, 41, 30}, torch::kFloat32) * 255;
  const auto img = torch::randint(0, 256, {3, 200, 300}, torch::kUInt8);
  {
    std::ofstream out(d + "in.f32", std::ios::binary);
    out.write(static_cast<const char*>(x.data_ptr()), x.numel() * 4);
    std::ofstream out8(d + "img.u8", std::ios::binary);
    out8.write(static_cast<const char*>(img.data_ptr()), img.numel());
  }
  const std::string script = R"PY(
import math, sys, torch, numpy
d = sys.argv[1]
F = torch.nn.functional
x = torch.from_numpy(numpy.fromfile(d + 'in.f32', dtype=numpy.float32).reshape(1, 3, 41, 30))
F.interpolate(x, size=(23, 47), mode='bicubic', align_corners=False, antialias=True).numpy().tofile(d + 'bicubic.f32')
F.interpolate(x, size=(23, 47), mode='bilinear', align_corners=False, antialias=True).numpy().tofile(d + 'bilinear.f32')
img = torch.from_numpy(numpy.fromfile(d + 'img.u8', dtype=numpy.uint8).reshape(1, 3, 200, 300))
h, w = 200, 300
short, long = min(h, w), max(h, w)
new_short, new_long = 256, int(256 * long / short)
size = (new_short, new_long) if h <= w else (new_long, new_short)
y = F.interpolate(img.float(), size=size, mode='bicubic', align_corners=False, antialias=True)
y = y.clamp(0, 255).round().to(torch.uint8)
top, left = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
y = y[..., top:top + 224, left:left + 224].float() / 255
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
((y - mean) / std).numpy().tofile(d + 'eval.f32')

def get_params(height, width, scale, ratio):  # torchvision 0.14 RandomResizedCrop.get_params
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    i = (height - h) // 2
    j = (width - w) // 2
    return i, j, h, w

boxes = []
for seed in range(20):
    torch.manual_seed(seed)
    for H, W in [(60, 80), (10, 200), (333, 500)]:
        boxes += list(get_params(H, W, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)))
numpy.array(boxes, dtype=numpy.int64).tofile(d + 'boxes.i64')
)PY";
  std::ofstream(d + "ref.py") << script;
  ASSERT_EQ(std::system(("/usr/bin/python3 '" + d + "ref.py' '" + d + "'").c_str()), 0);

  for (bool cubic : {true, false}) {
    auto ref = read_raw<float>(d + (cubic ? "bicubic.f32" : "bilinear.f32"), 3 * 23 * 47);
    const auto expected = torch::from_blob(ref.data(), {3, 23, 47}, torch::kFloat32).clone();
    const auto got = resize(x, 23, 47, cubic ? Interpolation::bicubic : Interpolation::bilinear, true);
    EXPECT_LT((got - expected).abs().max().item<float>() / 255.0f, 1e-4) << (cubic ? "bicubic" : "bilinear");
  }
  {
    auto ref = read_raw<float>(d + "eval.f32", 3 * 224 * 224);
    const auto expected = torch::from_blob(ref.data(), {3, 224, 224}, torch::kFloat32).clone();
    EXPECT_LT((imagenet_eval_transform(img) - expected).abs().max().item<float>(), 1e-4);
  }
  {
    const auto ref = read_raw<int64_t>(d + "boxes.i64", 20 * 3 * 4);
    size_t k = 0;
    for (uint64_t seed = 0; seed < 20; ++seed) {
      auto gen = make_generator(seed);
      for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{60, 80}, {10, 200}, {333, 500}}) {
        const auto b = random_resized_crop_box(hw.first, hw.second, gen);
        EXPECT_EQ(b.top, ref[k]) << "seed " << seed << " image " << hw.first << "x" << hw.second;
        EXPECT_EQ(b.left, ref[k + 1]) << "seed " << seed;
        EXPECT_EQ(b.height, ref[k + 2]) << "seed " << seed;
        EXPECT_EQ(b.width, ref[k + 3]) << "seed " << seed;
        k += 4;
      }
    }
  }
}

TEST(Transforms, ImagenetEvalShapesAndDtype) {
  const auto img = torch::randint(0, 256, {3, 200, 300}, torch::kUInt8);
  const auto x = imagenet_eval_transform(img);
  EXPECT_EQ(x.sizes(), torch::IntArrayRef({3, 224, 224}));
  EXPECT_EQ(x.scalar_type(), torch::kFloat32);
  EXPECT_EQ(imagenet_eval_transform(img.transpose(1, 2), 160).sizes(), torch::IntArrayRef({3, 160, 160}));
  const auto batch = torch::randint(0, 256, {2, 3, 64, 80}, torch::kUInt8);
  const auto xb = imagenet_eval_transform(batch, 32);
  ASSERT_EQ(xb.sizes(), torch::IntArrayRef({2, 3, 32, 32}));
  EXPECT_TRUE(torch::allclose(xb[1], imagenet_eval_transform(batch[1], 32)));
  expect_error([&] { imagenet_eval_transform(img.to(torch::kFloat32)); }, {"uint8", "(3, H, W)"});
}

TEST(Transforms, ImagenetEvalRefusesExtremeAspectRatios) {
  // A 1x65 strip would be resized to 36x2340 for size 32; a 1x60000 one (a 4 KB PNG) to 256x15,360,000 at 224.
  const auto at_limit = torch::zeros({3, 1, kMaxEvalAspect}, torch::kUInt8);
  EXPECT_EQ(imagenet_eval_transform(at_limit, 32).sizes(), torch::IntArrayRef({3, 32, 32}));
  EXPECT_EQ(imagenet_eval_transform(at_limit.transpose(1, 2), 32).sizes(), torch::IntArrayRef({3, 32, 32}));
  const auto strip = torch::zeros({3, 1, kMaxEvalAspect + 1}, torch::kUInt8);
  expect_error([&] { imagenet_eval_transform(strip, 32); }, {"1x65", "more than 64 times", "at most 64:1"});
  expect_error([&] { imagenet_eval_transform(strip.transpose(1, 2), 32); }, {"65x1", "at most 64:1"});
}

TEST(Transforms, ImagenetEvalConstantImageIsExact) {
  const auto img = torch::full({3, 200, 300}, 128, torch::kUInt8);
  const auto x = imagenet_eval_transform(img);
  const std::array<double, 3> mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225};
  for (int c = 0; c < 3; ++c) {
    const double expected = (128.0 / 255.0 - mean[c]) / std[c];
    EXPECT_LT((x[c].to(torch::kFloat64) - expected).abs().max().item<double>(), 1e-6) << "channel " << c;
  }
}

TEST(Transforms, ImagenetEvalCropWindowExactWhenNoResizeIsNeeded) {
  // 256 × 384 is already at the target short side: the output must be rows 16..239, columns 80..303 of the input.
  const int64_t H = 256, W = 384;
  auto img = torch::empty({3, H, W}, torch::kUInt8);
  auto a = img.accessor<uint8_t, 3>();
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      a[0][y][x] = static_cast<uint8_t>(x % 256);
      a[1][y][x] = static_cast<uint8_t>(x / 256);
      a[2][y][x] = static_cast<uint8_t>(y);
    }
  const auto levels = unnormalize_levels(imagenet_eval_transform(img)).round().to(torch::kInt64);
  auto l = levels.accessor<int64_t, 3>();
  for (int64_t y = 0; y < 224; y += 37)
    for (int64_t x = 0; x < 224; ++x) {
      ASSERT_EQ(l[0][y][x] + 256 * l[1][y][x], x + 80) << y << "," << x;
      ASSERT_EQ(l[2][y][x], y + 16) << y << "," << x;
    }
}

TEST(Transforms, ImagenetEvalNonSquareRampMapsCentreToCentre) {
  // 300 wide × 200 high → resized to 384 × 256 → crop columns 80..303, rows 16..239. R encodes the row, G the column
  // (linear ramps, which bicubic reproduces away from the border); B is constant.
  const int64_t H = 200, W = 300;
  auto img = torch::empty({3, H, W}, torch::kUInt8);
  auto a = img.accessor<uint8_t, 3>();
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      a[0][y][x] = static_cast<uint8_t>(std::lround(y * 255.0 / (H - 1)));
      a[1][y][x] = static_cast<uint8_t>(std::lround(x * 255.0 / (W - 1)));
      a[2][y][x] = 77;
    }
  const auto levels = unnormalize_levels(imagenet_eval_transform(img));
  // Output column x is resized column x + 80, i.e. input coordinate (x + 80 + 0.5) · 300/384 − 0.5.
  auto expected_g = torch::empty({224}, torch::kFloat64);
  auto expected_r = torch::empty({224}, torch::kFloat64);
  for (int64_t i = 0; i < 224; ++i) {
    expected_g[i] = ((i + 80 + 0.5) * 300.0 / 384.0 - 0.5) * 255.0 / (W - 1);
    expected_r[i] = ((i + 16 + 0.5) * 200.0 / 256.0 - 0.5) * 255.0 / (H - 1);
  }
  const auto err_g = levels[1] - expected_g.view({1, 224});
  const auto err_r = levels[0] - expected_r.view({224, 1});
  EXPECT_LT(err_g.abs().max().item<double>(), 1.01);
  EXPECT_LT(err_r.abs().max().item<double>(), 1.01);
  // A one-pixel shift of the window would bias the error by ~0.66 levels; rounding alone averages out.
  EXPECT_LT(std::abs(err_g.mean().item<double>()), 0.15);
  EXPECT_LT(std::abs(err_r.mean().item<double>()), 0.15);
  // The centre of the crop (between columns 111 and 112) is the centre of the image: level 127.5.
  EXPECT_NEAR(((levels[1].select(1, 111) + levels[1].select(1, 112)) / 2).mean().item<double>(), 127.5, 0.3);
  EXPECT_LT((levels[2] - 77).abs().max().item<double>(), 1e-3);
}

TEST(Transforms, ImagenetEvalMatchesIndependentPipeline) {
  torch::manual_seed(11);
  // Smooth content with some texture, 230 × 173 (H × W): short side → 256, long → int(256·230/173) = 340.
  const auto base = torch::rand({3, 12, 9}, torch::kFloat64);
  const auto img =
      (torch::nn::functional::interpolate(base.unsqueeze(0), torch::nn::functional::InterpolateFuncOptions()
                                                                 .size(std::vector<int64_t>{230, 173})
                                                                 .mode(torch::kBilinear)
                                                                 .align_corners(false))
           .squeeze(0) *
       255)
          .round()
          .clamp(0, 255)
          .to(torch::kUInt8);
  const auto resized = reference_resize(img, 340, 256, true).round().clamp(0, 255);
  // top = round((340 − 224) / 2) = 58, left = round((256 − 224) / 2) = 16.
  const auto crop = resized.narrow(1, 58, 224).narrow(2, 16, 224);
  const auto got = unnormalize_levels(imagenet_eval_transform(img));
  const auto diff = (got - crop).abs();
  EXPECT_LT(diff.max().item<double>(), 1.0 + 1e-3);  // at most one rounding step apart
  EXPECT_LT((diff > 0.5).to(torch::kFloat64).mean().item<double>(), 0.01);
}

TEST(Transforms, FashionMnistToFloat) {
  auto images = torch::randint(0, 256, {4, 1, 28, 28}, torch::kUInt8);
  images[0].fill_(0);
  images[1].fill_(255);
  const auto x = fashion_mnist_to_float(images);
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({4, 1, 28, 28}));
  ASSERT_EQ(x.scalar_type(), torch::kFloat32);
  const auto ref = (images.to(torch::kFloat64) / 255.0 - 0.2860) / 0.3530;
  EXPECT_LT((x.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5);
  EXPECT_NEAR(x[0].max().item<double>(), -0.2860 / 0.3530, 1e-6);
  EXPECT_NEAR(x[1].min().item<double>(), (1 - 0.2860) / 0.3530, 1e-6);

  const auto y = fashion_mnist_to_float(images, 32, 3);
  ASSERT_EQ(y.sizes(), torch::IntArrayRef({4, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(y[2][0], y[2][2]));
  EXPECT_NEAR(y[1].min().item<double>(), (1 - 0.2860) / 0.3530, 1e-5);  // constant stays constant
  EXPECT_NEAR(y[1].max().item<double>(), (1 - 0.2860) / 0.3530, 1e-5);
  // Upscaling is plain bilinear (align_corners=false): compare with the reference on the [0, 1] image.
  const auto up = reference_resize(images[2].to(torch::kFloat64) / 255.0, 32, 32, false);
  EXPECT_LT((y[2][0].to(torch::kFloat64) - (up[0] - 0.2860) / 0.3530).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(fashion_mnist_to_float(images, 14, 1).sizes(), torch::IntArrayRef({4, 1, 14, 14}));
  expect_error([&] { fashion_mnist_to_float(images, 28, 2); }, {"channels must be 1 or 3", "got 2"});
}

TEST(Augment, SameSeedSameOutput) {
  const auto batch = torch::rand({8, 3, 12, 10});
  auto g1 = make_generator(123), g2 = make_generator(123), g3 = make_generator(124);
  const auto a = random_horizontal_flip(random_crop_with_padding(batch, 3, g1), 0.5, g1);
  const auto b = random_horizontal_flip(random_crop_with_padding(batch, 3, g2), 0.5, g2);
  const auto c = random_horizontal_flip(random_crop_with_padding(batch, 3, g3), 0.5, g3);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  const auto img = torch::randint(0, 256, {3, 50, 70}, torch::kUInt8);
  auto g4 = make_generator(7), g5 = make_generator(7);
  EXPECT_TRUE(torch::equal(random_resized_crop(img, 32, g4), random_resized_crop(img, 32, g5)));
}

TEST(Augment, FlipProbabilityOneAndZero) {
  const auto batch = torch::rand({5, 2, 4, 6});
  auto gen = make_generator(1);
  EXPECT_TRUE(torch::equal(random_horizontal_flip(batch, 1.0, gen), torch::flip(batch, {3})));
  EXPECT_TRUE(torch::equal(random_horizontal_flip(batch, 0.0, gen), batch));
  // p = 0.5 flips some samples and keeps the others, each sample either intact or mirrored.
  const auto big = torch::rand({64, 1, 3, 5});
  const auto out = random_horizontal_flip(big, 0.5, gen);
  int flipped = 0;
  for (int64_t n = 0; n < 64; ++n) {
    const bool same = torch::equal(out[n], big[n]);
    const bool mirrored = torch::equal(out[n], big[n].flip({2}));
    EXPECT_TRUE(same || mirrored) << n;
    flipped += mirrored;
  }
  EXPECT_GT(flipped, 10);
  EXPECT_LT(flipped, 54);
}

TEST(Augment, CropWithPaddingIsAShiftedZeroPaddedWindow) {
  const auto batch = torch::rand({16, 2, 7, 9}) + 0.5;  // no zeros inside the image
  auto gen = make_generator(5);
  EXPECT_TRUE(torch::equal(random_crop_with_padding(batch, 0, gen), batch));
  const int64_t pad = 2;
  const auto out = random_crop_with_padding(batch, pad, gen);
  ASSERT_EQ(out.sizes(), batch.sizes());
  ASSERT_EQ(out.scalar_type(), batch.scalar_type());
  std::map<std::pair<int64_t, int64_t>, int> seen;
  for (int64_t n = 0; n < 16; ++n) {
    bool found = false;
    for (int64_t dy = -pad; dy <= pad && !found; ++dy)
      for (int64_t dx = -pad; dx <= pad && !found; ++dx) {
        // Brute force: out[c][y][x] = in[c][y + dy][x + dx] inside the image, 0 outside.
        auto expected = torch::zeros_like(batch[n]);
        for (int64_t y = 0; y < 7; ++y)
          for (int64_t x = 0; x < 9; ++x)
            if (y + dy >= 0 && y + dy < 7 && x + dx >= 0 && x + dx < 9)
              expected.select(1, y).select(1, x).copy_(batch[n].select(1, y + dy).select(1, x + dx));
        if (torch::equal(out[n], expected)) {
          found = true;
          seen[{dy, dx}]++;
        }
      }
    EXPECT_TRUE(found) << "sample " << n << " is not a shifted window";
  }
  EXPECT_GT(seen.size(), 3u) << "offsets should vary per sample";
}

TEST(Augment, RandomResizedCropShapesBoxesAndFallback) {
  const auto img = torch::randint(0, 256, {3, 60, 80}, torch::kUInt8);
  auto gen = make_generator(9);
  const auto y = random_resized_crop(img, 48, gen);
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({3, 48, 48}));
  EXPECT_EQ(y.scalar_type(), torch::kUInt8);
  const auto yf = random_resized_crop(img.to(torch::kFloat32) / 255, 16, gen);
  EXPECT_EQ(yf.sizes(), torch::IntArrayRef({3, 16, 16}));
  EXPECT_EQ(yf.scalar_type(), torch::kFloat32);

  for (int i = 0; i < 200; ++i) {
    const auto b = random_resized_crop_box(60, 80, gen);
    ASSERT_GT(b.height, 0);
    ASSERT_GT(b.width, 0);
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, 60);
    ASSERT_LE(b.left + b.width, 80);
    const double ratio = static_cast<double>(b.width) / b.height;
    const double frac = static_cast<double>(b.width * b.height) / (60.0 * 80.0);
    // Rounding w and h to integers moves ratio and area a little off their ranges for small crops.
    EXPECT_GT(ratio, 0.75 * 0.8);
    EXPECT_LT(ratio, 4.0 / 3.0 * 1.25);
    EXPECT_GT(frac, 0.08 * 0.7);
  }
  // An impossible aspect ratio forces the fallback: full width, height = round(80 / 10) = 8, centred.
  const auto fb = random_resized_crop_box(60, 80, gen, {1.0, 1.0}, {10.0, 10.0});
  EXPECT_EQ(fb.width, 80);
  EXPECT_EQ(fb.height, 8);
  EXPECT_EQ(fb.top, 26);
  EXPECT_EQ(fb.left, 0);
  // Whole image at its own size is the identity.
  const auto sq = torch::randint(0, 256, {3, 20, 20}, torch::kUInt8);
  EXPECT_TRUE(torch::equal(random_resized_crop(sq, 20, gen, {1.0, 1.0}, {1.0, 1.0}), sq));
}

}  // namespace
}  // namespace rala::data
