#include "models/presets.h"

#include <cctype>

namespace rala {

RavltOptions ravlt_t() { return RavltOptions(); }

RavltOptions ravlt_s() {
  return RavltOptions().embed_dims({64, 128, 320, 512}).depths({3, 5, 9, 3}).heads({1, 2, 5, 8}).drop_path_rate(0.15);
}

RavltOptions ravlt_b() {
  return RavltOptions()
      .embed_dims({96, 192, 384, 512})
      .depths({4, 6, 12, 6})
      .heads({1, 2, 6, 8})
      .drop_path_rate(0.4)
      .layer_init_values({1, 1, 1e-6, 1e-6});
}

RavltOptions ravlt_l() {
  return RavltOptions()
      .embed_dims({96, 192, 448, 640})
      .depths({4, 7, 19, 8})
      .heads({1, 2, 7, 10})
      .drop_path_rate(0.55)
      .layer_init_values({1e-6, 1e-6, 1e-6, 1e-6});
}

RavltOptions ravlt_micro() {
  return RavltOptions()
      .embed_dims({16, 32, 64, 128})
      .depths({1, 1, 2, 1})
      .heads({1, 2, 4, 4})
      .projection(64)
      .num_classes(10)
      .drop_path_rate(0.0);
}

std::vector<std::string> ravlt_preset_names() { return {"ravlt_t", "ravlt_s", "ravlt_b", "ravlt_l", "ravlt_micro"}; }

RavltOptions ravlt_preset(const std::string& name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "ravlt_t") return ravlt_t();
  if (n == "ravlt_s") return ravlt_s();
  if (n == "ravlt_b") return ravlt_b();
  if (n == "ravlt_l") return ravlt_l();
  if (n == "ravlt_micro") return ravlt_micro();
  std::string known;
  for (const auto& k : ravlt_preset_names()) known += (known.empty() ? "" : ", ") + k;
  TORCH_CHECK(false, "unknown model preset '", name, "' (expected one of: ", known, ")");
}

}  // namespace rala
