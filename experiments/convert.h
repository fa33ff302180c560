#pragma once
/// \file convert.h
/// `rala convert`: a checkpoint in any format the toolkit reads (our own, an official torch.save .pth, a .safetensors)
/// written as .safetensors (the model's state dict; our meta and epoch in __metadata__ as "rala_meta" and "epoch") or
/// in our own format (.pth). Atomic; the output is refused if it exists unless --overwrite.
///
///   rala convert --checkpoint runs/rrss/checkpoint.pth --out rrss.safetensors
///   rala convert --checkpoint RAVLT_T.pth --checkpoint-key model_ema --out ravlt_t_ema.safetensors

namespace CLI {
class App;
}

namespace rala {

/// Registers the `convert` subcommand on app.
void add_convert_command(CLI::App& app);

}  // namespace rala
