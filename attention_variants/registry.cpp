#include "attention_variants/registry.h"

#include <cctype>

#include "attention_variants/cosformer.h"
#include "attention_variants/focused.h"
#include "attention_variants/linear.h"
#include "attention_variants/rala.h"
#include "attention_variants/softmax.h"

namespace rala {

const VariantInfo& variant_info(Variant v) { return kVariants.at(static_cast<size_t>(v)); }

namespace {
std::string known_variants() {
  std::string s;
  for (const auto& info : kVariants) s += (s.empty() ? "" : ", ") + std::string(info.name) + " (" + info.letter + ")";
  return s;
}
}  // namespace

Variant variant_from_name(const std::string& name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& info : kVariants) {
    if (lower == info.name) return info.variant;
    if (lower.size() == 1 && std::toupper(static_cast<unsigned char>(lower[0])) == info.letter) return info.variant;
  }
  TORCH_CHECK(false, "unknown attention variant '", name, "' (expected one of: ", known_variants(), ")");
}

Variant variant_from_letter(char letter) {
  for (const auto& info : kVariants)
    if (std::toupper(static_cast<unsigned char>(letter)) == info.letter) return info.variant;
  TORCH_CHECK(false, "unknown attention pattern letter '", std::string(1, letter), "' (expected one of: ",
              known_variants(), ")");
}

std::vector<Variant> parse_pattern(const std::string& pattern, size_t stages) {
  TORCH_CHECK(pattern.size() == stages, "attention pattern '", pattern, "' has ", pattern.size(),
              " letters, the model has ", stages, " stages");
  std::vector<Variant> out;
  for (char c : pattern) out.push_back(variant_from_letter(c));
  return out;
}

std::shared_ptr<AttentionBase> make_attention(Variant v, const AttentionOptions& options) {
  switch (v) {
    case Variant::softmax: return SoftmaxAttention(options).ptr();
    case Variant::linear: return LinearAttention(options).ptr();
    case Variant::focused: return FocusedAttention(options).ptr();
    case Variant::cosformer: return CosformerAttention(options).ptr();
    case Variant::rala: return RalaAttention(options).ptr();
  }
  TORCH_CHECK(false, "unknown attention variant id ", static_cast<int>(v));
}

}  // namespace rala
