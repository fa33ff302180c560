#include "experiments/info.h"

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iomanip>
#include <iostream>

#include "attention_variants/registry.h"
#include "experiments/runtime.h"

namespace rala {

void print_info(std::ostream& out) {
  out << "RALA Lab " << tool_version() << " (commit " << git_commit() << ")\n";
  out << "LibTorch " << torch_version() << ", device cpu" << (torch::cuda::is_available() ? " (cuda available)" : "")
      << "\n";
  out << "threads  " << at::get_num_threads() << " intra-op\n";
  out << "BLAS     " << blas_info() << "\n";
  out << "attention variants (pattern letter, name, source):\n";
  for (const auto& v : kVariants)
    out << "  " << v.letter << "  " << std::left << std::setw(10) << v.name << " " << v.title << "\n"
        << "              " << v.source << "\n";
}

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print versions, threads, BLAS and the registered attention variants");
  cmd->callback([] { print_info(std::cout); });
}

}  // namespace rala
