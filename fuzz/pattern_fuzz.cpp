// libFuzzer target: the attention pattern and setting parsers (attention_variants/registry.h parse_pattern,
// distribute_settings; settings.h split_setting, Settings::set) on arbitrary text. Input: the first line is the
// pattern, every further line one `key=value` / `scope.key=value` setting. The pattern is parsed for 1 to 4 stages;
// each setting is also set directly on every variant's own Settings table.
#include <cstdint>
#include <string>
#include <vector>

#include "attention_variants/registry.h"
#include "attention_variants/settings.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  const std::string pattern = lines.front();
  const std::vector<std::string> settings(lines.begin() + 1, lines.end());
  for (size_t stages = 1; stages <= 4; ++stages) {
    rala::fuzz::expect_clean([&] {
      const auto variants = rala::parse_pattern(pattern, stages);
      if (variants.size() != stages) rala::fuzz::finding("parse_pattern returned the wrong number of stages");
      const auto per_stage = rala::distribute_settings(variants, settings);
      for (size_t i = 0; i < variants.size(); ++i) {
        rala::Settings s(rala::variant_info(variants[i]).name, &rala::settings_schema(variants[i]));
        s.apply(per_stage[i]);
        s.describe();
      }
    });
  }
  for (const auto& line : settings) {
    rala::fuzz::expect_clean([&] {
      const auto pair = rala::split_setting(line);
      for (const auto& info : rala::kVariants) {
        rala::Settings s(info.name, &rala::settings_schema(info.variant));
        rala::fuzz::expect_clean([&] { s.set(pair.first, pair.second); });
      }
    });
  }
  return 0;
}
