#pragma once
/// \file fuzz_util.h
/// Shared by the libFuzzer targets of fuzz/: scratch files for readers that take a path, and the rule every reader
/// keeps on hostile input — reject with one line (a c10::Error or std::exception whose message has no line break),
/// never crash, hang, leak or allocate beyond what the input's size allows (the sanitizers and libFuzzer's
/// -malloc_limit_mb / -rss_limit_mb / -timeout enforce those).

#include <c10/util/Exception.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

namespace rala::fuzz {

/// A directory of this process's own under $TMPDIR (else /tmp), removed at exit. (Held by a pointer that is never
/// freed, so that it is still there when the exit handler runs.)
inline const std::string& scratch_dir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(tmp && *tmp ? tmp : "/tmp") + "/rala-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return *dir;
}

/// Writes `size` bytes to scratch_dir()/name (replacing it) and returns the path.
inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write scratch file %s\n", path.c_str());
    std::abort();
  }
  return path;
}

/// A finding: prints what was wrong and aborts (libFuzzer saves the input as a crash).
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what.c_str());
  std::abort();
}

/// Aborts when a rejection message is empty or spans more than one line. With RALA_FUZZ_VERBOSE set, prints it.
inline void check_one_line(const std::string& message) {
  static const bool verbose = std::getenv("RALA_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "rejected: %s\n", message.c_str());
  if (message.empty()) finding("a reader rejected its input with an empty message");
  if (message.find('\n') != std::string::npos || message.find('\r') != std::string::npos)
    finding("a reader rejected its input with a message of more than one line:\n" + message);
}

/// Runs `f` (a reader on hostile bytes): success or a one-line exception; anything else is a finding.
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    check_one_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    check_one_line(e.what());
  }
}

}  // namespace rala::fuzz
