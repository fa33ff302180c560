#pragma once
/// \file checkpoint.h
/// Checkpoints: our own training checkpoints, and import of official PyTorch checkpoints (qhfan/RALA RAVLT_T.pth …)
/// without Python. State dicts use the official key names (`patch_embed.proj.0.weight`, `layers.0.RoPE.angle`, …).
///
/// Usage:
///   rala::Ravlt model(rala::ravlt_t());
///   auto ckpt = rala::read_checkpoint("RAVLT_T.pth");                       // 'model', else 'model_ema', else bare
///   rala::load_state_dict(*model, ckpt.state);                              // strict; one error listing all problems
///
///   rala::save_checkpoint("run/last.pth", rala::state_dict(*model), epoch, R"({"lr": 0.001})",
///                         {{"optimizer", optimizer_state}});                // atomic; torch.load()-able
///   auto resumed = rala::read_checkpoint("run/last.pth");                   // .state, .epoch, .meta, .extra
///
/// Every error is a c10::Error (TORCH_CHECK) with one line naming the file (where there is one) and what was wrong.

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace rala {

/// Parameter and buffer tensors by their dotted state-dict key, ordered by key.
using StateDict = std::map<std::string, torch::Tensor>;

/// Writes our own checkpoint format: the torch::pickle_save zip (loadable with Python's torch.load) of a plain dict
///   {'model': {key: tensor}, 'epoch': int, 'meta': str, <extra names>: <extra values>}
/// `meta_json` is stored verbatim (by convention a JSON object: run options, git commit, metrics). `extra` holds
/// further entries (optimizer state, RNG state, … as IValues; names must differ from 'model', 'epoch', 'meta' and
/// from each other). Tensors are written as CPU tensors.
/// Atomic: the bytes go to "<path>.partial", which is fsync'ed and then renamed over `path`; on any failure the
/// partial file is removed and an existing file at `path` is left untouched.
void save_checkpoint(const std::string& path, const StateDict& model_state, int64_t epoch, const std::string& meta_json,
                     const std::vector<std::pair<std::string, torch::IValue>>& extra = {});

/// Writes `bytes` to `path` atomically: "<path>.partial", fsync, rename; on failure the partial file is removed and an
/// existing file at `path` is untouched. Throws one line naming the file.
void write_bytes_atomically(const std::string& path, const std::vector<char>& bytes);

/// All parameters and buffers of `module` (recursively, official key names): detached CPU clones, so that later
/// training steps do not change the returned tensors.
StateDict state_dict(const torch::nn::Module& module);

/// What read_checkpoint found.
struct Checkpoint {
  StateDict state;          ///< the model's tensors (dtypes as stored; contiguous CPU tensors owning their memory)
  int64_t epoch = -1;       ///< top-level integer 'epoch', or -1 when absent
  std::string meta;         ///< top-level string 'meta' (our format), or "" when absent
  std::string source_key;   ///< where `state` came from: "model", "model_ema" (or the key asked for), or "" (the
                            ///< top level itself)
  /// Our own format only: the `extra` entries given to save_checkpoint, as IValues, in file order. Empty for official
  /// checkpoints (their optimizer, lr_scheduler, scaler, args … entries are skipped).
  std::vector<std::pair<std::string, torch::IValue>> extra;
};

/// Reads a .safetensors file (recognised by its content: the whole file is the state dict; key must be "" or "model";
/// our own exports' __metadata__ "rala_meta" and "epoch" fill meta and epoch), our own format, or an official
/// torch.save checkpoint (RAVLT_T.pth …; zip format, pickle protocol 2): a zip
/// whose top level is a dict holding 'model' and/or 'model_ema' (each an OrderedDict of tensors), or is itself the
/// state dict; other entries (argparse Namespace, optimizer state, lr_scheduler, scaler, numbers) are skipped.
/// `key`: "model", "model_ema" (or any other top-level entry holding a state dict), or "" = auto ('model', else
/// 'model_ema', else the top level if it is a dict of tensors). Only the selected tensors' data is read from the zip.
/// Like torch.load, zip CRCs are not verified. Tensors of any storage type (float32/64/16, bfloat16, int64/32/16/8,
/// uint8, bool) are rebuilt with their storage offset and strides, then made contiguous.
/// Throws (one line naming the file) for: a missing or unreadable file, not a zip (e.g. legacy pre-1.6 torch.save
/// output or random bytes), a truncated or corrupt zip, a pickle this reader cannot parse (the opcode and offset are
/// named), a requested key that is absent (the keys present are listed), or a state dict holding a non-tensor value.
Checkpoint read_checkpoint(const std::string& path, const std::string& key = "");

/// Strict copy of `state` into the parameters and buffers of `module` (without autograd). Every module key must be in
/// `state` with the same shape, and `state` must hold no other key; otherwise nothing is copied and ONE error lists
/// all missing, unexpected and shape-mismatched keys (the latter with both shapes). Values are converted to the
/// module tensors' dtypes (and devices). `optional` = module keys that may be absent from `state` (e.g. the
/// deterministic `layers.i.RoPE.angle` buffers); absent ones keep their current values.
void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::set<std::string>& optional = {});

}  // namespace rala
