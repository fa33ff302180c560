#include "attention_variants/batch_norm.h"

namespace rala {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

/// Per-channel sums over (B, H, W) of a (B, C, H, W) tensor, accumulated in float64: (C,).
torch::Tensor channel_sum(const torch::Tensor& t) { return t.sum({0, 2, 3}, false, torch::kFloat64); }

torch::Tensor per_channel(const torch::Tensor& v) { return v.view({1, -1, 1, 1}); }

/// SyncBatchNorm's forward and backward (see batch_norm.h for the formulas).
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, torch::Tensor running_mean, torch::Tensor running_var,
                               double momentum, double eps, BatchNormSync* sync) {
    const int64_t C = x.size(1);
    const auto f64 = x.options().dtype(torch::kFloat64);
    // Shift: the running mean (the same on every rank), so that x − K is small and the one-pass variance is exact.
    const torch::Tensor shift = running_mean.defined() ? running_mean.detach().to(x.scalar_type())
                                                       : torch::zeros({C}, x.options());
    auto stats = torch::zeros({2 * C + 1}, f64);  // [S1 (C) | S2 (C) | n]
    if (sync->contributes) {
      const auto centred = x - per_channel(shift);  // (B, C, H, W)
      stats.narrow(0, 0, C).copy_(channel_sum(centred));
      stats.narrow(0, C, C).copy_(channel_sum(centred * centred));
      stats.narrow(0, 2 * C, 1).fill_(static_cast<double>(x.numel() / C));
    }
    sync->all_sum(stats);
    const double n = stats[2 * C].item<double>();
    TORCH_CHECK(n > 1, "BatchNorm2d: expected more than 1 value per channel when training across processes, got ", n);
    const auto m1 = stats.narrow(0, 0, C) / n;  // E[x − K]
    const auto mean = shift.to(torch::kFloat64) + m1;
    const auto var = (stats.narrow(0, C, C) / n - m1 * m1).clamp_min(0);  // biased
    const auto invstd = (var + eps).rsqrt();
    if (running_mean.defined()) {
      torch::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1 - momentum).add_((var * (n / (n - 1))).to(running_var.scalar_type()), momentum);
    }
    auto scale = invstd;  // γ/σ and β − mean·γ/σ, per channel, in float64, then the input's dtype
    if (weight.defined()) scale = scale * weight.to(torch::kFloat64);
    auto offset = -mean * scale;
    if (bias.defined()) offset = offset + bias.to(torch::kFloat64);
    auto y = x * per_channel(scale.to(x.scalar_type())) + per_channel(offset.to(x.scalar_type()));
    ctx->save_for_backward({x, weight, mean.to(x.scalar_type()), invstd});
    ctx->saved_data["n"] = n;
    ctx->saved_data["contributes"] = sync->contributes;  // a placeholder's rows are not part of the batch
    ctx->saved_data["sync"] = reinterpret_cast<int64_t>(sync);  // outlives the step: owned by the training loop
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& weight = saved[1];
    const auto& mean = saved[2];
    const auto& invstd = saved[3];  // float64
    const double n = ctx->saved_data["n"].toDouble();
    auto* sync = reinterpret_cast<BatchNormSync*>(ctx->saved_data["sync"].toInt());
    const auto dy = grad_outputs[0];
    const int64_t C = x.size(1);
    const auto xmu = x - per_channel(mean);                  // (B, C, H, W)
    auto sums = torch::empty({2 * C}, x.options().dtype(torch::kFloat64));
    sums.narrow(0, 0, C).copy_(channel_sum(dy));             // Σ dy (this rank)
    sums.narrow(0, C, C).copy_(channel_sum(dy * xmu));       // Σ dy·(x − mean) (this rank)
    const auto grad_bias = sums.narrow(0, 0, C).to(x.scalar_type());
    const auto grad_weight = (sums.narrow(0, C, C) * invstd).to(x.scalar_type());
    sync->all_sum(sums);  // every rank, placeholder or not: the collectives must match
    if (!ctx->saved_data["contributes"].toBool()) {
      // A placeholder's rows are not in the batch: the global Σ dy terms must not flow into them (they would reach
      // the weights in front of this BatchNorm through the placeholder's backward). Its dy is zero, so its γ/β sums
      // are zero too.
      return {torch::zeros_like(x), weight.defined() ? grad_weight : torch::Tensor(),
              weight.defined() ? grad_bias : torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
              torch::Tensor(), torch::Tensor()};
    }
    const auto mean_dy = sums.narrow(0, 0, C) / n;
    const auto mean_dy_xmu = sums.narrow(0, C, C) / n;
    auto gain = invstd;
    if (weight.defined()) gain = gain * weight.to(torch::kFloat64);
    // dx = (dy − mean(dy) − (x − mean)·σ⁻²·mean(dy·(x − mean)))·γ/σ
    const auto dx = (dy - per_channel(mean_dy.to(x.scalar_type())) -
                     xmu * per_channel((invstd * invstd * mean_dy_xmu).to(x.scalar_type()))) *
                    per_channel(gain.to(x.scalar_type()));
    return {dx, weight.defined() ? grad_weight : torch::Tensor(), weight.defined() ? grad_bias : torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

BatchNorm2dImpl::BatchNorm2dImpl(const torch::nn::BatchNormOptions& options_) : options(options_) { reset(); }

void BatchNorm2dImpl::reset() {  // torch::nn::BatchNormImplBase::reset, in its order
  const int64_t C = options.num_features();
  if (options.affine()) {
    weight = register_parameter("weight", torch::empty({C}));
    bias = register_parameter("bias", torch::empty({C}));
  } else {
    weight = register_parameter("weight", torch::Tensor(), /*requires_grad=*/false);
    bias = register_parameter("bias", torch::Tensor(), /*requires_grad=*/false);
  }
  if (options.track_running_stats()) {
    running_mean = register_buffer("running_mean", torch::zeros({C}));
    running_var = register_buffer("running_var", torch::ones({C}));
    num_batches_tracked = register_buffer("num_batches_tracked", torch::tensor(0, torch::dtype(torch::kLong)));
  } else {
    running_mean = register_buffer("running_mean", torch::Tensor());
    running_var = register_buffer("running_var", torch::Tensor());
    num_batches_tracked = register_buffer("num_batches_tracked", torch::Tensor());
  }
  reset_parameters();
}

void BatchNorm2dImpl::reset_running_stats() {
  if (options.track_running_stats()) {
    running_mean.zero_();
    running_var.fill_(1);
    num_batches_tracked.zero_();
  }
}

void BatchNorm2dImpl::reset_parameters() {
  reset_running_stats();
  if (options.affine()) {
    torch::nn::init::ones_(weight);
    torch::nn::init::zeros_(bias);
  }
}

void BatchNorm2dImpl::pretty_print(std::ostream& stream) const {
  stream << "rala::BatchNorm2d(" << options.num_features() << ", eps=" << options.eps()
         << ", momentum=" << (options.momentum().has_value() ? std::to_string(*options.momentum()) : "None")
         << ", affine=" << (options.affine() ? "true" : "false")
         << ", track_running_stats=" << (options.track_running_stats() ? "true" : "false")
         << (sync_ ? ", synchronised" : "") << ")";
}

torch::Tensor BatchNorm2dImpl::forward(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "BatchNorm2d: expected a 4-D input (B, C, H, W), got ", input.dim(), "-D");
  // torch::nn::BatchNormImplBase::forward: the momentum, or the cumulative average when it is unset.
  double factor = options.momentum().has_value() ? *options.momentum() : 0.0;
  if (is_training() && options.track_running_stats() && num_batches_tracked.defined()) {
    num_batches_tracked += 1;
    if (!options.momentum().has_value()) factor = 1.0 / num_batches_tracked.item<double>();
  }
  const bool batch_stats = is_training() || !options.track_running_stats();
  if (!sync_ || !batch_stats) {
    if (batch_stats) {
      int64_t values = input.size(0);
      for (int64_t d = 2; d < input.dim(); ++d) values *= input.size(d);
      TORCH_CHECK(values != 1, "Expected more than 1 value per channel when training, got input size ", input.sizes());
    }
    return torch::batch_norm(input, weight, bias, running_mean, running_var, batch_stats, factor, options.eps(),
                             at::globalContext().userEnabledCuDNN());
  }
  const bool track = options.track_running_stats() && running_mean.defined();
  return SyncBatchNormFunction::apply(input, weight, bias, track ? running_mean : torch::Tensor(),
                                      track ? running_var : torch::Tensor(), factor, options.eps(), sync_.get());
}

int64_t set_batch_norm_sync(torch::nn::Module& module, const std::shared_ptr<BatchNormSync>& sync) {
  int64_t count = 0;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* bn = dynamic_cast<BatchNorm2dImpl*>(m.get())) {
      bn->set_sync(sync);
      ++count;
    }
  }
  return count;
}

}  // namespace rala
