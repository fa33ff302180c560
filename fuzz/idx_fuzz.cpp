// libFuzzer target: the Fashion-MNIST IDX reader (experiments/data/fashion_mnist.h) on a pair of arbitrary files.
// Input layout: a 4-byte little-endian length L, then L bytes of the images file (t10k-images-idx3-ubyte), then the
// labels file (t10k-labels-idx1-ubyte); L is clamped to what is there. Either file may be gzip or plain (zlib reads
// both). On success: images (N, 1, 28, 28) uint8 and N labels in 0..9.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "experiments/data/fashion_mnist.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint32_t images_len = 0;
  if (size >= 4) std::memcpy(&images_len, data, 4);
  const size_t head = std::min<size_t>(size, 4);
  const size_t n_images = std::min<size_t>(images_len, size - head);
  rala::fuzz::write_scratch("t10k-images-idx3-ubyte", data + head, n_images);
  rala::fuzz::write_scratch("t10k-labels-idx1-ubyte", data + head + n_images, size - head - n_images);
  rala::fuzz::expect_clean([&] {
    const auto d = rala::data::load_fashion_mnist(/*train=*/false, /*limit=*/-1, rala::fuzz::scratch_dir());
    const int64_t n = d.images.size(0);
    if (d.images.sizes() != torch::IntArrayRef({n, 1, 28, 28}) || d.labels.sizes() != torch::IntArrayRef({n}))
      rala::fuzz::finding("images and labels have the wrong shapes");
    if (n > 0 && (d.labels.min().item<int64_t>() < 0 || d.labels.max().item<int64_t>() > 9))
      rala::fuzz::finding("a label outside 0..9 was accepted");
    if (static_cast<size_t>(n) * 28 * 28 > n_images * 1100 + 4096)  // gzip inflates by at most ~1032×
      rala::fuzz::finding("more pixels than the images file can hold");
  });
  return 0;
}
