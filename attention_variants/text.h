#pragma once
/// \file text.h
/// Text from files and command lines quoted into one-line error messages. Every reader rejects bad input with ONE line;
/// names, keys and values it echoes back come from the input and may hold line breaks or other control characters.
///
///   TORCH_CHECK(ok, "unknown key '", rala::one_line(key), "'");      // "unknown key 'a\nb'" stays on one line
///
/// Lives here, in the base library every other folder includes, so that each reader's message funnel uses the same one.

#include <cstdio>
#include <string>
#include <string_view>

namespace rala {

/// `text` with every control character (bytes 0x00–0x1f and 0x7f) written as an escape: \n, \r, \t, or \xNN; a
/// backslash is left as it is. UTF-8 text passes unchanged.
inline std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) {
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

}  // namespace rala
