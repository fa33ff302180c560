#pragma once
/// \file model_loading.h
/// Building a model from CLI flags and loading its weights: one place for every subcommand that needs a model.

#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "models/presets.h"

namespace rala {

/// The model flags shared by subcommands: --model, --attn-pattern, --attn-opt, --checkpoint, --checkpoint-key, --seed.
struct ModelFlags {
  std::string model = "ravlt_t";
  std::string pattern;                ///< "" = the checkpoint's (own format) or the preset's default
  std::vector<std::string> settings;  ///< attention key=value settings
  std::string checkpoint;             ///< "" = random weights
  std::string checkpoint_key;         ///< "", "model" or "model_ema"
  int64_t depth = 0;                  ///< DeiT blocks; 0 = the checkpoint's (blocks.<i>.*), else the preset's
  uint64_t seed = 0;

  /// Adds the flags to a subcommand (without --attn-pattern when the subcommand takes several patterns itself).
  void add_to(CLI::App& cmd, bool with_pattern = true);
  /// "random:seed=S" or the checkpoint path (+ key).
  std::string weights_description() const;
};

/// A model built from flags, with its weights: a checkpoint's pattern and settings (own format, from its meta) are used
/// unless the flags give them; the class count follows the checkpoint's `head.bias`, a DeiT's depth its `blocks.<i>.*`
/// (a --depth that differs is an error). Put in eval mode, on run_device() (device.h; model_device() tells where a
/// model lives, so callers move their inputs there).
struct LoadedModel {
  std::unique_ptr<AnyModel> model;
  std::vector<std::string> classes;  ///< class names from the checkpoint's meta, if any
};
LoadedModel load_model(const ModelFlags& flags);

/// The number of DeiT blocks a state dict holds (its `blocks.<i>.` keys, numbered 0 … n−1), 0 when it has none;
/// throws one line naming `source` when the numbering has gaps.
int64_t deit_depth_of(const std::map<std::string, torch::Tensor>& state, const std::string& source);

/// The 'meta' JSON of our own checkpoints: preset, attn_pattern, attn_settings, classes, tool_version, git_commit.
std::string model_meta_json(const AnyModel& model, const std::vector<std::string>& classes = {});

/// The device of a model's parameters (cpu for a model without any).
torch::Device model_device(const AnyModel& model);

}  // namespace rala
