#include "experiments/data/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <memory>

namespace rala::data {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kImagesMagic = 2051;  // 0x00000803: unsigned byte, 3 dimensions
constexpr uint32_t kLabelsMagic = 2049;  // 0x00000801: unsigned byte, 1 dimension

/// A gzip (or plain, zlib reads those transparently) file opened for reading; closes on destruction.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    TORCH_CHECK(file_ != nullptr, "Fashion-MNIST: cannot open ", path_, " for reading");
    gzbuffer(file_, 1 << 18);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  ~GzReader() { gzclose(file_); }

  /// Reads exactly `n` bytes into `dst`; `what` describes them for the error message.
  void read(void* dst, size_t n, const std::string& what) {
    auto* out = static_cast<unsigned char*>(dst);
    size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, size_t{1} << 30));
      const int got = gzread(file_, out + done, chunk);
      if (got < 0) {
        int errnum = 0;
        const char* msg = gzerror(file_, &errnum);
        TORCH_CHECK(false, "Fashion-MNIST: ", path_, " cannot be decompressed while reading ", what, ": ",
                    msg ? msg : "unknown zlib error");
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    TORCH_CHECK(done == n, "Fashion-MNIST: ", path_, " is truncated: ", what, " needs ", n,
                " bytes, the file has only ", done);
  }

  uint32_t read_u32(const std::string& what) {
    std::array<unsigned char, 4> b{};
    read(b.data(), b.size(), what);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
  }

 private:
  std::string path_;
  gzFile file_;
};

/// `dir/name.gz`, or `dir/name` if only the uncompressed file exists; throws naming the missing file otherwise.
std::string find_file(const std::string& dir, const std::string& name) {
  const fs::path gz = fs::path(dir) / (name + ".gz");
  if (fs::is_regular_file(gz)) return gz.string();
  const fs::path plain = fs::path(dir) / name;
  if (fs::is_regular_file(plain)) return plain.string();
  TORCH_CHECK(false, "Fashion-MNIST: missing file ", gz.string(), " (nor uncompressed ", plain.string(),
              "); expected the IDX files of package dataset-fashion-mnist");
}

}  // namespace

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return classes;
}

std::string default_fashion_mnist_dir() {
  const char* env = std::getenv("RALA_FASHION_MNIST_DIR");
  if (env != nullptr && env[0] != '\0') return env;
  return "/usr/share/datasets/fashion-mnist";
}

LabeledImages load_fashion_mnist(bool train, int64_t limit, const std::string& dir) {
  TORCH_CHECK(limit >= -1, "Fashion-MNIST: limit must be -1 (all) or >= 0, got ", limit);
  TORCH_CHECK(fs::is_directory(dir), "Fashion-MNIST: directory '", dir,
              "' does not exist (install dataset-fashion-mnist or set RALA_FASHION_MNIST_DIR)");
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");

  GzReader images_file(images_path);
  const uint32_t images_magic = images_file.read_u32("the header");
  TORCH_CHECK(images_magic == kImagesMagic, "Fashion-MNIST: ", images_path, " has magic ", images_magic, ", expected ",
              kImagesMagic, " (images)");
  const uint32_t image_count = images_file.read_u32("the header");
  const uint32_t rows = images_file.read_u32("the header");
  const uint32_t cols = images_file.read_u32("the header");
  TORCH_CHECK(rows == kFashionMnistSide && cols == kFashionMnistSide, "Fashion-MNIST: ", images_path, " has ", rows,
              "x", cols, " images, expected ", kFashionMnistSide, "x", kFashionMnistSide);

  GzReader labels_file(labels_path);
  const uint32_t labels_magic = labels_file.read_u32("the header");
  TORCH_CHECK(labels_magic == kLabelsMagic, "Fashion-MNIST: ", labels_path, " has magic ", labels_magic, ", expected ",
              kLabelsMagic, " (labels)");
  const uint32_t label_count = labels_file.read_u32("the header");
  TORCH_CHECK(image_count == label_count, "Fashion-MNIST: ", images_path, " holds ", image_count, " images but ",
              labels_path, " holds ", label_count, " labels, expected equal counts");

  const int64_t n = limit < 0 ? int64_t{image_count} : std::min<int64_t>(limit, image_count);
  const int64_t pixels = kFashionMnistSide * kFashionMnistSide;

  auto images = torch::empty({n, 1, kFashionMnistSide, kFashionMnistSide}, torch::kUInt8);
  images_file.read(images.data_ptr<uint8_t>(), static_cast<size_t>(n * pixels),
                   std::to_string(n) + " images of 28x28 bytes");

  auto raw_labels = torch::empty({n}, torch::kUInt8);
  labels_file.read(raw_labels.data_ptr<uint8_t>(), static_cast<size_t>(n), std::to_string(n) + " labels");
  const uint8_t* lab = raw_labels.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(lab[i] < kFashionMnistClasses, "Fashion-MNIST: ", labels_path, " has label ", int{lab[i]}, " at index ",
                i, ", expected 0..", kFashionMnistClasses - 1);
  }

  return LabeledImages{images, raw_labels.to(torch::kInt64), fashion_mnist_classes()};
}

}  // namespace rala::data
