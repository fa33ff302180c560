// libFuzzer target: the image path of `--data DIR` (experiments/data): decode_image (stb_image: PNG, JPEG, BMP, GIF,
// …) on arbitrary bytes written to a scratch file, then the ImageNet evaluation transform at a small size.
// On success: (3, H, W) uint8, then (3, 32, 32) float32.
#include <cstdint>
#include <string>

#include "experiments/data/image_folder.h"
#include "experiments/data/transforms.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = rala::fuzz::write_scratch("image.png", data, size);
  rala::fuzz::expect_clean([&] {
    const auto img = rala::data::decode_image(path);
    if (img.dim() != 3 || img.size(0) != 3 || img.scalar_type() != torch::kUInt8 || img.numel() == 0)
      rala::fuzz::finding("decode_image returned something other than a non-empty (3, H, W) uint8 image");
    const auto x = rala::data::imagenet_eval_transform(img, 32);
    if (x.sizes() != torch::IntArrayRef({3, 32, 32})) rala::fuzz::finding("the transform returned the wrong shape");
  });
  return 0;
}
