#include "models/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <vector>

#include "attention_variants/text.h"
#include "models/checkpoint.h"

namespace rala {

namespace {

/// Largest header the format allows (the reference implementation's MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeader = 100'000'000;
/// Deepest JSON nesting a valid header has is 3 (object → entry → shape array); refuse anything much deeper before
/// the recursive parser sees it.
constexpr int kMaxDepth = 16;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  uint64_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8},  {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8},  {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},     {"I8", torch::kInt8, 1},    {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

std::string dtype_list() {
  std::string s;
  for (const auto& d : kDtypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

/// Where the bytes come from: a file or memory. read() copies [offset, offset + n) into dst.
struct Source {
  uint64_t size = 0;
  std::function<void(uint64_t offset, uint64_t n, char* dst)> read;
};

/// Max nesting depth of JSON text, brackets inside strings ignored.
int json_depth(const std::string& text) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
    else if (c == '}' || c == ']') --depth;
    if (max_depth > kMaxDepth) break;
  }
  return max_depth;
}

uint64_t read_u64_le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

Safetensors parse(const Source& src, const std::string& name) {
  // One line, whatever the names echoed from the header hold.
  auto fail = [&](const auto&... args) { TORCH_CHECK(false, one_line(c10::str("safetensors '", name, "': ", args...))); };
  if (src.size < 8) fail("the file has ", src.size, " bytes, fewer than the 8-byte header length");
  char len_bytes[8];
  src.read(0, 8, len_bytes);
  const uint64_t n = read_u64_le(len_bytes);
  if (n < 2 || n > kMaxHeader || n > src.size - 8)
    fail("the header length ", n, " is impossible for a file of ", src.size, " bytes (expected 2 ≤ n ≤ min(",
         kMaxHeader, ", file size − 8))");
  std::string header(n, '\0');
  src.read(8, n, header.data());
  if (header[0] != '{') fail("the header does not start with '{' (not a safetensors file?)");
  if (json_depth(header) > kMaxDepth) fail("the JSON header nests deeper than ", kMaxDepth, " levels");
  auto json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) fail("the header is not a JSON object");

  Safetensors out;
  std::vector<Entry> entries;
  const uint64_t data_size = src.size - 8 - n;
  for (auto it = json.begin(); it != json.end(); ++it) {
    const auto& v = it.value();
    if (it.key() == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ entry '", m.key(), "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    Entry e;
    e.name = it.key();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail("tensor '", e.name, "' must be an object with dtype, shape and data_offsets");
    const auto& dt = v["dtype"];
    if (dt.is_string())
      for (const auto& d : kDtypes)
        if (dt.get<std::string>() == d.name) e.dtype = &d;
    if (e.dtype == nullptr) fail("tensor '", e.name, "' has dtype ", dt.dump(), " (expected one of: ", dtype_list(), ")");
    const auto& shape = v["shape"];
    if (!shape.is_array()) fail("tensor '", e.name, "': shape must be an array of non-negative integers");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) fail("tensor '", e.name, "': shape must be an array of non-negative integers, got ",
                                        shape.dump());
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel))
        fail("tensor '", e.name, "': shape ", shape.dump(), " overflows");
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail("tensor '", e.name, "': data_offsets must be [begin, end] with non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, e.dtype->size, &nbytes) || e.begin > e.end || e.end - e.begin != nbytes)
      fail("tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] do not hold ", shape.dump(), " ",
           e.dtype->name, " (", numel, " elements of ", e.dtype->size, " bytes)");
    if (e.end > data_size)
      fail("tensor '", e.name, "': data_offsets end ", e.end, " is past the ", data_size, " bytes of data");
    entries.push_back(std::move(e));
  }
  // The tensors tile the data exactly: sorted by offset, each begins where the previous ended, the last ends at the end.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const auto& e : entries) {
    if (e.begin < at) fail("tensor '", e.name, "' overlaps the previous tensor's data (offset ", e.begin, " < ", at, ")");
    if (e.begin > at) fail("there are unclaimed bytes [", at, ", ", e.begin, ") before tensor '", e.name, "'");
    at = e.end;
  }
  if (at != data_size) fail("the tensors cover ", at, " of the ", data_size, " data bytes");
  // Only now allocate: every tensor's bytes are inside the file, so the total is bounded by its size.
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    if (e.end > e.begin) src.read(8 + n + e.begin, e.end - e.begin, static_cast<char*>(t.data_ptr()));
    out.tensors[e.name] = t;
  }
  return out;
}

}  // namespace

bool looks_like_safetensors(const std::string& first_bytes, uint64_t file_size) {
  if (first_bytes.size() < 9 || file_size < 10) return false;
  const uint64_t n = read_u64_le(first_bytes.data());
  return n >= 2 && n <= kMaxHeader && n <= file_size - 8 && first_bytes[8] == '{';
}

Safetensors parse_safetensors(const std::string& bytes, const std::string& name) {
  Source src;
  src.size = bytes.size();
  src.read = [&bytes](uint64_t offset, uint64_t n, char* dst) { std::memcpy(dst, bytes.data() + offset, n); };
  return parse(src, name);
}

Safetensors read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "safetensors '", path, "': cannot open the file");
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  TORCH_CHECK(end >= 0, "safetensors '", path, "': cannot read its size");
  Source src;
  src.size = static_cast<uint64_t>(end);
  src.read = [&](uint64_t offset, uint64_t n, char* dst) {
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(dst, static_cast<std::streamsize>(n));
    TORCH_CHECK(in.gcount() == static_cast<std::streamsize>(n), "safetensors '", path, "': short read at offset ",
                offset);
  };
  return parse(src, path);
}

void write_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK(tensor.defined(), "write_safetensors: ", path, ": tensor '", name, "' is undefined");
    TORCH_CHECK(name != "__metadata__", "write_safetensors: ", path, ": a tensor may not be named __metadata__");
    const DtypeInfo* dtype = nullptr;
    for (const auto& d : kDtypes)
      if (d.type == tensor.scalar_type()) dtype = &d;
    TORCH_CHECK(dtype != nullptr, "write_safetensors: ", path, ": tensor '", name, "' has dtype ",
                tensor.scalar_type(), " (expected one of: ", dtype_list(), ")");
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype->size;
    header[name] = {{"dtype", dtype->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - (text.size() % 8)) % 8, ' ');  // data starts 8-byte aligned, as the reference writer does
  std::vector<char> bytes(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, text.data(), text.size());
  char* p = bytes.data() + 8 + text.size();
  for (const auto& t : data) {
    const size_t nb = static_cast<size_t>(t.numel()) * t.element_size();
    if (nb > 0) std::memcpy(p, t.data_ptr(), nb);
    p += nb;
  }
  write_bytes_atomically(path, bytes);
}

}  // namespace rala
