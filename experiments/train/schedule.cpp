#include "experiments/train/schedule.h"

#include <cmath>

namespace rala {

CosineSchedule::CosineSchedule(double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps)
    : base_(base_lr), min_(min_lr), warmup_(warmup_steps), total_(total_steps) {
  TORCH_CHECK(base_lr > 0, "learning rate must be > 0, got ", base_lr);
  TORCH_CHECK(min_lr >= 0 && min_lr <= base_lr, "minimum learning rate must be in [0, lr = ", base_lr, "], got ",
              min_lr);
  TORCH_CHECK(warmup_steps >= 0, "warm-up steps must be >= 0, got ", warmup_steps);
  TORCH_CHECK(total_steps > warmup_steps, "total steps (", total_steps, ") must exceed the warm-up steps (",
              warmup_steps, "): fewer warm-up epochs than epochs are needed");
}

double CosineSchedule::operator()(int64_t step) const {
  if (step < warmup_) return base_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (step >= total_) return min_;
  const double t = static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
  return min_ + 0.5 * (base_ - min_) * (1.0 + std::cos(M_PI * t));
}

namespace {

template <typename F>
void for_each_pair(torch::nn::Module& ema, const torch::nn::Module& model, F&& f) {
  auto ema_params = ema.named_parameters(true);
  auto ema_buffers = ema.named_buffers(true);
  auto params = model.named_parameters(true);
  auto buffers = model.named_buffers(true);
  TORCH_CHECK(ema_params.size() == params.size() && ema_buffers.size() == buffers.size(),
              "EMA module has ", ema_params.size(), " parameters and ", ema_buffers.size(), " buffers, the model ",
              params.size(), " and ", buffers.size());
  for (const auto& p : params) {
    auto* e = ema_params.find(p.key());
    TORCH_CHECK(e && e->sizes() == p.value().sizes(), "EMA module lacks parameter '", p.key(), "' of shape ",
                p.value().sizes());
    f(*e, p.value(), true);
  }
  for (const auto& b : buffers) {
    auto* e = ema_buffers.find(b.key());
    TORCH_CHECK(e && e->sizes() == b.value().sizes(), "EMA module lacks buffer '", b.key(), "' of shape ",
                b.value().sizes());
    f(*e, b.value(), false);
  }
}

}  // namespace

ModelEma::ModelEma(torch::nn::Module& ema_module, double decay) : ema_(ema_module), decay_(decay) {
  TORCH_CHECK(decay >= 0 && decay < 1, "EMA decay must be in [0, 1), got ", decay);
}

void ModelEma::reset(const torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for_each_pair(ema_, model, [](torch::Tensor& e, const torch::Tensor& m, bool) { e.copy_(m); });
}

void ModelEma::update(const torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  const double d = decay_;
  for_each_pair(ema_, model, [d](torch::Tensor& e, const torch::Tensor& m, bool) {
    if (e.is_floating_point())
      e.mul_(d).add_(m.detach(), 1.0 - d);
    else
      e.copy_(m);
  });
}

}  // namespace rala
