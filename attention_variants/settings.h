#pragma once
/// \file settings.h
/// Settings a variant owns: a validated key/value table per variant. Each variant declares its schema (key, kind,
/// default, accepted values, one line of help); a layer's effective settings are the schema's defaults with the user's
/// `key=value` strings applied, every value checked against the schema. Defaults are the configuration of the variant's
/// golden file (its official configuration).
///
/// Usage:
///   static const rala::SettingsSchema schema = {
///       rala::flag_setting("alpha", true, "α token re-weighting of the keys"),
///       rala::integer_setting("chunk", 64, 1, 1 << 20, "tokens per diagonal block")};
///   rala::Settings s("rala", schema);          // the defaults
///   s.set("alpha", "0");                       // validated; throws one line on a bad key or value
///   bool alpha = s.flag("alpha");

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace rala {

/// One setting of a variant.
struct SettingSpec {
  enum class Kind { flag, integer, real, choice };
  std::string key;
  Kind kind = Kind::flag;
  std::string default_value;         ///< canonical text ("1", "64", "1e-06", "elu")
  std::string help;                  ///< one line
  std::vector<std::string> choices;  ///< Kind::choice: the accepted values
  double min = -std::numeric_limits<double>::infinity();  ///< integer / real: inclusive bounds
  double max = std::numeric_limits<double>::infinity();
  bool odd = false;  ///< integer: must be odd (kernel sizes)
  /// "bool", "int >= 1", "odd int >= 1", "real > 0", "elu|1+elu".
  std::string accepted() const;
};

using SettingsSchema = std::vector<SettingSpec>;

SettingSpec flag_setting(std::string key, bool default_value, std::string help);
SettingSpec integer_setting(std::string key, int64_t default_value, int64_t min, int64_t max, std::string help,
                            bool odd = false);
SettingSpec real_setting(std::string key, double default_value, double min, double max, std::string help);
SettingSpec choice_setting(std::string key, std::string default_value, std::vector<std::string> choices,
                           std::string help);

/// A `key=value` pair as given on a command line or in a grid.
using SettingPair = std::pair<std::string, std::string>;
/// Splits "key=value" (or "scope.key=value", scope kept in the key); throws one line if there is no '=' or no key.
SettingPair split_setting(const std::string& text);

/// The effective settings of one layer of one variant: every key of its schema with a valid value.
class Settings {
 public:
  /// The schema's defaults. `variant` names the variant in error messages.
  Settings(std::string variant, const SettingsSchema* schema);
  /// Sets one value; throws one line naming the key, the variant and what is accepted.
  void set(const std::string& key, const std::string& value);
  /// Applies every pair in order.
  void apply(const std::vector<SettingPair>& pairs);
  /// Whether the schema has `key`.
  bool has(const std::string& key) const;
  bool flag(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  double real(const std::string& key) const;
  const std::string& choice(const std::string& key) const;
  /// The canonical text of a value.
  const std::string& text(const std::string& key) const;
  /// "alpha=1 gate=1 rope=1 lepe=1" (schema order); "" for a variant without settings.
  std::string describe() const;
  /// (key, canonical value) in schema order.
  std::vector<SettingPair> values() const;
  const std::string& variant() const { return variant_; }
  const SettingsSchema& schema() const { return *schema_; }

 private:
  size_t index(const std::string& key, SettingSpec::Kind kind) const;
  std::string variant_;
  const SettingsSchema* schema_;
  std::vector<std::string> values_;
};

/// The keys of a schema, comma-separated ("alpha, gate, rope, lepe"), or "none".
std::string schema_keys(const SettingsSchema& schema);

}  // namespace rala
