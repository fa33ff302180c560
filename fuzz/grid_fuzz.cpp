// libFuzzer target: the ablation grid parser (experiments/grid.h parse_grid: YAML through yaml-cpp, then every key,
// pattern and setting validated) on arbitrary text. On success the grid has configurations and seeds.
#include <cstdint>
#include <string>

#include "experiments/grid.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  rala::fuzz::expect_clean([&] {
    const auto grid = rala::parse_grid(text, "fuzz.yaml");
    if (grid.configs.empty() || grid.seeds.empty()) rala::fuzz::finding("a grid without configurations or seeds");
    for (size_t i = 0; i < grid.configs.size(); ++i) grid.config_spec(i);
    grid.runs();
  });
  return 0;
}
