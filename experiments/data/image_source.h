#pragma once
/// \file image_source.h
/// Model-ready batches from any of the data sources the CLI names: `fashion-mnist` (the test split; grey images
/// resized and repeated to 3 channels), a directory of JPEG/PNG (ImageNet evaluation transform), or `synthetic`
/// (seeded N(0, 1) images).
///
/// Usage:
///   rala::data::ImageSource src("fashion-mnist", 224, 100);
///   while (auto batch = src.next(8)) model.forward(batch->images);

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rala::data {

struct Batch {
  torch::Tensor images;             ///< (B, 3, size, size) float32, normalised
  std::vector<std::string> names;   ///< file path, or "<dataset>:<index>"
  std::vector<int64_t> labels;      ///< −1 when unknown
};

class ImageSource {
 public:
  /// spec: "fashion-mnist" | "synthetic" | a directory. num_images ≤ 0 = all (synthetic needs a count).
  ImageSource(const std::string& spec, int64_t image_size, int64_t num_images, uint64_t seed = 0);
  ~ImageSource();
  /// The next batch of at most `batch_size` images, or nullopt at the end. Decoding errors throw naming the file.
  std::optional<Batch> next(int64_t batch_size);
  /// Images this source yields (end − begin after restrict_to).
  int64_t size() const { return count_ - begin_; }
  /// Images of the whole sequence, before any restrict_to.
  int64_t total() const { return total_; }
  /// Restricts the source to images [begin, end) of the whole sequence (one shard of an analysis), before the first
  /// next(); names and labels keep their indices in the whole sequence. `batch_size` is the batch size the whole
  /// sequence is read with: `begin` must be a multiple of it, and synthetic images (drawn batch by batch from one
  /// generator) before `begin` are drawn in batches of that size and dropped, so every image is the one a full run
  /// sees.
  void restrict_to(int64_t begin, int64_t end, int64_t batch_size);
  /// "fashion-mnist (test split)", "synthetic N(0,1) seed=S", or the directory.
  std::string description() const;
  const std::vector<std::string>& classes() const { return classes_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::string spec_;
  int64_t size_px_, count_ = 0, position_ = 0, begin_ = 0, total_ = 0;
  uint64_t seed_;
  std::vector<std::string> classes_;
};

}  // namespace rala::data
