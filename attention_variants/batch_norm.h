#pragma once
/// \file batch_norm.h
/// BatchNorm2d for every model in the project: LibTorch's torch::nn::BatchNorm2d (same options, parameter and buffer
/// names, same forward, bit for bit) that can also normalise with the statistics of a batch split across processes
/// (SyncBatchNorm) when a BatchNormSync is attached. Data-parallel training attaches one so that N processes with
/// B/N images each train exactly like one process with B images, and every rank's running statistics stay identical.
///
///   rala::BatchNorm2d bn(16);                      // what torch::nn::BatchNorm2d(16) is
///   rala::set_batch_norm_sync(*model, sync);       // training-mode forwards now reduce their statistics via sync
///
/// Synchronised training forward (per channel, over the images of all processes, n values in all): with the shift
/// K = running_mean (identical on all ranks, so x − K stays small and the one-pass variance does not cancel),
/// S1 = Σ(x − K), S2 = Σ(x − K)² summed in float64 and all-reduced with n in one call; mean = K + S1/n,
/// var = S2/n − (S1/n)² (biased, for normalising; running_var gets var·n/(n−1)), y = (x − mean)·γ/√(var + ε) + β.
/// Backward all-reduces Σ dy and Σ dy·(x − mean) (one call) and returns the local γ/β gradients (the gradient
/// all-reduce sums them over ranks).

#include <torch/torch.h>

#include <memory>
#include <ostream>

namespace rala {

/// What a synchronised BatchNorm needs from a process group.
class BatchNormSync {
 public:
  virtual ~BatchNormSync() = default;
  /// Sums `t` in place over all processes; every process calls it in the same order with the same shape.
  virtual void all_sum(torch::Tensor& t) = 0;
  /// False while this process runs only a placeholder batch (a global batch with fewer images than processes): its
  /// rows then add nothing to the statistics (and its loss is scaled by zero, so nothing to the gradients).
  bool contributes = true;
};

/// LibTorch's BatchNorm2dImpl re-stated (its base class template's pretty_print is not exported by every LibTorch
/// build, so it cannot be derived from): the same options, the same parameters and buffers registered in the same
/// order with the same initial values, and without a sync the same forward (torch::batch_norm), bit for bit.
class BatchNorm2dImpl : public torch::nn::Cloneable<BatchNorm2dImpl> {
 public:
  explicit BatchNorm2dImpl(int64_t num_features) : BatchNorm2dImpl(torch::nn::BatchNormOptions(num_features)) {}
  explicit BatchNorm2dImpl(const torch::nn::BatchNormOptions& options);
  void reset() override;
  void reset_running_stats();
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  /// x (B, C, H, W) → (B, C, H, W).
  torch::Tensor forward(const torch::Tensor& input);
  void set_sync(std::shared_ptr<BatchNormSync> sync) { sync_ = std::move(sync); }
  BatchNormSync* sync() const { return sync_.get(); }

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias;                                   ///< (C,), when affine
  torch::Tensor running_mean, running_var, num_batches_tracked;  ///< when tracking running statistics

 private:
  std::shared_ptr<BatchNormSync> sync_;
};
TORCH_MODULE(BatchNorm2d);

/// Attaches `sync` (nullptr detaches) to every rala::BatchNorm2d in `module`; returns how many there are.
int64_t set_batch_norm_sync(torch::nn::Module& module, const std::shared_ptr<BatchNormSync>& sync);

}  // namespace rala
