#pragma once
/// \file transforms.h
/// Image transforms with torchvision semantics: resizing, cropping, normalisation, the ImageNet evaluation pipeline,
/// Fashion-MNIST to float, and seeded training augmentations.
///
/// Shapes: an image is (C, H, W), a batch is (N, C, H, W). uint8 pixels are 0..255; float pixels are in [0, 1]
/// before normalisation.
///
/// Usage:
///   auto gen = rala::data::make_generator(42);
///   auto x = rala::data::imagenet_eval_transform(rala::data::decode_image("cat.jpg"));   // (3, 224, 224) float32
///   auto f = rala::data::fashion_mnist_to_float(train.images.narrow(0, 0, 128), 28, 1);  // (128, 1, 28, 28) float32
///   f = rala::data::random_crop_with_padding(f, 4, gen);                                 // (128, 1, 28, 28)
///   f = rala::data::random_horizontal_flip(f, 0.5, gen);
///   auto r = rala::data::random_resized_crop(img, 224, gen);   // (3, 224, 224), dtype of img

#include <ATen/core/Generator.h>
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace rala::data {

/// ImageNet channel statistics (RGB) of pixels in [0, 1].
constexpr std::array<double, 3> kImageNetMean = {0.485, 0.456, 0.406};
constexpr std::array<double, 3> kImageNetStd = {0.229, 0.224, 0.225};
/// Fashion-MNIST pixel statistics of pixels in [0, 1].
constexpr double kFashionMnistMean = 0.2860;
constexpr double kFashionMnistStd = 0.3530;

/// Resampling filter of resize().
enum class Interpolation { bilinear, bicubic };

/// A CPU random generator (mt19937, as torch.Generator().manual_seed(seed)); pass it to the random transforms to make
/// them reproducible. Copies of an at::Generator share one state.
///
///   auto gen = rala::data::make_generator(0);
at::Generator make_generator(uint64_t seed);

/// Resizes (C, H, W) or (N, C, H, W) to height × width (torch.nn.functional.interpolate, align_corners=false; with
/// `antialias` the PIL-style filter torchvision uses, which widens the kernel when shrinking).
/// float32/float64 input: the result has the same dtype, unrounded. uint8 input: computed in float32, then rounded and
/// clamped to 0..255 and returned as uint8 (torchvision's Resize on uint8 tensors).
///
///   auto y = rala::data::resize(img, 256, 341, rala::data::Interpolation::bicubic);   // (3, 256, 341)
torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width,
                     Interpolation mode = Interpolation::bilinear, bool antialias = true);

/// Output (height, width) of torchvision's Resize(shorter) for an input of `height` × `width`: the shorter side becomes
/// `shorter` and the longer one int(longer · shorter / short side).
///
///   rala::data::resized_shorter_size(200, 300, 256);   // {256, 384}
std::pair<int64_t, int64_t> resized_shorter_size(int64_t height, int64_t width, int64_t shorter);

/// resize() to resized_shorter_size(H, W, shorter). Image (C, H, W) or batch (N, C, H, W).
torch::Tensor resize_shorter_side(const torch::Tensor& image, int64_t shorter,
                                  Interpolation mode = Interpolation::bicubic, bool antialias = true);

/// The central height × width window of (C, H, W) or (N, C, H, W), with torchvision's CenterCrop offsets
/// top = round((H − height) / 2), left = round((W − width) / 2) (round half to even, as Python). The image must be at
/// least that large. Returns a view.
torch::Tensor center_crop(const torch::Tensor& image, int64_t height, int64_t width);

/// (x − mean[c]) / std[c] per channel c of a floating (C, H, W) or (N, C, H, W) tensor; mean and std have C entries.
torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean, const std::vector<double>& std);

/// Largest aspect ratio imagenet_eval_transform takes (its resized image is as elongated as the input).
constexpr int64_t kMaxEvalAspect = 64;

/// The standard ImageNet evaluation pipeline: Resize(int(size·256/224), bicubic, antialias) on the uint8 image (result
/// rounded to uint8, as torchvision), CenterCrop(size), /255, Normalize(ImageNet mean, std).
/// image (3, H, W) uint8 → (3, size, size) float32; a batch (N, 3, H, W) uint8 → (N, 3, size, size) float32.
/// Images more elongated than kMaxEvalAspect:1 are refused (one line) before anything is allocated.
///
///   auto x = rala::data::imagenet_eval_transform(rala::data::decode_image("cat.jpg"));        // (3, 224, 224)
///   auto y = rala::data::imagenet_eval_transform(rala::data::decode_image("cat.jpg"), 384);   // short side 438
torch::Tensor imagenet_eval_transform(const torch::Tensor& image, int64_t size = 224);

/// Fashion-MNIST uint8 images (N, 1, H, W) (H = W = 28) to network input (N, channels, size, size) float32:
/// /255, bilinear resize to size × size when size ≠ H (antialiased when shrinking), (x − 0.2860) / 0.3530, and the
/// grey channel repeated when channels = 3. channels must be 1 or 3.
///
///   auto x = rala::data::fashion_mnist_to_float(d.images, 32, 3);   // (N, 3, 32, 32)
torch::Tensor fashion_mnist_to_float(const torch::Tensor& images, int64_t size = 28, int64_t channels = 1);

/// RandomCrop(H×W, padding=pad) per sample: zero-pads batch (N, C, H, W) by `pad` on every side and cuts an H × W
/// window at an offset drawn uniformly from 0..2·pad independently per sample (rows and columns). Same shape and dtype
/// as the input; pad = 0 returns a copy of the input.
///
///   auto y = rala::data::random_crop_with_padding(x, 4, gen);   // y.sizes() == x.sizes()
torch::Tensor random_crop_with_padding(const torch::Tensor& batch, int64_t pad, at::Generator gen);

/// Mirrors each sample of batch (N, C, H, W) along the width with probability p (independent per sample).
/// p = 1 flips all, p = 0 none. Same shape and dtype as the input.
///
///   auto y = rala::data::random_horizontal_flip(x, 0.5, gen);
torch::Tensor random_horizontal_flip(const torch::Tensor& batch, double p, at::Generator gen);

/// A crop window: rows top .. top+height−1, columns left .. left+width−1.
struct CropBox {
  int64_t top = 0;
  int64_t left = 0;
  int64_t height = 0;
  int64_t width = 0;
};

/// torchvision RandomResizedCrop.get_params for an image of height × width: up to 10 attempts drawing an area
/// fraction in `scale` and a log-uniform aspect ratio (w/h) in `ratio`, the first window that fits is placed
/// uniformly; otherwise the central crop with the aspect ratio clamped to `ratio`. The draws follow torchvision's order
/// and dtypes (float32 uniforms, int64 randint).
CropBox random_resized_crop_box(int64_t height, int64_t width, at::Generator gen,
                                std::pair<double, double> scale = {0.08, 1.0},
                                std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0});

/// RandomResizedCrop(size): crops image (C, H, W) (uint8 or floating) to random_resized_crop_box(H, W, ...) and
/// resizes it to size × size (bilinear; antialiased like PIL unless `antialias` is false). Same dtype as the input.
///
///   auto y = rala::data::random_resized_crop(img, 224, gen);   // (3, 224, 224)
torch::Tensor random_resized_crop(const torch::Tensor& image, int64_t size, at::Generator gen,
                                  std::pair<double, double> scale = {0.08, 1.0},
                                  std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0}, bool antialias = true);

}  // namespace rala::data
