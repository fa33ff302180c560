#include "experiments/data/transforms.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

namespace rala::data {
namespace {

/// Python's round() for the values used here: nearest integer, ties to even (the default FE_TONEAREST mode).
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

void check_image_or_batch(const torch::Tensor& t, const char* fn) {
  TORCH_CHECK(t.defined() && (t.dim() == 3 || t.dim() == 4), fn,
              ": expected an image (C, H, W) or a batch (N, C, H, W), got shape ",
              t.defined() ? c10::str(t.sizes()) : std::string("undefined"));
}

void check_batch(const torch::Tensor& t, const char* fn) {
  TORCH_CHECK(t.defined() && t.dim() == 4, fn, ": expected a batch (N, C, H, W), got shape ",
              t.defined() ? c10::str(t.sizes()) : std::string("undefined"));
}

}  // namespace

at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width, Interpolation mode, bool antialias) {
  check_image_or_batch(image, "resize");
  TORCH_CHECK(height > 0 && width > 0, "resize: output size must be positive, got ", height, "x", width);
  const bool is_uint8 = image.scalar_type() == torch::kUInt8;
  TORCH_CHECK(is_uint8 || image.is_floating_point(), "resize: expected uint8 or floating pixels, got ",
              image.scalar_type());
  TORCH_CHECK(image.size(-2) > 0 && image.size(-1) > 0, "resize: input image is empty, shape ", image.sizes());

  torch::Tensor x = image.dim() == 3 ? image.unsqueeze(0) : image;
  if (is_uint8) x = x.to(torch::kFloat32);
  x = x.contiguous();

  torch::Tensor y;
  if (x.size(2) == height && x.size(3) == width) {
    y = x.clone();  // every filter is the identity at scale 1
  } else {
    const std::vector<int64_t> size = {height, width};
    if (mode == Interpolation::bicubic) {
      y = antialias ? at::_upsample_bicubic2d_aa(x, size, /*align_corners=*/false, c10::nullopt, c10::nullopt)
                    : at::upsample_bicubic2d(x, size, /*align_corners=*/false, c10::nullopt, c10::nullopt);
    } else {
      y = antialias ? at::_upsample_bilinear2d_aa(x, size, /*align_corners=*/false, c10::nullopt, c10::nullopt)
                    : at::upsample_bilinear2d(x, size, /*align_corners=*/false, c10::nullopt, c10::nullopt);
    }
  }
  if (is_uint8) y = y.round_().clamp_(0, 255).to(torch::kUInt8);
  return image.dim() == 3 ? y.squeeze(0) : y;
}

std::pair<int64_t, int64_t> resized_shorter_size(int64_t height, int64_t width, int64_t shorter) {
  TORCH_CHECK(height > 0 && width > 0 && shorter > 0, "resized_shorter_size: sizes must be positive, got image ",
              height, "x", width, " and shorter side ", shorter);
  // torchvision: new_long = int(new_short * long / short), a float division truncated.
  if (height <= width) {
    return {shorter, static_cast<int64_t>(static_cast<double>(shorter * width) / static_cast<double>(height))};
  }
  return {static_cast<int64_t>(static_cast<double>(shorter * height) / static_cast<double>(width)), shorter};
}

torch::Tensor resize_shorter_side(const torch::Tensor& image, int64_t shorter, Interpolation mode, bool antialias) {
  check_image_or_batch(image, "resize_shorter_side");
  const auto [h, w] = resized_shorter_size(image.size(-2), image.size(-1), shorter);
  return resize(image, h, w, mode, antialias);
}

torch::Tensor center_crop(const torch::Tensor& image, int64_t height, int64_t width) {
  check_image_or_batch(image, "center_crop");
  const int64_t H = image.size(-2), W = image.size(-1);
  TORCH_CHECK(height > 0 && width > 0 && height <= H && width <= W, "center_crop: cannot cut ", height, "x", width,
              " from a ", H, "x", W, " image, expected a crop no larger than the image");
  const int64_t top = round_half_even(static_cast<double>(H - height) / 2.0);
  const int64_t left = round_half_even(static_cast<double>(W - width) / 2.0);
  return image.narrow(-2, top, height).narrow(-1, left, width);
}

torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean, const std::vector<double>& std) {
  check_image_or_batch(image, "normalize");
  TORCH_CHECK(image.is_floating_point(), "normalize: expected floating pixels, got ", image.scalar_type());
  const int64_t C = image.size(-3);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C, "normalize: image has ",
              C, " channels but mean has ", mean.size(), " and std ", std.size(), " entries, expected ", C);
  for (double s : std) TORCH_CHECK(s > 0, "normalize: std entries must be positive, got ", s);
  const auto opts = torch::TensorOptions().dtype(image.scalar_type());
  const auto m = torch::tensor(mean, torch::kFloat64).to(opts).view({C, 1, 1});
  const auto s = torch::tensor(std, torch::kFloat64).to(opts).view({C, 1, 1});
  return (image - m) / s;
}

torch::Tensor imagenet_eval_transform(const torch::Tensor& image, int64_t size) {
  TORCH_CHECK(image.defined() && (image.dim() == 3 || image.dim() == 4) && image.size(-3) == 3 &&
                  image.scalar_type() == torch::kUInt8,
              "imagenet_eval_transform: expected a uint8 RGB image (3, H, W) or batch (N, 3, H, W), got ",
              image.defined() ? c10::str(image.scalar_type(), " ", image.sizes()) : std::string("undefined"));
  TORCH_CHECK(size > 0, "imagenet_eval_transform: size must be positive, got ", size);
  const int64_t resize_to = size * 256 / 224;  // int(size * 256 / 224)
  // The resized image is as elongated as the input: a 1×60000 strip (a 4 KB PNG) would become 256×15,360,000 pixels
  // before the crop. Photographs, panoramas included, stay far below the limit.
  const int64_t H = image.size(-2), W = image.size(-1);
  TORCH_CHECK(H > 0 && W > 0 && std::max(H, W) <= kMaxEvalAspect * std::min(H, W), "imagenet_eval_transform: a ", H,
              "x", W, " image is more than ", kMaxEvalAspect, " times as long as wide; resizing its shorter side to ",
              resize_to, " would make the longer one ", std::max(H, W) / std::max<int64_t>(1, std::min(H, W)),
              " times that (expected at most ", kMaxEvalAspect, ":1)");
  torch::Tensor x = resize_shorter_side(image, resize_to, Interpolation::bicubic, /*antialias=*/true);
  x = center_crop(x, size, size).to(torch::kFloat32).div_(255.0);
  return normalize(x, {kImageNetMean.begin(), kImageNetMean.end()}, {kImageNetStd.begin(), kImageNetStd.end()})
      .contiguous();
}

torch::Tensor fashion_mnist_to_float(const torch::Tensor& images, int64_t size, int64_t channels) {
  TORCH_CHECK(images.defined() && images.dim() == 4 && images.size(1) == 1 && images.scalar_type() == torch::kUInt8,
              "fashion_mnist_to_float: expected uint8 images (N, 1, H, W), got ",
              images.defined() ? c10::str(images.scalar_type(), " ", images.sizes()) : std::string("undefined"));
  TORCH_CHECK(size > 0, "fashion_mnist_to_float: size must be positive, got ", size);
  TORCH_CHECK(channels == 1 || channels == 3, "fashion_mnist_to_float: channels must be 1 or 3, got ", channels);
  torch::Tensor x = images.to(torch::kFloat32).div_(255.0);
  if (x.size(2) != size || x.size(3) != size) {
    const bool shrinking = size < std::min(x.size(2), x.size(3));
    x = resize(x, size, size, Interpolation::bilinear, /*antialias=*/shrinking);
  }
  x = x.sub_(kFashionMnistMean).div_(kFashionMnistStd);
  if (channels == 3) x = x.repeat({1, 3, 1, 1});
  return x;
}

