#pragma once
/// \file image_folder.h
/// Image decoding (PNG/JPEG via stb_image) and a directory-of-images dataset in the layout of torchvision's
/// ImageFolder.
///
/// Usage:
///   auto img = rala::data::decode_image("/data/val/n01440764/ILSVRC2012_val_00000293.JPEG");  // (3, H, W) uint8
///   rala::data::ImageFolder val("/data/val");        // val/<class>/<image>.{jpg,jpeg,png}
///   auto x = rala::data::imagenet_eval_transform(val.load(0));   // transforms.h: (3, 224, 224) float32
///   int64_t y = val.label(0);                                     // index into val.classes()

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rala::data {

/// Decodes a PNG or JPEG file (stb_image; other formats are refused) into a (3, H, W) uint8 RGB tensor. Grey is
/// replicated to the three channels; an alpha channel is dropped (no blending); 16-bit PNGs are reduced to 8 bits.
/// Throws c10::Error with one line naming the file if it is missing, unreadable or cannot be decoded (with the
/// stb_image reason), or if its header claims more pixels than its size can encode (over 1032 per byte: a
/// decompression bomb) — checked before any pixel memory is allocated.
///
///   auto img = rala::data::decode_image("cat.png");   // img.sizes() == {3, H, W}, img.dtype() == torch::kUInt8
torch::Tensor decode_image(const std::string& path);

/// (height, width) of an image from its header alone (no decoding): what decode_image would return the size of.
/// Throws c10::Error naming the file when it is missing or not an image stb_image reads.
std::pair<int64_t, int64_t> image_dims(const std::string& path);

/// True if `path` ends in .jpg, .jpeg or .png (case-insensitive): the files ImageFolder lists.
bool is_image_file(const std::string& path);

/// The images of a directory, in one of two layouts:
///   - class sub-folders: `root/<class>/**/<image>`; classes are the sub-folder names sorted byte-wise and label k is
///     classes()[k]; images are found recursively in each class folder and listed sorted by path (torchvision's
///     ImageFolder order). Every class folder must hold at least one image, and `root` must not also hold loose images.
///   - flat: `root/<image>` with no sub-folders; every label is -1 and classes() is empty.
/// Image files are .jpg/.jpeg/.png in any case; other files and entries whose name starts with '.' are ignored.
/// A missing root, a root that is not a directory, or one without images throws c10::Error naming the path.
///
///   rala::data::ImageFolder folder("/data/imagenette/val");
///   for (int64_t i = 0; i < folder.size(); ++i) {
///     torch::Tensor img = folder.load(i);    // (3, H, W) uint8
///     int64_t label = folder.label(i);       // 0 .. classes().size() - 1
///   }
class ImageFolder {
 public:
  /// Scans `root` (see the class comment).
  explicit ImageFolder(const std::string& root);

  /// The directory given to the constructor.
  const std::string& root() const { return root_; }
  /// Number of images.
  int64_t size() const { return static_cast<int64_t>(paths_.size()); }
  /// Path of image i (0 ≤ i < size()).
  const std::string& path(int64_t i) const;
  /// Label of image i: index into classes(), or -1 in the flat layout.
  int64_t label(int64_t i) const;
  /// Sorted class names (empty in the flat layout).
  const std::vector<std::string>& classes() const { return classes_; }
  /// All labels as a (size(),) int64 tensor.
  torch::Tensor labels() const;
  /// Decodes image i: (3, H, W) uint8 RGB (see decode_image).
  torch::Tensor load(int64_t i) const;

 private:
  void check_index(int64_t i) const;

  std::string root_;
  std::vector<std::string> classes_;
  std::vector<std::string> paths_;
  std::vector<int64_t> labels_;
};

}  // namespace rala::data
