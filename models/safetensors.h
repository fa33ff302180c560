#pragma once
/// \file safetensors.h
/// The safetensors format (Hugging Face / timm): an 8-byte little-endian header length n, a JSON header of n bytes
///   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
/// and the raw little-endian data, offsets relative to the end of the header. Every structural fact — header size,
/// JSON nesting, dtypes, shapes, offsets, overlaps, gaps — is checked against the file size before any tensor memory
/// is allocated; a hostile file gets one line, not a crash or a giant allocation.
///
/// Usage:
///   auto st = rala::read_safetensors("model.safetensors");          // .tensors (name → CPU tensor), .metadata
///   rala::write_safetensors("out.safetensors", state, {{"format", "pt"}});   // atomic (.partial + rename)

#include <torch/torch.h>

#include <map>
#include <string>

namespace rala {

struct Safetensors {
  std::map<std::string, torch::Tensor> tensors;   ///< contiguous CPU tensors owning their memory
  std::map<std::string, std::string> metadata;    ///< the optional "__metadata__" string map
};

/// Dtypes read: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL. Throws c10::Error with one line naming the file and
/// what was wrong (and what was expected).
Safetensors read_safetensors(const std::string& path);
/// The same from bytes in memory (`name` is used in messages).
Safetensors parse_safetensors(const std::string& bytes, const std::string& name);
/// Whether `bytes` (a file's first bytes, at least 9) look like safetensors: a plausible header length, then '{'.
bool looks_like_safetensors(const std::string& first_bytes, uint64_t file_size);

/// Writes tensors (any of the dtypes above; on any device; made contiguous on the CPU) with the header padded with
/// spaces to a multiple of 8 bytes, entries in name order. Atomic: "<path>.partial", fsync, rename.
void write_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace rala
