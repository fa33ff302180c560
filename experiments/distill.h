#pragma once
/// \file distill.h
/// `rala distill`: converts a trained softmax model (an own checkpoint, e.g. from `rala train`) to Hedgehog linear
/// attention by attention transfer (lolcats' train_attention mode + distill_attention_xent_mse trainer):
///   1. the student = the teacher's architecture with the chosen softmax stages (S) replaced by Hedgehog (H), every
///      teacher weight copied (qkvo, lepe, proj and the rest of the network), the feature maps new (seeded init);
///   2. each converted layer runs in distillation mode: it computes the teacher's softmax map and output (no grad) and
///      its own normalised linear map and output on the SAME q, k, v, and passes the teacher's output on, so every
///      layer learns on teacher hidden states; per layer loss = xent(teacher rows, log clamp_min(A_pred, 1e-12)) +
///      mse_weight · MSE(per-head outputs), averaged over the converted layers (lolcats: 1 : 1000);
///   3. AdamW on the feature-map parameters only (every other parameter and buffer stays bit-equal; the model runs in
///      eval mode, so BatchNorm statistics do not move), cosine schedule;
///   4. optionally `finetune_epochs` of end-to-end training of the converted model (all parameters) with the normal
///      training loss, through the training loop of `rala train` (run directory OUT/finetune).
/// Outputs (each written atomically: `.partial` + rename): OUT/checkpoint.pth (the converted model after mimicry, in
/// our own format with the pattern and settings in its meta, so `rala rank` / `rala predict --checkpoint` load it),
/// OUT/metrics.h5 (+ metrics.csv) in the /table convention: per epoch the mimicry xent, mse and total per layer on the
/// held-out split, their training means, and teacher/student logit agreement.
///
///   DistillConfig c;
///   c.checkpoint = "runs/ssss/checkpoint.pth"; c.out = "runs/ssss-hedgehog";
///   DistillResult r = distill(c);          // r.layers: "2.0", ...; r.first / r.last: epoch-0 and final rows

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "attention_variants/hedgehog.h"

namespace CLI {
class App;
}

namespace rala {

class AnyModel;

struct DistillConfig {
  std::string checkpoint;             ///< the teacher: an own checkpoint (`rala train` writes them)
  std::string checkpoint_key;         ///< "" (auto), "model" or "model_ema"
  std::string model;                  ///< "" = the teacher's preset (from its meta)
  std::string pattern;                ///< "" = every softmax stage of the teacher becomes hedgehog
  std::vector<std::string> settings;  ///< hedgehog settings, e.g. feature_dim=8, feature_init=identity
  std::string data;                   ///< "" = the teacher's training data (meta), else fashion-mnist; a folder; synthetic
  int64_t image_size = 0;             ///< 0 = the teacher's training size (meta), else 28 (Fashion-MNIST) / the model's
  int64_t train_limit = -1;           ///< first N training images (-1 = all; synthetic: 1024)
  int64_t test_limit = -1;            ///< first N held-out images (-1 = all; synthetic: 256)
  int64_t epochs = 2;                 ///< lolcats: 2
  int64_t batch_size = 64;
  int64_t eval_batch_size = 256;
  double lr = 1e-2;                   ///< lolcats: 1e-2
  double min_lr = 1e-5;               ///< end of the cosine (lolcats' plateau schedule floors at 1e-5)
  double weight_decay = 0.0;          ///< lolcats: 0
  double warmup_epochs = 0;
  double xent_weight = 1.0;           ///< lolcats: xent_factor 1
  double mse_weight = 1000.0;         ///< lolcats: mse_factor 1000
  int64_t finetune_epochs = 0;        ///< end-to-end epochs after the mimicry (0 = none)
  double finetune_lr = 1e-4;          ///< lolcats' fine-tuning lr
  uint64_t seed = 0;                  ///< feature-map init and data order
  std::string out;                    ///< OUT directory
  bool overwrite = false;
  bool quiet = false;

  /// Throws one line naming the first impossible option.
  void validate() const;
  std::string to_json() const;
};

/// One row of the metrics table (eval values on the held-out split; NaN where not measured).
struct DistillRow {
  std::string phase;  ///< "distill" (epoch 0 = before training) or "finetune"
  int64_t epoch = 0;
  double train_loss = std::numeric_limits<double>::quiet_NaN();
  double xent = std::numeric_limits<double>::quiet_NaN(), mse = xent, loss = xent;  ///< means over the layers
  std::vector<double> layer_xent, layer_mse, layer_loss;
  double agreement = xent;    ///< % of held-out images where student and teacher top-1 agree
  double logit_mse = xent;    ///< mean (student − teacher logit)²
  double logit_kl = xent;     ///< mean KL(teacher ‖ student) of the class probabilities
  double student_top1 = xent, teacher_top1 = xent;  ///< % (NaN for unlabelled data)
};

struct DistillResult {
  std::string teacher_pattern, pattern;  ///< "RRSS" → "RRHH"
  std::vector<std::string> layers;       ///< the distilled layers, "<stage>.<block>"
  std::vector<DistillRow> rows;          ///< every row of the metrics table, in order
  std::string checkpoint, metrics, finetune_dir;  ///< finetune_dir "" when no fine-tuning ran
};

/// Runs the conversion (see the file comment). Errors throw one line: a teacher without softmax layers, a pattern
/// that changes anything but S → H, an OUT that holds a run (without overwrite), unreadable data, a non-finite loss.
DistillResult distill(const DistillConfig& config);

/// The student's pattern: `requested` "" → every S of `teacher` becomes H; otherwise `requested` (letters or names)
/// must equal `teacher` except for S → H stages, and convert at least one. Throws one line otherwise.
std::string converted_pattern(const std::string& teacher, const std::string& requested);

/// The student's settings: the teacher's settings that still reach a stage of `pattern`, then hedgehog.gate / rope /
/// lepe = the teacher softmax layers' effective values (so the converted layers keep the teacher's layout), then `user`.
std::vector<std::string> converted_settings(const AnyModel& teacher, const std::string& pattern,
                                            const std::vector<std::string>& user);

/// The combined objective over layers: mean over layers of xent_weight · xent + mse_weight · mse.
torch::Tensor distillation_objective(const std::vector<MimicryLoss>& layers, double xent_weight, double mse_weight);

/// Registers the `distill` subcommand on `app`.
void add_distill_command(CLI::App& app);

}  // namespace rala
