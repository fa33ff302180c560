#include "experiments/progress.h"

#include <unistd.h>

#include <cstdio>

namespace rala {

Progress::Progress(std::string label, int64_t total, std::string unit, bool quiet)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

double Progress::rate() const {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return s > 0 ? static_cast<double>(done_) / s : 0.0;
}

void Progress::update(int64_t done, const std::string& extra) {
  done_ = done;
  if (quiet_) return;
  const double r = rate();
  const double eta = r > 0 ? static_cast<double>(total_ - done_) / r : 0.0;
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  if (tty_) {
    const int width = 30, filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld %s  %.1f %s/s  ETA %.0fs %s", label_.c_str(), filled,
                 "##############################", width - filled, "", static_cast<long long>(done_),
                 static_cast<long long>(total_), unit_.c_str(), r, unit_.c_str(), eta, extra.c_str());
    std::fflush(stderr);
  } else {
    const int64_t decile = static_cast<int64_t>(frac * 10);
    if (decile != last_logged_decile_) {
      last_logged_decile_ = decile;
      std::fprintf(stderr, "%s: %lld/%lld %s, %.1f %s/s, ETA %.0fs %s\n", label_.c_str(),
                   static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(), r, unit_.c_str(), eta,
                   extra.c_str());
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!quiet_ && tty_) std::fprintf(stderr, "\n");
}

}  // namespace rala
