#pragma once
/// \file train_loop.h
/// The training loop behind `rala train`: AdamW with decoupled weight decay (none on norms, biases, layer-scale gammas,
/// position embeddings), per-iteration cosine schedule with linear warm-up, label smoothing, drop path, EMA of the
/// weights, gradient clipping, light augmentation; per-epoch metrics (RUN_DIR/metrics.h5 in the /table convention +
/// metrics.csv) and an atomic checkpoint each epoch (RUN_DIR/checkpoint.pth) from which `resume` continues exactly.
///
///   TrainConfig c;
///   c.model = "ravlt_micro"; c.pattern = "RRSS"; c.epochs = 3; c.out = "runs/rrss";
///   TrainResult r = train(c);     // r.test_top1, r.checkpoint
///   c.resume = true; train(c);    // continues from runs/rrss/checkpoint.pth (no-op when already complete)

#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "analysis/results_table.h"

namespace rala {

class AnyModel;

/// Everything that defines a training run. Stored in the checkpoint's meta (JSON) so that a resumed run uses it.
struct TrainConfig {
  std::string model = "ravlt_micro";
  std::string pattern;                ///< "" = the preset's default
  std::vector<std::string> settings;  ///< attention key=value options
  std::string data = "fashion-mnist"; ///< "fashion-mnist" or a folder with train/ and val/ (or test/) class folders
  int64_t image_size = 0;             ///< 0 = 28 for Fashion-MNIST, the model's default for folders
  int64_t train_limit = -1;           ///< use the first N training images (-1 = all)
  int64_t test_limit = -1;            ///< use the first N test images (-1 = all)
  int64_t epochs = 10;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 256;
  double lr = 2e-3;
  double min_lr = 1e-5;
  double weight_decay = 0.05;
  double warmup_epochs = 1;
  double label_smoothing = 0.1;
  double drop_path = 0.0;
  double ema_decay = 0.0;  ///< 0 = no EMA
  double clip_grad = 0.0;  ///< max global gradient norm; 0 = no clipping
  bool augment = true;     ///< training augmentation (see LabeledSplit::batch)
  uint64_t seed = 0;
  std::string init_weights;  ///< "" = random init; else an own checkpoint whose weights the model starts from
                             ///< (e.g. the converted model of `rala distill`, fine-tuned end to end)
  std::string out;         ///< RUN_DIR
  // Not part of the stored config:
  bool resume = false;
  bool overwrite = false;
  bool quiet = false;
  std::string dist_backend = "auto";   ///< several processes: auto | gloo | nccl (distributed.h)
  int64_t dist_timeout = 600;          ///< several processes: seconds a collective may wait for the others
  int64_t stop_after_epochs = -1;      ///< testing: return after this many epochs of this invocation (an interrupt)
  int64_t inject_nonfinite_step = -1;  ///< testing: make the loss NaN at this global step
  /// testing: AdamW's eps (not stored in the checkpoint's config; give it again on --resume). A large eps makes the
  /// update linear in the gradient, so rounding differences of the gradient stay rounding-sized instead of being
  /// normalised by √v to ±lr steps (the data-parallel equivalence tests use it).
  double adam_eps = 1e-8;
  int64_t inject_nonfinite_rank = -1;  ///< testing: … on this rank only (-1: every rank)
  std::string inject_fault;            ///< testing: "exit:R:S" (rank R exits at global step S) or "hang:R:S" (stops)

