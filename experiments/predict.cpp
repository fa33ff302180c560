#include "experiments/predict.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "analysis/h5_store.h"
#include "experiments/data/image_folder.h"
#include "experiments/data/transforms.h"
#include "experiments/model_loading.h"
#include "experiments/runtime.h"

namespace rala {

namespace {

struct PredictArgs {
  ModelFlags model;
  std::vector<std::string> images;
  std::string input_h5, output_h5;
  int64_t image_size = 0;
  int64_t top_k = 5;
  int64_t batch_size = 16;
};

/// Forward in batches without gradients; (N, ...) → (N, classes).
torch::Tensor logits_of(AnyModel& model, const torch::Tensor& inputs, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < inputs.size(0); i += batch_size)
    out.push_back(model.forward(inputs.narrow(0, i, std::min(batch_size, inputs.size(0) - i)).to(model_device(model))).cpu());
  return torch::cat(out);
}

void predict_h5(const PredictArgs& a, LoadedModel& m) {
  TORCH_CHECK(!a.output_h5.empty(), "--input-h5 needs --output-h5");
  torch::Tensor input;
  {
    h5::File in(a.input_h5, h5::Mode::read);
    TORCH_CHECK(in.exists("input"), "'", a.input_h5, "' has no dataset 'input' (expected (N, 3, H, W) float32)");
    input = in.read("input");
  }
  TORCH_CHECK(input.dim() == 4 && input.size(1) == 3 && input.size(0) > 0,
              "dataset 'input' of '", a.input_h5, "' must be (N, 3, H, W) with N > 0, got ", input.sizes());
  auto logits = logits_of(*m.model, input.to(torch::kFloat32), a.batch_size);
  h5::AtomicPath target(a.output_h5);
  {
    h5::File out(target.partial(), h5::Mode::truncate);
    out.write("logits", logits.contiguous());
    out.set_attr("/", "tool_version", tool_version());
    out.set_attr("/", "git_commit", git_commit());
    out.set_attr("/", "torch_version", torch_version());
    out.set_attr("/", "command_line", command_line());
    out.set_attr("/", "model", m.model->preset());
    out.set_attr("/", "attn_pattern", m.model->pattern());
    out.set_attr("/", "weights", a.model.weights_description());
    out.set_attr("/", "input", a.input_h5);
  }
  target.commit();
  std::cout << "wrote logits " << logits.sizes() << " to " << a.output_h5 << "\n";
}

void predict_images(const PredictArgs& a, LoadedModel& m) {
  TORCH_CHECK(!a.images.empty(), "predict needs image files or --input-h5 (see rala predict --help)");
  const int64_t size = a.image_size > 0 ? a.image_size : m.model->default_image_size();
  std::vector<torch::Tensor> batch;
  for (const auto& path : a.images) batch.push_back(data::imagenet_eval_transform(data::decode_image(path), size));
  auto probs = torch::softmax(logits_of(*m.model, torch::stack(batch), a.batch_size), -1);
  const int64_t k = std::min<int64_t>(a.top_k, probs.size(1));
  auto top = probs.topk(k, -1);
  auto values = std::get<0>(top), indices = std::get<1>(top);
  for (size_t i = 0; i < a.images.size(); ++i) {
    std::cout << a.images[i] << "\n";
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = indices[i][j].item<int64_t>();
      const std::string name = c < static_cast<int64_t>(m.classes.size()) ? m.classes[c] : "class " + std::to_string(c);
      std::printf("  %ld. %-24s %6.2f %%\n", static_cast<long>(j + 1), name.c_str(), 100.0 * values[i][j].item<double>());
    }
  }
  std::fflush(stdout);
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto args = std::make_shared<PredictArgs>();
  auto* cmd = app.add_subcommand("predict", "Classify images with a model (top-k), or HDF5 input → logits");
  args->model.add_to(*cmd);
  cmd->add_option("images", args->images, "Image files (JPEG/PNG); ImageNet evaluation transform");
  cmd->add_option("--input-h5", args->input_h5, "HDF5 file with dataset 'input' (N, 3, H, W) float32, preprocessed");
  cmd->add_option("--output-h5", args->output_h5, "Where to write dataset 'logits' (N, classes)");
  cmd->add_option("--image-size", args->image_size, "Crop size (default: the model's, 224 or 64)");
  cmd->add_option("--top-k", args->top_k, "Classes to print per image")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", args->batch_size, "Images per forward")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->callback([args] {
    auto m = load_model(args->model);
    if (!args->input_h5.empty())
      predict_h5(*args, m);
    else
      predict_images(*args, m);
  });
}

}  // namespace rala
