#pragma once
/// \file schedule.h
/// The per-iteration learning-rate schedule (linear warm-up, then cosine decay) and the exponential moving average of
/// weights used by `rala train`.
///
///   CosineSchedule lr(/*base_lr=*/1e-3, /*min_lr=*/1e-5, /*warmup_steps=*/100, /*total_steps=*/1000);
///   double now = lr(step);        // step is 0-based; the value used for that optimizer step
///
///   ModelEma ema(*ema_model, 0.999);
///   ema.update(*model);           // after each optimizer step

#include <torch/torch.h>

#include <cstdint>

namespace rala {

/// lr(s), s = 0-based optimizer step:
///   s <  W:  base · (s + 1) / W                                   (linear warm-up, reaches base at s = W − 1)
///   s >= W:  min + ½ (base − min) (1 + cos(π · (s − W) / (T − W)))   (cosine to min at s = T)
/// with W = warmup_steps, T = total_steps. Steps past T stay at min.
class CosineSchedule {
 public:
  /// Throws unless base_lr > 0, 0 <= min_lr <= base_lr, warmup_steps >= 0, total_steps > warmup_steps.
  CosineSchedule(double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps);
  double operator()(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }
  int64_t total_steps() const { return total_; }

 private:
  double base_, min_;
  int64_t warmup_, total_;
};

/// Exponential moving average of a model's weights, held in a second module of the same architecture:
///   ema_p ← decay · ema_p + (1 − decay) · p   for every floating parameter and floating buffer
///   ema_b ← b                                  for every other buffer
/// The EMA module starts as a copy of the model (call reset()). Parameters are matched by name; a mismatch throws.
class ModelEma {
 public:
  /// `ema_module` must have the same parameter and buffer names and shapes as the model passed to update()/reset().
  ModelEma(torch::nn::Module& ema_module, double decay);
  /// Copies every parameter and buffer of `model` into the EMA module.
  void reset(const torch::nn::Module& model);
  /// One EMA step towards `model`.
  void update(const torch::nn::Module& model);
  double decay() const { return decay_; }
  torch::nn::Module& module() { return ema_; }

 private:
  torch::nn::Module& ema_;
  double decay_;
};

}  // namespace rala
