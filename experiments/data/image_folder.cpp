#include "experiments/data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <system_error>

#include "attention_variants/text.h"

// stb_image is compiled into this translation unit only, with internal linkage (STB_IMAGE_STATIC), so it cannot clash
// with another copy (e.g. Debian's libstb.a) linked into the same program. Only its PNG and JPEG decoders: the formats
// image folders hold, and less of stb's code facing files from anywhere.
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include "third_party/stb/stb_image.h"  // Debian's 2.27 + one upstream 2.28 fix (README there)
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace rala::data {
namespace {

namespace fs = std::filesystem;

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// Image files under `dir`, recursively (following directory symlinks, skipping hidden entries), sorted by path.
std::vector<std::string> images_below(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(
      dir, fs::directory_options::follow_directory_symlink | fs::directory_options::skip_permission_denied, ec);
  TORCH_CHECK(!ec, "ImageFolder: cannot list '", dir.string(), "': ", ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    TORCH_CHECK(!ec, "ImageFolder: cannot list '", dir.string(), "': ", ec.message());
    if (is_hidden(it->path())) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && is_image_file(it->path().string())) out.push_back(it->path().string());
  }
  TORCH_CHECK(!ec, "ImageFolder: cannot list '", dir.string(), "': ", ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

/// At most this many pixels per byte of the file: deflate expands at most 1032-fold, a PNG pixel takes at least one byte
/// before compression, and a baseline JPEG codes a 64-pixel block in at least two bits. A header claiming more is a
/// decompression bomb (a few bytes asking stb for gigabytes).
constexpr uint64_t kMaxPixelsPerByte = 1032;

/// Why stb_image 2.27 (Debian 12) must not see `bytes`, or "". stb 2.27 writes past its 257-entry size list when a JPEG
/// Huffman table (DHT) declares more than 256 codes (fixed upstream in 2.28); such a table is invalid JPEG, so every
/// DHT segment is checked first. Marker segments are walked as stb walks them (fill bytes before a marker included, also
/// before SOI); entropy-coded data is skipped byte by byte (a 0xFF there is always followed by 0x00 or a restart
/// marker).
std::string jpeg_problem(const std::vector<unsigned char>& b) {
  // stb finds SOI as it finds every marker: one 0xFF, any number of 0xFF fill bytes, then the code (0xD8).
  size_t i = 0;
  if (b.empty() || b[0] != 0xFF) return "";
  while (i < b.size() && b[i] == 0xFF) ++i;
  if (i >= b.size() || b[i] != 0xD8) return "";
  ++i;
  while (i + 4 <= b.size()) {
    const unsigned m = b[i + 1];
    if (b[i] != 0xFF || m == 0xFF) {  // entropy-coded data, or a fill byte before a marker
      ++i;
      continue;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // stuffed 0xFF, TEM, RSTn: no length
      i += 2;
      continue;
    }
    if (m == 0xD9) break;  // EOI
    const size_t len = (size_t{b[i + 2]} << 8) | b[i + 3];
    if (m == 0xC4) {  // DHT: tables of (class/id, 16 code counts, the symbols)
      // As stb: tables are read while the segment's length has bytes left, each whole even when the length ends
      // inside it (stb reads on, and past the end of the file as zeros).
      const size_t end = i + 2 + len;
      for (size_t t = i + 4; t < end && t < b.size();) {
        size_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += t + k < b.size() ? b[t + k] : 0;
        if (codes > 256)
          return "a JPEG Huffman table declares " + std::to_string(codes) + " codes, at most 256 are valid";
        t += 17 + codes;
      }
    }
    i += 2 + len;
  }
  return "";
}

/// Why stb_image 2.27 must not see a PNG, or "": stb grows its compressed-data buffer to an IDAT chunk's declared
/// length before it reads the chunk (a 60-byte file asked for 578 MB), so every chunk's length is checked against the
/// bytes left in the file first, walking the chunks as stb does (length, type, data, CRC).
std::string png_problem(const std::vector<unsigned char>& b) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() < 8 || !std::equal(sig, sig + 8, b.begin())) return "";
  size_t i = 8;
  while (i + 8 <= b.size()) {
    const uint64_t len = (uint64_t{b[i]} << 24) | (uint64_t{b[i + 1]} << 16) | (uint64_t{b[i + 2]} << 8) | b[i + 3];
    const uint64_t left = b.size() - (i + 8);
    if (len > left)
      return "a PNG chunk declares " + std::to_string(len) + " bytes of data, but only " + std::to_string(left) +
             " bytes of the file follow it";
    if (b[i + 4] == 'I' && b[i + 5] == 'E' && b[i + 6] == 'N' && b[i + 7] == 'D') break;
    i += 8 + static_cast<size_t>(len) + 4;
  }
  return "";
}

}  // namespace

