// libFuzzer target: the pickle interpreter of read_checkpoint alone (no zip around it), on arbitrary bytes taken as a
// checkpoint's data.pkl: parse, then select the state dict and check every tensor view against its storage as
// read_checkpoint does (models/checkpoint_detail.h).
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "models/checkpoint_detail.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  rala::fuzz::expect_clean([&] {
    const std::string summary = rala::detail::inspect_pickle(bytes);
    rala::fuzz::check_one_line(summary);
  });
  return 0;
}
