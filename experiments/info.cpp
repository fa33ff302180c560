#include "experiments/info.h"

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <iomanip>
#include <iostream>

#include "attention_variants/registry.h"
#include "experiments/device.h"
#include "experiments/runtime.h"
#include "experiments/train/distributed.h"
#include "models/presets.h"

namespace rala {

namespace {

std::string gmacs(int64_t macs) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(macs) / 1e9);
  return buf;
}

void print_model_row(std::ostream& out, AnyModel& m, int64_t h, int64_t w) {
  auto macs = m.macs(h, w);
  out << "  " << std::left << std::setw(12) << m.preset() << std::setw(8) << m.pattern() << std::right << std::setw(12)
      << m.parameters() << "  " << std::setw(9) << (std::to_string(h) + "x" + std::to_string(w)) << std::setw(10)
      << gmacs(macs.without_matmuls) << std::setw(10) << gmacs(macs.with_matmuls) << "\n";
}

void print_model_header(std::ostream& out) {
  out << "  " << std::left << std::setw(12) << "preset" << std::setw(8) << "pattern" << std::right << std::setw(12)
      << "params" << "  " << std::setw(9) << "input" << std::setw(10) << "GMACs-mm" << std::setw(10) << "GMACs+mm"
      << "   (mm = attention matmuls)\n";
}

}  // namespace

void print_info(std::ostream& out) {
  out << "RALA Lab " << tool_version() << " (commit " << git_commit() << ")\n";
  out << torch_build_description() << "\n";
  out << "devices  ";
  const auto devices = visible_devices();
  for (size_t i = 0; i < devices.size(); ++i) out << (i ? "; " : "") << devices[i];
  out << " (this run: " << device_description(run_device()) << ")\n";
  out << "multi-process training: "
      << (distributed_available() ? "c10d Gloo" + std::string(built_with_cuda() ? " (NCCL when built with it)" : "") +
                                        ", launched by torchrun, srun or mpirun"
                                  : distributed_unavailable_reason())
      << "\n";
  out << "threads  " << at::get_num_threads() << " intra-op\n";
  out << "BLAS     " << blas_info() << "\n";
  out << "attention variants (pattern letter, name, source; settings: key=default, accepted values):\n";
  for (const auto& v : kVariants) {
    out << "  " << v.letter << "  " << std::left << std::setw(16) << v.name << " " << v.title << "\n"
        << "      source: " << v.source << "\n";
    for (const auto& s : settings_schema(v.variant))
      out << "      " << std::setw(24) << (s.key + "=" + s.default_value) << " " << s.accepted() << ": " << s.help
          << "\n";
  }
}

void print_presets(std::ostream& out) {
  out << "model presets (default pattern; MACs per image):\n";
  print_model_header(out);
  torch::NoGradGuard no_grad;
  for (const auto& name : model_preset_names()) {
    AnyModel m(name);
    print_model_row(out, m, m.default_image_size(), m.default_image_size());
  }
}

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print versions, threads, BLAS, attention variants, presets (params, GMACs)");
  struct Args {
    std::string model, pattern;
    std::vector<std::string> settings;
    std::vector<int64_t> image_size;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--model", args->model, "Preset to describe (ravlt_t, ravlt_s, ravlt_b, ravlt_l, ravlt_micro, "
                                          "deit_tiny, deit_small; RAVLT_T etc. accepted)");
  cmd->add_option("--attn-pattern", args->pattern, "Attention variant per stage: letters (RRSS) or names, comma-separated");
  cmd->add_option("--attn-opt", args->settings, "Attention setting [variant.]key=value (repeatable), e.g. alpha=0 or rala.gate=0");
  cmd->add_option("--image-size", args->image_size, "Input H W (or one side)")->expected(1, 2);
  cmd->callback([args] {
    if (args->model.empty()) {
      TORCH_CHECK(args->pattern.empty() && args->settings.empty() && args->image_size.empty(),
                  "--attn-pattern, --attn-opt and --image-size need --model");
      print_info(std::cout);
      print_presets(std::cout);
      return;
    }
    torch::NoGradGuard no_grad;
    AnyModel m(args->model, args->pattern, args->settings);
    int64_t h = m.default_image_size(), w = h;
    if (!args->image_size.empty()) {
      h = args->image_size[0];
      w = args->image_size.size() > 1 ? args->image_size[1] : h;
    }
    TORCH_CHECK(h > 0 && w > 0, "--image-size must be positive, got ", h, "x", w);
    print_model_header(std::cout);
    print_model_row(std::cout, m, h, w);
    std::string opts;
    for (const auto& s : m.settings()) opts += " " + s;
    std::cout << "  attention: " << m.pattern() << (opts.empty() ? "" : " with" + opts) << "\n";
    std::cout << "  layers (name, variant, heads x head_dim, effective settings):\n";
    for (const auto& l : m.attention_layers())
      std::cout << "    " << std::left << std::setw(6) << l.name() << std::setw(17) << variant_info(l.variant).name
                << std::setw(8) << (std::to_string(l.heads) + "x" + std::to_string(l.head_dim))
                << (l.settings.empty() ? "(no settings)" : l.settings) << "\n";
  });
}

}  // namespace rala