bool is_image_file(const std::string& path) {
  const std::string ext = lower(fs::path(path).extension().string());
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

torch::Tensor decode_image(const std::string& path) {
  std::error_code ec;
  TORCH_CHECK(fs::exists(path, ec), "image '", one_line(path), "' cannot be decoded: missing file");
  TORCH_CHECK(!fs::is_directory(path, ec), "image '", one_line(path),
              "' cannot be decoded: it is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "image '", one_line(path), "' cannot be decoded: the file cannot be opened for reading");
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TORCH_CHECK(!in.bad(), "image '", one_line(path), "' cannot be decoded: read error");
  TORCH_CHECK(!bytes.empty(), "image '", one_line(path), "' cannot be decoded: the file is empty");
  TORCH_CHECK(bytes.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), "image '", path,
              "' cannot be decoded: ", bytes.size(), " bytes, expected at most 2 GiB");

  const auto reject = [&](const std::string& why) {
    // stb quotes bytes of the file in some reasons ("\n\n\n\n PNG chunk not known"): one line whatever they hold.
    TORCH_CHECK(false, "image '", one_line(path), "' cannot be decoded: ", one_line(why));
  };
  int width = 0, height = 0, channels_in_file = 0;
  // Before stbi_info too: it parses the JPEG header's tables (a DHT before the frame header overflows there).
  if (const std::string why = jpeg_problem(bytes); !why.empty()) reject(why);
  if (const std::string why = png_problem(bytes); !why.empty()) reject(why);
  if (!stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height, &channels_in_file)) {
    const char* reason = stbi_failure_reason();
    reject(std::string(reason ? reason : "unknown stb_image error") + " (expected a PNG or JPEG file)");
  }
  if (static_cast<uint64_t>(width) * static_cast<uint64_t>(height) > kMaxPixelsPerByte * bytes.size())
    reject("its header claims " + std::to_string(width) + "x" + std::to_string(height) + " pixels, more than " +
           std::to_string(kMaxPixelsPerByte) + " per byte of its " + std::to_string(bytes.size()) +
           " bytes can encode");
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height, &channels_in_file, 3),
      stbi_image_free);
  if (!pixels) {
    const char* reason = stbi_failure_reason();
    reject(reason ? reason : "unknown stb_image error");
  }
  // stb_image gives interleaved (H, W, 3); copy out before the buffer is freed, then make it channels-first.
  auto hwc = torch::from_blob(pixels.get(), {height, width, 3}, torch::kUInt8);
  return hwc.permute({2, 0, 1}).contiguous();
}

std::pair<int64_t, int64_t> image_dims(const std::string& path) {
  int width = 0, height = 0, channels = 0;
  if (stbi_info(path.c_str(), &width, &height, &channels) == 0) {
    const char* reason = stbi_failure_reason();
    TORCH_CHECK(false, "image '", path, "' cannot be read: ", reason ? reason : "unknown stb_image error");
  }
  return {height, width};
}

ImageFolder::ImageFolder(const std::string& root) : root_(root) {
  std::error_code ec;
  TORCH_CHECK(fs::exists(root, ec), "ImageFolder: missing directory '", root, "'");
  TORCH_CHECK(fs::is_directory(root, ec), "ImageFolder: '", root, "' is not a directory");

  std::vector<std::string> class_dirs;
  std::vector<std::string> loose;
  fs::directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  TORCH_CHECK(!ec, "ImageFolder: cannot list '", root, "': ", ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    TORCH_CHECK(!ec, "ImageFolder: cannot list '", root, "': ", ec.message());
    if (is_hidden(it->path())) continue;
    if (it->is_directory(ec)) {
      class_dirs.push_back(it->path().filename().string());
    } else if (it->is_regular_file(ec) && is_image_file(it->path().string())) {
      loose.push_back(it->path().string());
    }
  }
  TORCH_CHECK(!ec, "ImageFolder: cannot list '", root, "': ", ec.message());

  if (class_dirs.empty()) {
    TORCH_CHECK(!loose.empty(), "ImageFolder: '", root,
                "' holds no images, expected class sub-folders or .jpg/.jpeg/.png files");
    std::sort(loose.begin(), loose.end());
    paths_ = std::move(loose);
    labels_.assign(paths_.size(), -1);
    return;
  }

  TORCH_CHECK(loose.empty(), "ImageFolder: '", root, "' holds both class sub-folders and loose images (e.g. '",
              loose.front(), "'), expected one layout");
  std::sort(class_dirs.begin(), class_dirs.end());
  classes_ = class_dirs;
  for (size_t k = 0; k < classes_.size(); ++k) {
    const fs::path dir = fs::path(root) / classes_[k];
    std::vector<std::string> files = images_below(dir);
    TORCH_CHECK(!files.empty(), "ImageFolder: class folder '", dir.string(),
                "' holds no images, expected .jpg/.jpeg/.png files");
    for (auto& f : files) {
      paths_.push_back(std::move(f));
      labels_.push_back(static_cast<int64_t>(k));
    }
  }
}

void ImageFolder::check_index(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < size(), "ImageFolder '", root_, "': index ", i, " out of range, expected 0..", size() - 1);
}

const std::string& ImageFolder::path(int64_t i) const {
  check_index(i);
  return paths_[static_cast<size_t>(i)];
}

int64_t ImageFolder::label(int64_t i) const {
  check_index(i);
  return labels_[static_cast<size_t>(i)];
}

torch::Tensor ImageFolder::labels() const { return torch::tensor(labels_, torch::kInt64); }

torch::Tensor ImageFolder::load(int64_t i) const { return decode_image(path(i)); }

}  // namespace rala::data
