#include "attention_variants/settings.h"
#include "attention_variants/text.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace rala {

namespace {

/// Shortest decimal text that reads back as the same double.
std::string shortest(double v) {
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string bound_text(double v) { return std::isinf(v) ? std::string() : shortest(v); }

bool parse_flag(const std::string& value, bool* out) {
  if (value == "1" || value == "true" || value == "on" || value == "yes") return *out = true, true;
  if (value == "0" || value == "false" || value == "off" || value == "no") return *out = false, true;
  return false;
}

bool parse_integer(const std::string& value, int64_t* out) {
  if (value.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(value.c_str(), &end, 10);
  if (errno != 0 || end != value.c_str() + value.size()) return false;
  *out = v;
  return true;
}

bool parse_real(const std::string& value, double* out) {
  if (value.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(value.c_str(), &end);
  if (end != value.c_str() + value.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

}  // namespace

std::string SettingSpec::accepted() const {
  switch (kind) {
    case Kind::flag: return "a boolean (1/0, true/false, on/off)";
    case Kind::choice: {
      std::string s;
      for (const auto& c : choices) s += (s.empty() ? "" : ", ") + c;
      return "one of: " + s;
    }
    case Kind::integer:
    case Kind::real: {
      std::string s = std::string(odd ? "an odd " : "") + (kind == Kind::integer ? (odd ? "integer" : "an integer")
                                                                                 : "a finite number");
      const auto lo = bound_text(min), hi = bound_text(max);
      if (!lo.empty() && !hi.empty()) return s + " in [" + lo + ", " + hi + "]";
      if (!lo.empty()) return s + " >= " + lo;
      if (!hi.empty()) return s + " <= " + hi;
      return s;
    }
  }
  return "?";
}

SettingSpec flag_setting(std::string key, bool default_value, std::string help) {
  SettingSpec s;
  s.key = std::move(key);
  s.kind = SettingSpec::Kind::flag;
  s.default_value = default_value ? "1" : "0";
  s.help = std::move(help);
  return s;
}

SettingSpec integer_setting(std::string key, int64_t default_value, int64_t min, int64_t max, std::string help,
                            bool odd) {
  SettingSpec s;
  s.key = std::move(key);
  s.kind = SettingSpec::Kind::integer;
  s.default_value = std::to_string(default_value);
  s.help = std::move(help);
  s.min = static_cast<double>(min);
  s.max = static_cast<double>(max);
  s.odd = odd;
  return s;
}

SettingSpec real_setting(std::string key, double default_value, double min, double max, std::string help) {
  SettingSpec s;
  s.key = std::move(key);
  s.kind = SettingSpec::Kind::real;
  s.default_value = shortest(default_value);
  s.help = std::move(help);
  s.min = min;
  s.max = max;
  return s;
}

SettingSpec choice_setting(std::string key, std::string default_value, std::vector<std::string> choices,
                           std::string help) {
  SettingSpec s;
  s.key = std::move(key);
  s.kind = SettingSpec::Kind::choice;
  s.default_value = std::move(default_value);
  s.help = std::move(help);
  s.choices = std::move(choices);
  return s;
}

SettingPair split_setting(const std::string& text) {
  const auto eq = text.find('=');
  TORCH_CHECK(eq != std::string::npos && eq > 0, "attention setting '", one_line(text), "' must have the form key=value");
  return {text.substr(0, eq), text.substr(eq + 1)};
}

std::string schema_keys(const SettingsSchema& schema) {
  std::string s;
  for (const auto& spec : schema) s += (s.empty() ? "" : ", ") + spec.key;
  return s.empty() ? "none" : s;
}

Settings::Settings(std::string variant, const SettingsSchema* schema) : variant_(std::move(variant)), schema_(schema) {
  values_.reserve(schema_->size());
  for (const auto& spec : *schema_) values_.push_back(spec.default_value);
}

bool Settings::has(const std::string& key) const {
  for (const auto& spec : *schema_)
    if (spec.key == key) return true;
  return false;
}

void Settings::set(const std::string& key, const std::string& value) {
  size_t i = 0;
  while (i < schema_->size() && (*schema_)[i].key != key) ++i;
  TORCH_CHECK(i < schema_->size(), "unknown setting '", one_line(key), "' for attention variant ", variant_, " (", variant_,
              " has: ", schema_keys(*schema_), ")");
  const auto& spec = (*schema_)[i];
  auto bad = [&] {
    TORCH_CHECK(false, "setting '", one_line(key), "' of attention variant ", variant_, " expects ", spec.accepted(),
                ", got '", one_line(value), "'");
  };
  switch (spec.kind) {
    case SettingSpec::Kind::flag: {
      bool b = false;
      if (!parse_flag(value, &b)) bad();
      values_[i] = b ? "1" : "0";
      break;
    }
    case SettingSpec::Kind::integer: {
      int64_t v = 0;
      if (!parse_integer(value, &v)) bad();
      const auto d = static_cast<double>(v);
      if (d < spec.min || d > spec.max || (spec.odd && v % 2 == 0)) bad();
      values_[i] = std::to_string(v);
      break;
    }
    case SettingSpec::Kind::real: {
      double v = 0;
      if (!parse_real(value, &v) || v < spec.min || v > spec.max) bad();
      values_[i] = shortest(v);
      break;
    }
    case SettingSpec::Kind::choice: {
      bool ok = false;
      for (const auto& c : spec.choices) ok = ok || c == value;
      if (!ok) bad();
      values_[i] = value;
      break;
    }
  }
}

void Settings::apply(const std::vector<SettingPair>& pairs) {
  for (const auto& p : pairs) set(p.first, p.second);
}

size_t Settings::index(const std::string& key, SettingSpec::Kind kind) const {
  for (size_t i = 0; i < schema_->size(); ++i)
    if ((*schema_)[i].key == key) {
      TORCH_CHECK((*schema_)[i].kind == kind, "internal: setting '", key, "' of ", variant_, " read as the wrong kind");
      return i;
    }
  TORCH_CHECK(false, "internal: attention variant ", variant_, " has no setting '", key, "'");
}

bool Settings::flag(const std::string& key) const { return values_[index(key, SettingSpec::Kind::flag)] == "1"; }

int64_t Settings::integer(const std::string& key) const {
  return std::strtoll(values_[index(key, SettingSpec::Kind::integer)].c_str(), nullptr, 10);
}

double Settings::real(const std::string& key) const {
  return std::strtod(values_[index(key, SettingSpec::Kind::real)].c_str(), nullptr);
}

const std::string& Settings::choice(const std::string& key) const {
  return values_[index(key, SettingSpec::Kind::choice)];
}

const std::string& Settings::text(const std::string& key) const {
  for (size_t i = 0; i < schema_->size(); ++i)
    if ((*schema_)[i].key == key) return values_[i];
  TORCH_CHECK(false, "internal: attention variant ", variant_, " has no setting '", key, "'");
}

std::string Settings::describe() const {
  std::string s;
  for (size_t i = 0; i < values_.size(); ++i) s += (i ? " " : "") + (*schema_)[i].key + "=" + values_[i];
  return s;
}

std::vector<SettingPair> Settings::values() const {
  std::vector<SettingPair> out;
  for (size_t i = 0; i < values_.size(); ++i) out.emplace_back((*schema_)[i].key, values_[i]);
  return out;
}

}  // namespace rala
