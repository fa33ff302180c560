#include "experiments/train.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <iostream>
#include <memory>

#include "experiments/train/distributed.h"
#include "experiments/train/train_loop.h"

namespace rala {

void add_train_command(CLI::App& app) {
  auto c = std::make_shared<TrainConfig>();
  auto* cmd = app.add_subcommand("train", "Train a model (AdamW, cosine schedule, EMA) with per-epoch checkpoints");
  cmd->add_option("--model", c->model, "Preset: ravlt_micro ravlt_t … deit_tiny")->capture_default_str();
  cmd->add_option("--attn-pattern", c->pattern, "Attention variant per stage: letters (RRSS) or names, comma-separated");
  cmd->add_option("--attn-opt", c->settings, "Attention setting [variant.]key=value (repeatable), e.g. alpha=0 or rala.gate=0");
  cmd->add_option("--data", c->data, "fashion-mnist | synthetic | DIR with train/ and val/ (or test/) class folders")
      ->capture_default_str();
  cmd->add_option("--image-size", c->image_size, "Input side (0: 28 for Fashion-MNIST, else the model's)")
      ->capture_default_str();
  cmd->add_option("--train-limit", c->train_limit, "Train on the first N images (-1: all)")->capture_default_str();
  cmd->add_option("--test-limit", c->test_limit, "Evaluate on the first N test images (-1: all)")->capture_default_str();
  cmd->add_option("--epochs", c->epochs, "Epochs")->capture_default_str();
  cmd->add_option("--batch-size", c->batch_size, "Images per step")->capture_default_str();
  cmd->add_option("--lr", c->lr, "Peak learning rate (after warm-up)")->capture_default_str();
  cmd->add_option("--min-lr", c->min_lr, "Learning rate at the end of the cosine")->capture_default_str();
  cmd->add_option("--weight-decay", c->weight_decay, "AdamW decoupled weight decay (not on norms, biases, gammas)")
      ->capture_default_str();
  cmd->add_option("--warmup-epochs", c->warmup_epochs, "Linear warm-up length in epochs (fractions allowed)")
      ->capture_default_str();
  cmd->add_option("--label-smoothing", c->label_smoothing, "Label smoothing")->capture_default_str();
  cmd->add_option("--drop-path", c->drop_path, "Stochastic depth rate (ramped over blocks)")->capture_default_str();
  cmd->add_option("--ema-decay", c->ema_decay, "EMA of the weights per step (0: off), e.g. 0.999")
      ->capture_default_str();
  cmd->add_option("--clip-grad", c->clip_grad, "Max global gradient norm (0: off)")->capture_default_str();
  cmd->add_flag("!--no-augment", c->augment, "Train without augmentation");
  cmd->add_option("--seed", c->seed, "Seed (weights, data order, augmentation, drop path)")->capture_default_str();
  cmd->add_option("--init-weights", c->init_weights,
                  "Start from the weights of this own checkpoint (e.g. `rala distill` output) instead of a random init");
  cmd->add_option("--out", c->out, "Run directory (checkpoint.pth, metrics.h5, metrics.csv)")->required();
  cmd->add_flag("--resume", c->resume, "Continue the run in --out from its checkpoint (its configuration is used)");
  cmd->add_flag("--overwrite", c->overwrite, "Start again even if --out holds a run");
  cmd->add_flag("--quiet", c->quiet, "No progress output");
  cmd->add_option("--dist-backend", c->dist_backend,
                  "Under torchrun/srun/mpirun: auto (nccl for --device cuda when built with it, else gloo) | gloo | nccl")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}))
      ->capture_default_str();
  cmd->add_option("--dist-timeout", c->dist_timeout,
                  "Under torchrun/srun/mpirun: seconds to wait for the other processes (joining, each collective)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--stop-after-epochs", c->stop_after_epochs, "Testing: stop after N epochs of this invocation")
      ->group("");
  cmd->add_option("--inject-nonfinite-step", c->inject_nonfinite_step, "Testing: NaN loss at this step")->group("");
  cmd->add_option("--adam-eps", c->adam_eps, "Testing: AdamW's eps")->group("")->check(CLI::PositiveNumber);
  cmd->add_option("--inject-nonfinite-rank", c->inject_nonfinite_rank, "Testing: … on this rank only")->group("");
  cmd->add_option("--inject-fault", c->inject_fault, "Testing: exit:RANK:STEP or hang:RANK:STEP")->group("");
  auto config_json = std::make_shared<std::string>();
  cmd->add_option("--config-json", *config_json, "The stored training configuration as JSON (used by rala ablate)")
      ->group("");
  cmd->callback([c, config_json] {
    if (!config_json->empty()) c->from_json(*config_json);
    TORCH_CHECK(!(c->resume && c->overwrite), "--resume and --overwrite exclude each other");
    const TrainResult r = train(*c);
    if (Distributed* dist = Distributed::world(); dist != nullptr && !dist->is_main()) return;  // rank 0 reports
    std::printf("%s: epoch %lld, train loss %.4f, train top-1 %.2f%%, test top-1 %.2f%%", c->out.c_str(),
                static_cast<long long>(r.epochs_done), r.train_loss, r.train_top1, r.test_top1);
    if (!std::isnan(r.test_top1_ema)) std::printf(" (EMA %.2f%%)", r.test_top1_ema);
    std::printf(", %.0f images/s\n  checkpoint %s\n  metrics    %s\n", r.images_per_s, r.checkpoint.c_str(),
                r.metrics.c_str());
  });
}

}  // namespace rala
