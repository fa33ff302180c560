#include "experiments/convert.h"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "models/checkpoint.h"
#include "models/safetensors.h"

namespace rala {

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string checkpoint, key, out;
    bool overwrite = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert", "Write a checkpoint as .safetensors or in the toolkit's own format (.pth)");
  cmd->add_option("--checkpoint", a->checkpoint, "Input: own checkpoint, official .pth or .safetensors")->required();
  cmd->add_option("--checkpoint-key", a->key, "Which state dict of a .pth: model | model_ema (default: model, else "
                                              "model_ema)");
  cmd->add_option("--out", a->out, "Output: NAME.safetensors or NAME.pth")->required();
  cmd->add_flag("--overwrite", a->overwrite, "Replace an existing output");
  cmd->callback([a] {
    const bool to_safetensors = ends_with(a->out, ".safetensors");
    TORCH_CHECK(to_safetensors || ends_with(a->out, ".pth") || ends_with(a->out, ".pt"), "--out '", a->out,
                "' must end in .safetensors or .pth (.pt)");
    TORCH_CHECK(a->overwrite || !std::filesystem::exists(a->out), "'", a->out,
                "' exists; pass --overwrite to replace it");
    const auto ck = read_checkpoint(a->checkpoint, a->key);
    if (to_safetensors) {
      std::map<std::string, std::string> metadata{{"format", "pt"}};
      if (!ck.meta.empty()) metadata["rala_meta"] = ck.meta;
      if (ck.epoch >= 0) metadata["epoch"] = std::to_string(ck.epoch);
      write_safetensors(a->out, ck.state, metadata);
    } else {
      save_checkpoint(a->out, ck.state, ck.epoch, ck.meta.empty() ? "{}" : ck.meta);
    }
    std::cout << "wrote " << ck.state.size() << " tensors from " << a->checkpoint
              << (ck.source_key.empty() ? "" : " [" + ck.source_key + "]") << " to " << a->out << "\n";
  });
}

}  // namespace rala
