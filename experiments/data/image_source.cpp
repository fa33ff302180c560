#include "experiments/data/image_source.h"

#include <filesystem>

#include "experiments/data/fashion_mnist.h"
#include "experiments/data/image_folder.h"
#include "experiments/data/transforms.h"

namespace rala::data {

struct ImageSource::State {
  LabeledImages fashion;
  std::unique_ptr<ImageFolder> folder;
  at::Generator generator;
};

ImageSource::ImageSource(const std::string& spec, int64_t image_size, int64_t num_images, uint64_t seed)
    : state_(std::make_unique<State>()), spec_(spec), size_px_(image_size), seed_(seed) {
  TORCH_CHECK(image_size > 0, "image size must be positive, got ", image_size);
  if (spec == "fashion-mnist") {
    state_->fashion = load_fashion_mnist(/*train=*/false, num_images);
    count_ = state_->fashion.images.size(0);
    classes_ = state_->fashion.classes;
  } else if (spec == "synthetic") {
    TORCH_CHECK(num_images > 0, "--data synthetic needs --num-images > 0");
    count_ = num_images;
    state_->generator = make_generator(seed);
  } else {
    TORCH_CHECK(std::filesystem::is_directory(spec), "--data '", spec,
                "' is neither fashion-mnist, synthetic nor an existing directory of images");
    state_->folder = std::make_unique<ImageFolder>(spec);
    count_ = num_images > 0 ? std::min(num_images, state_->folder->size()) : state_->folder->size();
    classes_ = state_->folder->classes();
  }
  total_ = count_;
}

ImageSource::~ImageSource() = default;

void ImageSource::restrict_to(int64_t begin, int64_t end, int64_t batch_size) {
  TORCH_CHECK(position_ == begin_, "ImageSource::restrict_to must come before the first next()");
  TORCH_CHECK(batch_size > 0, "batch size must be positive, got ", batch_size);
  TORCH_CHECK(0 <= begin && begin <= end && end <= total_, "image range [", begin, ", ", end, ") is outside the ",
              total_, " images of ", description());
  TORCH_CHECK(begin % batch_size == 0, "a shard must start at a multiple of the batch size ", batch_size, ", got ", begin);
  if (spec_ == "synthetic")  // the draws of the batches before `begin`, as a full run makes them
    for (int64_t drawn = 0; drawn < begin; drawn += batch_size)
      at::normal(0.0, 1.0, {std::min(batch_size, begin - drawn), 3, size_px_, size_px_}, state_->generator);
  begin_ = position_ = begin;
  count_ = end;
}

std::string ImageSource::description() const {
  if (spec_ == "fashion-mnist") return "fashion-mnist (test split)";
  if (spec_ == "synthetic") return "synthetic N(0,1) seed=" + std::to_string(seed_);
  return spec_;
}

std::optional<Batch> ImageSource::next(int64_t batch_size) {
  TORCH_CHECK(batch_size > 0, "batch size must be positive, got ", batch_size);
  if (position_ >= count_) return std::nullopt;
  const int64_t n = std::min(batch_size, count_ - position_);
  Batch b;
  if (spec_ == "fashion-mnist") {
    b.images = fashion_mnist_to_float(state_->fashion.images.narrow(0, position_, n), size_px_, 3);
    for (int64_t i = 0; i < n; ++i) {
      b.names.push_back("fashion-mnist:test:" + std::to_string(position_ + i));
      b.labels.push_back(state_->fashion.labels[position_ + i].item<int64_t>());
    }
  } else if (spec_ == "synthetic") {
    b.images = at::normal(0.0, 1.0, {n, 3, size_px_, size_px_}, state_->generator);
    for (int64_t i = 0; i < n; ++i) {
      b.names.push_back("synthetic:" + std::to_string(position_ + i));
      b.labels.push_back(-1);
    }
  } else {
    std::vector<torch::Tensor> images;
    for (int64_t i = 0; i < n; ++i) {
      images.push_back(imagenet_eval_transform(state_->folder->load(position_ + i), size_px_));
      b.names.push_back(state_->folder->path(position_ + i));
      b.labels.push_back(state_->folder->label(position_ + i));
    }
    b.images = torch::stack(images);
  }
  position_ += n;
  return b;
}

}  // namespace rala::data
