#include "reports/gnuplot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rala::report {

namespace {

namespace fs = std::filesystem;

const char* kInstallHint = "install the Debian package gnuplot-nox (apt-get install gnuplot-nox)";

bool is_executable(const std::string& path) {
  return fs::is_regular_file(path) && ::access(path.c_str(), X_OK) == 0;
}

/// Runs argv in `cwd`, stdout and stderr captured together. Returns the exit status (-1 when it did not exit).
int run_process(const std::vector<std::string>& argv, const std::string& cwd, std::string* output) {
  std::vector<char*> args;  // built before fork: the child only calls async-signal-safe functions
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error(std::string("pipe failed: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) output->append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string header(const FigureSpec& s) {
  std::ostringstream h;
  h << "# " << s.title << "\n"
    << "# Written by `rala report`. Data: " << s.name << ".dat. Restyle freely, then re-render in this directory:\n"
    << "#   gnuplot " << s.name << ".gp                      (PNG)\n"
    << "#   gnuplot -e \"fmt='svg'\" " << s.name << ".gp       (fmt: png | svg | pdf)\n"
    << "if (!exists(\"fmt\")) fmt = \"png\"\n"
    << "if (!exists(\"out\")) out = \"" << s.name << ".\" . fmt\n"
    << "if (fmt eq \"png\") {\n"
    << "  set terminal pngcairo size " << s.width << "," << s.height
    << " enhanced font \"Sans,11\" background rgb \"white\"\n"
    << "} else {\n"
    << "  if (fmt eq \"svg\") {\n"
    << "    set terminal svg size " << s.width << "," << s.height
    << " enhanced font \"Sans,12\" background rgb \"white\"\n"
    << "  } else {\n"
    << "    set terminal pdfcairo size " << s.width / 100.0 * 0.75 << "in," << s.height / 100.0 * 0.75
    << "in enhanced font \"Sans,9\"\n"
    << "  }\n"
    << "}\n"
    << "set output out\n"
    << "datafile = \"" << s.name << ".dat\"\n"
    << "set encoding utf8\n\n";
  return h.str();
}

}  // namespace

std::string find_gnuplot() {
  if (const char* env = std::getenv("RALA_GNUPLOT"); env && *env) {
    if (!is_executable(env))
      throw std::runtime_error(std::string("gnuplot not found: RALA_GNUPLOT=") + env + " is not an executable file; " +
                               kInstallHint + " or point RALA_GNUPLOT at a gnuplot binary");
    return env;
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const std::string candidate = (fs::path(dir) / "gnuplot").string();
    if (is_executable(candidate)) return candidate;
  }
  throw std::runtime_error(std::string("gnuplot not found on PATH; `rala report` renders its figures with gnuplot: ") +
                           kInstallHint);
}

std::string gp_text(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\\\\\"; break;
      case '_': case '^': case '{': case '}': case '@': case '&': case '~':
        out += "\\\\";
        out += c;
        break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out + "\"";
}

void write_text_atomic(const std::string& path, const std::string& content) {
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(partial, ec);
      throw std::runtime_error("cannot write '" + path + "'");
    }
  }
  std::error_code ec;
  fs::rename(partial, path, ec);
  if (ec) {
    fs::remove(partial, ec);
    throw std::runtime_error("cannot rename '" + partial + "' to '" + path + "'");
  }
}

RenderedFigure render_figure(const FigureSpec& spec, const std::string& dir, const std::vector<std::string>& formats,
                             const std::string& gnuplot) {
  write_text_atomic((fs::path(dir) / (spec.name + ".dat")).string(), spec.data);
  write_text_atomic((fs::path(dir) / (spec.name + ".gp")).string(), header(spec) + spec.script + "\nunset output\n");
  RenderedFigure fig{spec.name, spec.title, spec.caption, {}};
  for (const auto& fmt : formats) {
    const std::string file = spec.name + "." + fmt;
    const fs::path final_path = fs::path(dir) / file;
    const fs::path partial = fs::path(dir) / (file + ".partial");
    std::error_code ec;
    fs::remove(partial, ec);
    std::string output;
    const int status = run_process(
        {gnuplot, "-e", "fmt='" + fmt + "'; out='" + file + ".partial'", spec.name + ".gp"}, dir, &output);
    const bool written = fs::exists(partial) && fs::file_size(partial) > 0;
    if (status != 0 || !written) {
      fs::remove(partial, ec);
      std::string first = output.substr(0, output.find_last_not_of("\n ") + 1);
      if (first.size() > 600) first = first.substr(first.size() - 600);
      throw std::runtime_error("gnuplot (" + gnuplot + ") failed on " + (fs::path(dir) / (spec.name + ".gp")).string() +
                               " for " + fmt + " (exit " + std::to_string(status) + "): " + first);
    }
    fs::rename(partial, final_path, ec);
    if (ec) throw std::runtime_error("cannot rename '" + partial.string() + "' to '" + final_path.string() + "'");
    fig.formats.push_back(fmt);
  }
  return fig;
}

}  // namespace rala::report