torch::Tensor random_crop_with_padding(const torch::Tensor& batch, int64_t pad, at::Generator gen) {
  check_batch(batch, "random_crop_with_padding");
  TORCH_CHECK(pad >= 0, "random_crop_with_padding: pad must be >= 0, got ", pad);
  if (pad == 0) return batch.clone();
  const int64_t N = batch.size(0), H = batch.size(2), W = batch.size(3);
  const torch::Tensor padded = torch::constant_pad_nd(batch, {pad, pad, pad, pad}, 0);
  const torch::Tensor offsets = torch::randint(0, 2 * pad + 1, {N, 2}, gen, torch::kInt64);
  const auto off = offsets.accessor<int64_t, 2>();
  torch::Tensor out = torch::empty_like(batch, torch::MemoryFormat::Contiguous);
  for (int64_t n = 0; n < N; ++n) {
    out[n].copy_(padded[n].narrow(1, off[n][0], H).narrow(2, off[n][1], W));
  }
  return out;
}

torch::Tensor random_horizontal_flip(const torch::Tensor& batch, double p, at::Generator gen) {
  check_batch(batch, "random_horizontal_flip");
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "random_horizontal_flip: p must be in [0, 1], got ", p);
  const int64_t N = batch.size(0);
  const torch::Tensor flip = (torch::rand({N}, gen, torch::kFloat32) < p).view({N, 1, 1, 1});
  return torch::where(flip, batch.flip({3}), batch);
}

CropBox random_resized_crop_box(int64_t height, int64_t width, at::Generator gen, std::pair<double, double> scale,
                                std::pair<double, double> ratio) {
  TORCH_CHECK(height > 0 && width > 0, "random_resized_crop: image must be non-empty, got ", height, "x", width);
  TORCH_CHECK(scale.first > 0 && scale.first <= scale.second,
              "random_resized_crop: scale must satisfy 0 < min <= max, got (", scale.first, ", ", scale.second, ")");
  TORCH_CHECK(ratio.first > 0 && ratio.first <= ratio.second,
              "random_resized_crop: ratio must satisfy 0 < min <= max, got (", ratio.first, ", ", ratio.second, ")");
  const double area = static_cast<double>(height) * static_cast<double>(width);
  // torchvision: log_ratio = torch.log(torch.tensor(ratio)) in float32.
  const torch::Tensor log_ratio = torch::log(torch::tensor({ratio.first, ratio.second}, torch::kFloat32));
  const double log_lo = log_ratio[0].item<float>(), log_hi = log_ratio[1].item<float>();
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double fraction = torch::empty({1}, torch::kFloat32).uniform_(scale.first, scale.second, gen).item<float>();
    const double target_area = area * fraction;
    const double aspect = torch::exp(torch::empty({1}, torch::kFloat32).uniform_(log_lo, log_hi, gen)).item<float>();
    const int64_t w = round_half_even(std::sqrt(target_area * aspect));
    const int64_t h = round_half_even(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t top = torch::randint(0, height - h + 1, {1}, gen, torch::kInt64).item<int64_t>();
      const int64_t left = torch::randint(0, width - w + 1, {1}, gen, torch::kInt64).item<int64_t>();
      return CropBox{top, left, h, w};
    }
  }
  // Fallback: central crop with the aspect ratio clamped to `ratio`.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio.first) {
    h = round_half_even(static_cast<double>(w) / ratio.first);
  } else if (in_ratio > ratio.second) {
    w = round_half_even(static_cast<double>(h) * ratio.second);
  }
  return CropBox{(height - h) / 2, (width - w) / 2, h, w};
}

torch::Tensor random_resized_crop(const torch::Tensor& image, int64_t size, at::Generator gen,
                                  std::pair<double, double> scale, std::pair<double, double> ratio, bool antialias) {
  TORCH_CHECK(image.defined() && image.dim() == 3, "random_resized_crop: expected an image (C, H, W), got shape ",
              image.defined() ? c10::str(image.sizes()) : std::string("undefined"));
  TORCH_CHECK(size > 0, "random_resized_crop: size must be positive, got ", size);
  const CropBox box = random_resized_crop_box(image.size(1), image.size(2), std::move(gen), scale, ratio);
  const torch::Tensor crop = image.narrow(1, box.top, box.height).narrow(2, box.left, box.width);
  return resize(crop, size, size, Interpolation::bilinear, antialias);
}

}  // namespace rala::data
