#pragma once
/// \file checkpoint_detail.h
/// Internals of the checkpoint reader exposed for tests and the fuzz targets (fuzz/pickle_fuzz.cpp); not an API.

#include <string>

namespace rala::detail {

/// Runs read_checkpoint's pickle interpreter alone on `bytes` (a checkpoint's data.pkl), then selects the state dict
/// as read_checkpoint(path, "") does and checks every tensor view against its storage's declared size; storages are
/// not read (there is no zip). Returns a one-line summary ("N tensors in entry 'model', M storages"); throws
/// c10::Error with read_checkpoint's one-line message otherwise.
std::string inspect_pickle(const std::string& bytes);

}  // namespace rala::detail
