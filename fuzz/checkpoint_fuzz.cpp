// libFuzzer target: read_checkpoint (models/checkpoint.h) on arbitrary bytes written to a scratch file — the whole
// path a user's .pth or .safetensors takes: the safetensors sniff, the zip container (LibTorch's PyTorchStreamReader),
// our pickle interpreter, the tensor rebuild with storage offsets and strides, and LibTorch's unpickler for the extra
// entries of our own format. On success every state tensor must be a defined, contiguous CPU tensor.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "models/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = rala::fuzz::write_scratch("checkpoint.pth", data, size);
  rala::fuzz::expect_clean([&] {
    const auto ck = rala::read_checkpoint(path);
    for (const auto& [key, t] : ck.state)
      if (!t.defined() || !t.is_contiguous() || !t.device().is_cpu())
        rala::fuzz::finding("state entry '" + key + "' is not a contiguous CPU tensor");
  });
  return 0;
}