  /// Throws one line naming the first impossible option.
  void validate() const;
  std::string to_json() const;
  /// Fills the stored fields from to_json() output (run-time flags keep their values).
  void from_json(const std::string& json);
};

/// What a run ended with (the last epoch's metrics).
struct TrainResult {
  int64_t epochs_done = 0;
  double train_loss = 0, train_top1 = 0, test_loss = 0, test_top1 = 0;
  double test_top1_ema = std::numeric_limits<double>::quiet_NaN();
  double images_per_s = 0;  ///< training throughput of the last epoch
  std::string checkpoint;   ///< RUN_DIR/checkpoint.pth
  std::string metrics;      ///< RUN_DIR/metrics.h5
};

/// The empty per-epoch metrics table: the columns (names, kinds, units, descriptions) of RUN_DIR/metrics.h5.
ResultsTable make_metrics_table();

/// Runs (or resumes) a training run; see the file comment. Errors (bad options, unreadable data, an existing run
/// without resume/overwrite, a missing or corrupt checkpoint on resume, a non-finite loss) throw one line; files
/// already in RUN_DIR stay as they were (a non-finite loss keeps the last good checkpoint).
///
/// Runs on run_device() (device.h). Started by a launcher (torchrun, srun, mpirun: see distributed.h) it trains
/// data-parallel: every rank draws the same seeded permutation and augmentation of each global batch of batch_size
/// images and takes rows rank, rank + world, …; the loss is Σ(per-image loss)/batch so that uneven shares stay exact;
/// gradients are summed over ranks (bucketed allreduce after backward) together with the loss and accuracy sums;
/// BatchNorm uses the statistics of the global batch (SyncBatchNorm); clipping, the optimizer, the EMA and the
/// non-finite stop then act on identical values on every rank. Weights (and the EMA's) are broadcast from rank 0 at
/// the start and after a resume; only rank 0 writes RUN_DIR, and only rank 0 reads its checkpoint (the bytes are
/// broadcast), so a checkpoint of N processes resumes on M. Drop-path masks are drawn per rank (seeded by seed, epoch
/// and rank at each epoch), so with drop path the run is not the single-process one.
TrainResult train(const TrainConfig& config);

/// Parameters of `module` split into {decay, no_decay}: no weight decay for biases, 1-D (or single non-singleton-dim)
/// tensors such as norm weights and layer-scale gammas, and position embeddings / class tokens.
std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> split_weight_decay(torch::nn::Module& module);
/// AdamW (decoupled weight decay) over `module`'s parameters in two groups: split_weight_decay's decay group with
/// `weight_decay`, the rest with none.
/// AdamW's eps is 1e-8 (PyTorch's default) unless a test asks otherwise.
std::unique_ptr<torch::optim::AdamW> make_adamw(torch::nn::Module& module, double lr, double weight_decay,
                                                double eps = 1e-8);
/// Names of the parameters that get no weight decay (same rule as split_weight_decay).
std::vector<std::string> no_weight_decay_names(torch::nn::Module& module);

/// A labelled image set for training and evaluation, in network input form on demand.
class LabeledSplit {
 public:
  /// `data`: "fashion-mnist" or a folder (train: DIR/train; test: DIR/val or DIR/test). `limit` < 0 = all.
  LabeledSplit(const std::string& data, bool train, int64_t image_size, int64_t limit);
  ~LabeledSplit();
  LabeledSplit(LabeledSplit&&) noexcept;
  int64_t size() const;
  int64_t image_size() const;
  const std::vector<std::string>& classes() const;
  /// Images (B, 3, S, S) float32 normalised, and labels (B,) int64, of the given indices; `augment` applies the
  /// training augmentation drawn from `gen` (random crop with padding + flip for Fashion-MNIST, random resized crop +
  /// flip for folders). With world > 1: only rows rank, rank + world, … of that batch, with exactly the augmentation
  /// they get in the whole batch (every random number of the whole batch is drawn; only this rank's images are
  /// decoded), and `gen` advanced as by the whole batch.
  std::pair<torch::Tensor, torch::Tensor> batch(const torch::Tensor& indices, bool augment, at::Generator gen,
                                                int64_t rank = 0, int64_t world = 1) const;
  std::string description() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
  int64_t image_size_ = 0;
};

class Distributed;

/// Top-1 accuracy (%) and mean cross-entropy of `model` (put in eval mode, no grad) on `split`, on the model's
/// device. With `dist`, each rank evaluates its contiguous block of the images and the sums are all-reduced.
std::pair<double, double> evaluate(AnyModel& model, const LabeledSplit& split, int64_t batch_size,
                                   Distributed* dist = nullptr);

}  // namespace rala
