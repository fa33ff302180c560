// Writes the seeds that only the toolkit's own writers make (see make_seeds.py, which runs this):
//   fuzz_make_seeds DIR   → DIR/own_tiny.pth (save_checkpoint: 'model', 'epoch', 'meta' and extra entries of every
//                           IValue kind a training checkpoint stores), DIR/own_tiny.safetensors (write_safetensors
//                           with __metadata__)
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "models/checkpoint.h"
#include "models/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  rala::StateDict state;
  state["patch_embed.proj.0.weight"] = torch::arange(6, torch::kFloat32).view({2, 3}) / 4;
  state["norm.num_batches_tracked"] = torch::tensor(int64_t{3});
  c10::impl::GenericDict optimizer(c10::StringType::get(), c10::AnyType::get());
  optimizer.insert("step", int64_t{7});
  optimizer.insert("exp_avg", torch::ones({3}, torch::kFloat64));
  rala::save_checkpoint(dir + "/own_tiny.pth", state, 2, R"({"preset": "ravlt_micro", "pattern": "RRSS"})",
                        {{"optimizer", optimizer},
                         {"rng_state", torch::arange(4, torch::kUInt8)},
                         {"lr", 0.001},
                         {"names", std::vector<std::string>{"a", "b"}}});
  rala::write_safetensors(dir + "/own_tiny.safetensors", state, {{"rala_meta", "{}"}, {"epoch", "2"}});
  return 0;
}
