#pragma once
/// \file fashion_mnist.h
/// Fashion-MNIST from the gzip IDX files Debian's `dataset-fashion-mnist` installs (read directly with zlib).
///
/// Usage:
///   auto train = rala::data::load_fashion_mnist(/*train=*/true);          // 60000 images
///   auto test = rala::data::load_fashion_mnist(false, /*limit=*/1000);    // the first 1000 test images
///   train.images;   // (60000, 1, 28, 28) uint8, 0 = background
///   train.labels;   // (60000,) int64 in 0..9
///   train.classes;  // {"T-shirt/top", "Trouser", ..., "Ankle boot"}

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rala::data {

/// Images with integer labels and the class names the labels index.
struct LabeledImages {
  torch::Tensor images;              ///< (N, C, H, W) uint8; Fashion-MNIST: (N, 1, 28, 28)
  torch::Tensor labels;              ///< (N,) int64, index into `classes`
  std::vector<std::string> classes;  ///< class names; label k names classes[k]
};

/// Side of a Fashion-MNIST image (28) and number of classes (10).
constexpr int64_t kFashionMnistSide = 28;
constexpr int64_t kFashionMnistClasses = 10;

/// The 10 Fashion-MNIST class names in label order:
/// T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
const std::vector<std::string>& fashion_mnist_classes();

/// Directory of the IDX files: environment variable RALA_FASHION_MNIST_DIR if set and non-empty, otherwise
/// /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).
std::string default_fashion_mnist_dir();

/// Loads the training set (train-*-ubyte.gz, 60000 images) or the test set (t10k-*-ubyte.gz, 10000 images) from `dir`.
/// If a `.gz` file is absent, the uncompressed file of the same name without `.gz` is read instead.
/// Checks the magic numbers (2051 images, 2049 labels), the 28×28 size, that images and labels have the same count,
/// that the files hold that many records and that every label is in 0..9; any failure throws c10::Error with one line
/// naming the file, what it holds and what was expected.
/// `limit` ≥ 0 reads only the first min(limit, count) records (-1: all).
/// Returns images (N, 1, 28, 28) uint8, labels (N,) int64 and the 10 class names.
///
///   auto d = rala::data::load_fashion_mnist(true, 100);   // d.images.sizes() == {100, 1, 28, 28}
LabeledImages load_fashion_mnist(bool train, int64_t limit = -1, const std::string& dir = default_fashion_mnist_dir());

}  // namespace rala::data
