// libFuzzer target: the safetensors reader (models/safetensors.h parse_safetensors) on arbitrary bytes.
// On success every tensor must be contiguous, on the CPU, and all of them together no larger than the input.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "models/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  rala::fuzz::expect_clean([&] {
    const auto st = rala::parse_safetensors(bytes, "fuzz.safetensors");
    size_t total = 0;
    for (const auto& [name, t] : st.tensors) {
      if (!t.defined() || !t.is_contiguous() || !t.device().is_cpu())
        rala::fuzz::finding("tensor '" + name + "' is not a contiguous CPU tensor");
      total += static_cast<size_t>(t.numel()) * t.element_size();
    }
    if (total > size) rala::fuzz::finding("tensors hold more bytes than the input");
  });
  return 0;
}
