#pragma once
/// \file progress.h
/// A progress line for long work: a bar with rate and ETA redrawn in place on a terminal, plain log lines (about every
/// 10 %) when stderr is not one, nothing with quiet.

#include <chrono>
#include <string>

namespace rala {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "images", bool quiet = false);
  /// Marks `done` units finished; `extra` is appended (e.g. "loss 0.41").
  void update(int64_t done, const std::string& extra = "");
  /// Ends the line.
  void finish();
  double rate() const;  ///< units per second so far

 private:
  std::string label_, unit_;
  int64_t total_, done_ = 0, last_logged_decile_ = -1;
  bool quiet_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace rala
