#include "experiments/train/train_loop.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <thread>
#include <iostream>
#include <limits>
#include <mutex>
#include <sstream>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "experiments/data/fashion_mnist.h"
#include "experiments/data/image_folder.h"
#include "experiments/data/transforms.h"
#include "experiments/model_loading.h"
#include "experiments/progress.h"
#include "experiments/device.h"
#include "experiments/runtime.h"
#include "experiments/train/distributed.h"
#include "experiments/train/schedule.h"
#include "models/checkpoint.h"
#include "models/presets.h"

namespace rala {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------------------------
// Config

void TrainConfig::validate() const {
  TORCH_CHECK(epochs > 0, "--epochs must be > 0, got ", epochs);
  TORCH_CHECK(batch_size > 0, "--batch-size must be > 0, got ", batch_size);
  TORCH_CHECK(eval_batch_size > 0, "evaluation batch size must be > 0, got ", eval_batch_size);
  TORCH_CHECK(lr > 0 && std::isfinite(lr), "--lr must be a finite number > 0, got ", lr);
  TORCH_CHECK(min_lr >= 0 && min_lr <= lr, "--min-lr must be in [0, lr = ", lr, "], got ", min_lr);
  TORCH_CHECK(weight_decay >= 0, "--weight-decay must be >= 0, got ", weight_decay);
  TORCH_CHECK(warmup_epochs >= 0 && warmup_epochs < epochs, "--warmup-epochs must be in [0, epochs = ", epochs,
              "), got ", warmup_epochs);
  TORCH_CHECK(label_smoothing >= 0 && label_smoothing < 1, "--label-smoothing must be in [0, 1), got ",
              label_smoothing);
  TORCH_CHECK(drop_path >= 0 && drop_path < 1, "--drop-path must be in [0, 1), got ", drop_path);
  TORCH_CHECK(ema_decay >= 0 && ema_decay < 1, "--ema-decay must be in [0, 1) (0 = no EMA), got ", ema_decay);
  TORCH_CHECK(clip_grad >= 0, "--clip-grad must be >= 0 (0 = no clipping), got ", clip_grad);
  TORCH_CHECK(image_size >= 0, "--image-size must be >= 0 (0 = the data's default), got ", image_size);
  TORCH_CHECK(train_limit != 0 && test_limit != 0, "--train-limit and --test-limit must be > 0 or -1 (all)");
  TORCH_CHECK(!out.empty(), "--out RUN_DIR is required");
}

std::string TrainConfig::to_json() const {
  json j = {{"model", model},
            {"pattern", pattern},
            {"settings", settings},
            {"data", data},
            {"image_size", image_size},
            {"train_limit", train_limit},
            {"test_limit", test_limit},
            {"epochs", epochs},
            {"batch_size", batch_size},
            {"eval_batch_size", eval_batch_size},
            {"lr", lr},
            {"min_lr", min_lr},
            {"weight_decay", weight_decay},
            {"warmup_epochs", warmup_epochs},
            {"label_smoothing", label_smoothing},
            {"drop_path", drop_path},
            {"ema_decay", ema_decay},
            {"clip_grad", clip_grad},
            {"augment", augment},
            {"seed", seed},
            {"init_weights", init_weights}};
  return j.dump();
}

void TrainConfig::from_json(const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  TORCH_CHECK(!j.is_discarded() && j.is_object(), "training config is not a JSON object");
  try {
    model = j.at("model");
    pattern = j.at("pattern");
    settings = j.at("settings").get<std::vector<std::string>>();
    data = j.at("data");
    image_size = j.at("image_size");
    train_limit = j.at("train_limit");
    test_limit = j.at("test_limit");
    epochs = j.at("epochs");
    batch_size = j.at("batch_size");
    eval_batch_size = j.at("eval_batch_size");
    lr = j.at("lr");
    min_lr = j.at("min_lr");
    weight_decay = j.at("weight_decay");
    warmup_epochs = j.at("warmup_epochs");
    label_smoothing = j.at("label_smoothing");
    drop_path = j.at("drop_path");
    ema_decay = j.at("ema_decay");
    clip_grad = j.at("clip_grad");
    augment = j.at("augment");
    seed = j.at("seed");
    init_weights = j.value("init_weights", std::string());  // absent in checkpoints written before the field
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "training config is incomplete: ", e.what());
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Weight-decay groups

namespace {

bool is_no_decay(const std::string& name, const torch::Tensor& p) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  int64_t non_singleton = 0;
  for (auto d : p.sizes()) non_singleton += d > 1;
  return p.dim() <= 1 || non_singleton <= 1 || ends_with(".bias") || ends_with("pos_embed") ||
         ends_with("cls_token");
}

}  // namespace

std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> split_weight_decay(torch::nn::Module& module) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : module.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    (is_no_decay(p.key(), p.value()) ? no_decay : decay).push_back(p.value());
  }
  return {decay, no_decay};
}

std::unique_ptr<torch::optim::AdamW> make_adamw(torch::nn::Module& module, double lr, double weight_decay,
                                                double eps) {
  auto [decay, no_decay] = split_weight_decay(module);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(lr).weight_decay(weight_decay).eps(eps)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(lr).weight_decay(0).eps(eps)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups),
                                               torch::optim::AdamWOptions(lr).weight_decay(weight_decay).eps(eps));
}

std::vector<std::string> no_weight_decay_names(torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& p : module.named_parameters(true))
    if (is_no_decay(p.key(), p.value())) names.push_back(p.key());
  return names;
}

// ---------------------------------------------------------------------------------------------------------------
// Data

struct LabeledSplit::State {
  bool fashion = false;
  int64_t size = 0;
  torch::Tensor images;  // Fashion-MNIST: (N, 1, 28, 28) uint8
  torch::Tensor labels;  // (N,) int64
  std::unique_ptr<data::ImageFolder> folder;
  std::vector<std::string> classes;
  std::string description;
};

namespace {

/// `synthetic`: a fixed labelled set of 28×28 grey images, 10 classes, for smoke tests and grids that need no data
/// files. Class c is a sinusoidal grating (its own orientation and frequency) at a random phase, plus Gaussian pixel
/// noise (σ = 0.35 of the range): learnable, but not in one step. 2048 training and 512 test images unless `limit`
/// asks for another count; the same images for every seed (the split has its own fixed generator).
data::LabeledImages synthetic_split(bool train, int64_t limit) {
  const int64_t n = limit > 0 ? limit : (train ? 2048 : 512), side = 28, classes = 10;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(train ? 20261129 : 20261130);
  auto labels = torch::randint(classes, {n}, gen, torch::kInt64);
  auto phase = torch::rand({n, 1, 1}, gen, torch::kFloat64) * (2 * M_PI);
  auto coords = torch::arange(side, torch::kFloat64);
  auto y = coords.view({1, side, 1}), x = coords.view({1, 1, side});
  auto c = labels.to(torch::kFloat64).view({n, 1, 1});
  auto angle = c * (M_PI / classes), freq = 2 * M_PI * (2.0 + torch::remainder(c, 3.0)) / side;
  auto wave = torch::sin(freq * (x * torch::cos(angle) + y * torch::sin(angle)) + phase);  // (n, 28, 28)
  auto pixels = 0.5 + 0.35 * wave + 0.35 * torch::randn({n, side, side}, gen, torch::kFloat64);
  data::LabeledImages d;
  d.images = (pixels.clamp(0, 1) * 255).round().to(torch::kUInt8).unsqueeze(1);  // (n, 1, 28, 28)
  d.labels = labels;
  for (int64_t k = 0; k < classes; ++k) d.classes.push_back("grating" + std::to_string(k));
  return d;
}

}  // namespace

LabeledSplit::LabeledSplit(const std::string& spec, bool train, int64_t image_size, int64_t limit)
    : s_(std::make_unique<State>()) {
  if (spec == "fashion-mnist" || spec == "synthetic") {
    auto d = spec == "synthetic" ? synthetic_split(train, limit) : data::load_fashion_mnist(train, limit);
    s_->fashion = true;  // both are 28×28 grey uint8 images
    s_->images = d.images;
    s_->labels = d.labels;
    s_->classes = d.classes;
    s_->size = d.images.size(0);
    s_->description = spec + ":" + (train ? "train" : "test") + ":" + std::to_string(s_->size);
    s_->description += "@" + std::to_string(image_size);
  } else {
    TORCH_CHECK(fs::is_directory(spec), "--data must be 'fashion-mnist', 'synthetic' or a folder with train/ and val/ (or test/) ",
                "class folders; '", spec, "' is neither");
    fs::path dir = fs::path(spec) / (train ? "train" : "val");
    if (!train && !fs::is_directory(dir)) dir = fs::path(spec) / "test";
    TORCH_CHECK(fs::is_directory(dir), "--data folder '", spec, "' has no ",
                train ? "train/ sub-folder" : "val/ or test/ sub-folder", " (expected DIR/train/<class>/<image> and ",
                "DIR/val/<class>/<image>)");
    s_->folder = std::make_unique<data::ImageFolder>(dir.string());
    TORCH_CHECK(!s_->folder->classes().empty(), "'", dir.string(),
                "' holds loose images; training needs class sub-folders (<class>/<image>)");
    s_->classes = s_->folder->classes();
    s_->size = s_->folder->size();
    if (limit > 0) s_->size = std::min(s_->size, limit);
    s_->labels = s_->folder->labels().narrow(0, 0, s_->size);
    s_->description = dir.string() + ":" + std::to_string(s_->size) + "@" + std::to_string(image_size);
  }
  TORCH_CHECK(image_size > 0, "image size must be > 0, got ", image_size);
  TORCH_CHECK(s_->size > 0, "no images in ", s_->description);
  image_size_ = image_size;
}

LabeledSplit::~LabeledSplit() = default;
LabeledSplit::LabeledSplit(LabeledSplit&&) noexcept = default;
int64_t LabeledSplit::size() const { return s_->size; }
int64_t LabeledSplit::image_size() const { return image_size_; }
const std::vector<std::string>& LabeledSplit::classes() const { return s_->classes; }
std::string LabeledSplit::description() const { return s_->description; }

std::pair<torch::Tensor, torch::Tensor> LabeledSplit::batch(const torch::Tensor& indices, bool augment,
                                                            at::Generator gen, int64_t rank, int64_t world) const {
  TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "LabeledSplit::batch: rank ", rank, " of ", world);
  const int64_t size = image_size_;
  if (world > 1) {
    // This rank's rows of the global batch, with the augmentation they get in the whole batch: every random number
    // of the whole batch is drawn in the single-process order, only this rank's images are decoded.
    const int64_t n = indices.size(0);
    const auto share = rank_share(n, rank, world);  // positions in the batch
    auto labels = s_->labels.index_select(0, indices.index_select(0, share));
    if (s_->fashion) {
      auto raw = s_->images.index_select(0, indices);  // (n, 1, 28, 28) uint8: cheap to augment whole
      if (augment) {
        raw = data::random_crop_with_padding(raw, 4, gen);
        raw = data::random_horizontal_flip(raw, 0.5, gen);
      }
      return {data::fashion_mnist_to_float(raw.index_select(0, share), size, 3), labels};
    }
    std::vector<torch::Tensor> images;
    auto idx = indices.contiguous();
    const int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      const bool mine = i % world == rank;
      if (augment && mine) {
        auto crop = data::random_resized_crop(s_->folder->load(p[i]), size, gen).to(torch::kFloat32).div_(255.0);
        images.push_back(data::normalize(crop, {data::kImageNetMean.begin(), data::kImageNetMean.end()},
                                         {data::kImageNetStd.begin(), data::kImageNetStd.end()}));
      } else if (augment) {  // another rank's image: the same draws, from its header's size
        const auto [h, w] = data::image_dims(s_->folder->path(p[i]));
        data::random_resized_crop_box(h, w, gen);
      } else if (mine) {
        images.push_back(data::imagenet_eval_transform(s_->folder->load(p[i]), size));
      }
    }
    auto x = images.empty() ? torch::empty({0, 3, size, size}) : torch::stack(images);
    if (augment) {  // random_horizontal_flip's draw for the whole batch, applied to this rank's rows
      const auto flip = (torch::rand({n}, gen, torch::kFloat32) < 0.5).index_select(0, share).view({-1, 1, 1, 1});
      x = torch::where(flip, x.flip({3}), x);
    }
    return {x, labels};
  }
  auto labels = s_->labels.index_select(0, indices);
  if (s_->fashion) {
    // Augment the raw 28×28 pixels (padding is black, as torchvision's RandomCrop on images), then convert.
    auto raw = s_->images.index_select(0, indices);  // (B, 1, 28, 28) uint8
    if (augment) {
      raw = data::random_crop_with_padding(raw, 4, gen);
      raw = data::random_horizontal_flip(raw, 0.5, gen);
    }
    return {data::fashion_mnist_to_float(raw, size, 3), labels};  // (B, 3, S, S)
  }
  std::vector<torch::Tensor> images;
  auto idx = indices.contiguous();
  const int64_t* p = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    auto img = s_->folder->load(p[i]);  // (3, H, W) uint8
    if (augment) {
      auto crop = data::random_resized_crop(img, size, gen).to(torch::kFloat32).div_(255.0);
      crop = data::normalize(crop, {data::kImageNetMean.begin(), data::kImageNetMean.end()},
                             {data::kImageNetStd.begin(), data::kImageNetStd.end()});
      images.push_back(crop);
    } else {
      images.push_back(data::imagenet_eval_transform(img, size));
    }
  }
  auto x = torch::stack(images);
  if (augment) x = data::random_horizontal_flip(x, 0.5, gen);
  return {x, labels};
}

std::pair<double, double> evaluate(AnyModel& model, const LabeledSplit& split, int64_t batch_size,
                                   Distributed* dist) {
  torch::NoGradGuard no_grad;
  model.module()->eval();
  const auto params = model.module()->parameters();
  const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().device();
  int64_t correct = 0;
  double loss_sum = 0;
  auto gen = data::make_generator(0);  // unused without augmentation
  int64_t begin = 0, end = split.size();
  if (dist != nullptr) {  // this rank's contiguous block of the images
    begin = split.size() * dist->rank() / dist->world_size();
    end = split.size() * (dist->rank() + 1) / dist->world_size();
  }
  for (int64_t start = begin; start < end; start += batch_size) {
    const int64_t n = std::min(batch_size, end - start);
    auto [x, y] = split.batch(torch::arange(start, start + n, torch::kInt64), false, gen);
    x = x.to(device);
    y = y.to(device);
    auto logits = model.forward(x);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  if (dist != nullptr) {
    auto sums = torch::tensor({loss_sum, static_cast<double>(correct)}, torch::kFloat64).to(device);
    dist->allreduce_sum({sums}, "evaluation sums");
    const auto host = sums.cpu();
    loss_sum = host[0].item<double>();
    correct = static_cast<int64_t>(std::llround(host[1].item<double>()));
  }
  return {100.0 * static_cast<double>(correct) / static_cast<double>(split.size()),
          loss_sum / static_cast<double>(split.size())};
}

// ---------------------------------------------------------------------------------------------------------------
// Training

namespace {

constexpr const char* kCheckpointName = "checkpoint.pth";
constexpr const char* kMetricsName = "metrics.h5";

torch::Tensor bytes_tensor(const std::string& bytes) {
  auto t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return t;
}

std::string tensor_bytes(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kUInt8);
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
}

torch::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cpu_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

c10::Dict<std::string, torch::Tensor> to_dict(const StateDict& s) {
  c10::Dict<std::string, torch::Tensor> d;
  for (const auto& [k, v] : s) d.insert(k, v);
  return d;
}

StateDict from_ivalue_dict(const torch::IValue& v, const std::string& what) {
  TORCH_CHECK(v.isGenericDict(), what, " is not a dictionary of tensors");
  StateDict s;
  for (const auto& e : v.toGenericDict()) {
    TORCH_CHECK(e.key().isString() && e.value().isTensor(), what, " holds a non-tensor entry");
    s[e.key().toStringRef()] = e.value().toTensor();
  }
  return s;
}

/// The metrics table as the checkpoint carries it: a float64 tensor [epochs, columns] (every metrics column is a
/// number or a small integer, exact in a double), the column names in the meta's "metrics_columns". The checkpoint is
/// the run's commit point: a kill after it is written and before metrics.h5 is must not lose the epoch's row.
torch::Tensor metrics_tensor(const ResultsTable& t) {
  auto out = torch::empty({t.rows(), static_cast<int64_t>(t.columns().size())}, torch::kFloat64);
  auto a = out.accessor<double, 2>();
  for (size_t j = 0; j < t.columns().size(); ++j) {
    const auto& col = t.columns()[j];
    for (int64_t r = 0; r < t.rows(); ++r)
      a[r][j] = col.kind == ColumnKind::integer ? static_cast<double>(col.integers[r]) : col.numbers[r];
  }
  return out;
}

/// Adds the first `rows` rows of a checkpoint's metrics tensor to `metrics` (columns matched by name; a column the
/// checkpoint lacks is left to add_row's default). False when the checkpoint holds fewer rows or is malformed.
bool restore_metrics(const torch::Tensor& stored, const json& names, int64_t rows, ResultsTable* metrics) {
  if (!names.is_array() || stored.dim() != 2 || stored.scalar_type() != torch::kFloat64 ||
      stored.size(1) != static_cast<int64_t>(names.size()) || stored.size(0) < rows)
    return false;
  auto a = stored.accessor<double, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    std::map<std::string, TableValue> row;
    for (size_t j = 0; j < names.size(); ++j) {
      if (!names[j].is_string()) return false;
      const std::string name = names[j].get<std::string>();
      if (!metrics->has_column(name)) continue;
      if (metrics->column(name).kind == ColumnKind::integer)
        row[name] = static_cast<int64_t>(a[r][static_cast<int64_t>(j)]);
      else
        row[name] = a[r][static_cast<int64_t>(j)];
    }
    metrics->add_row(row);
  }
  return true;
}

}  // namespace

ResultsTable make_metrics_table() {
  ResultsTable t;
  t.add_column("epoch", ColumnKind::integer, "", "epoch, 1-based")
      .add_column("train_loss", ColumnKind::number, "", "mean training loss (label-smoothed cross-entropy)")
      .add_column("train_top1", ColumnKind::number, "%", "training top-1 accuracy on augmented batches")
      .add_column("test_loss", ColumnKind::number, "", "mean test cross-entropy")
      .add_column("test_top1", ColumnKind::number, "%", "test top-1 accuracy")
      .add_column("test_top1_ema", ColumnKind::number, "%", "test top-1 accuracy of the EMA weights (nan: no EMA)")
      .add_column("lr", ColumnKind::number, "", "learning rate at the last step of the epoch")
      .add_column("images_per_s", ColumnKind::number, "images/s", "training throughput (forward + backward + step)")
      .add_column("seconds", ColumnKind::number, "s", "wall time of the epoch's training steps")
      .add_column("processes", ColumnKind::number, "", "processes training data-parallel (1: one process)")
      .add_column("comm_seconds", ColumnKind::number, "s",
                  "of `seconds`, time inside collectives (gradient allreduce, BatchNorm statistics; 0 for one process)");
  return t;
}

TrainResult train(const TrainConfig& requested) {
  TrainConfig c = requested;
  c.validate();
  const fs::path dir(c.out);
  const std::string ckpt_path = (dir / kCheckpointName).string();
  const std::string metrics_path = (dir / kMetricsName).string();
  const torch::Device device = run_device();

  // Several processes (a launcher's environment): the process group; nullptr for one process (today's path).
  DistOptions dist_options;
  dist_options.backend = c.dist_backend;
  dist_options.timeout = std::chrono::seconds(c.dist_timeout);
  dist_options.device = device;
  Distributed* dist = Distributed::world(dist_options);
  const int64_t rank = dist ? dist->rank() : 0, world = dist ? dist->world_size() : 1;
  const bool main_rank = rank == 0;
  if (dist && !main_rank) c.quiet = true;  // one progress line: rank 0's
  if (dist) {  // rank 0's --resume / --overwrite decide (e.g. rala ablate sees the run directory on rank 0's node)
    const std::string flags = dist->broadcast_bytes(std::string(c.resume ? "1" : "0") + (c.overwrite ? "1" : "0"), 0,
                                                    "the run flags");
    c.resume = flags[0] == '1';
    c.overwrite = flags[1] == '1';
  }
  // Runs `body` on rank 0 only (or everywhere in one process) and makes its error every rank's error.
  auto on_main = [&](const std::string& what, const std::function<void()>& body) {
    if (!dist) return body();
    std::string error;
    if (main_rank) {
      try {
        body();
      } catch (const std::exception& e) {
        error = error_line(e);
      }
    }
    dist->agree(error, what);
  };
  // Runs `body` on every rank; the first failing rank's error becomes every rank's error.
  auto on_all = [&](const std::string& what, const std::function<void()>& body) {
    if (!dist) return body();
    std::string error;
    try {
      body();
    } catch (const std::exception& e) {
      error = error_line(e);
    }
    dist->agree(error, what);
  };
  if (dist && !c.quiet)
    std::cerr << "data-parallel training: " << world << " processes (" << dist->env().launcher << ", "
              << dist->backend() << "), global batch " << c.batch_size << "\n";

  Checkpoint resumed;
  bool resuming = false;
  on_main("checking --out and --resume", [&] {
    if (c.resume) {
      TORCH_CHECK(fs::exists(ckpt_path), "--resume: no checkpoint at '", ckpt_path, "' (expected a run started with ",
                  "rala train --out ", c.out, ")");
      resumed = read_checkpoint(ckpt_path, "model");
    } else {
      TORCH_CHECK(c.overwrite || !fs::exists(ckpt_path), "'", c.out, "' already holds a run (", kCheckpointName,
                  "); use --resume to continue it or --overwrite to start again");
    }
    fs::create_directories(dir);
  });
  if (dist && c.resume) {
    // Only rank 0 reads RUN_DIR (the other ranks may be on nodes without it): its checkpoint's bytes go to every rank.
    std::string bytes;
    if (main_rank) {
      std::ifstream in(ckpt_path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    bytes = dist->broadcast_bytes(bytes, 0, "the checkpoint");
    if (!main_rank) {
      const fs::path copy = fs::temp_directory_path() / ("rala-resume-" + std::to_string(::getpid()) + ".pth");
      {
        std::ofstream out(copy, std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      }
      on_all("reading the checkpoint", [&] { resumed = read_checkpoint(copy.string(), "model"); });
      fs::remove(copy);
    } else {
      on_all("reading the checkpoint", [] {});
    }
  }
  if (c.resume) {
    json meta = json::parse(resumed.meta, nullptr, false);
    TORCH_CHECK(!meta.is_discarded() && meta.contains("train_config"), "--resume: '", ckpt_path,
                "' is not a training checkpoint of rala train (no train_config in its meta)");
    c.from_json(meta["train_config"].dump());
    c.validate();
    resuming = true;
  }

  const bool fashion = c.data == "fashion-mnist" || c.data == "synthetic";  // 28×28 grey images
  // Image size: Fashion-MNIST's native 28 px, or the model's default for folders. The class count comes from the data.
  int64_t size = c.image_size;
  std::unique_ptr<LabeledSplit> train_data, test_data;
  on_all("loading the data", [&] {
    if (size == 0)
      size = fashion ? data::kFashionMnistSide : AnyModel(c.model, c.pattern, c.settings).default_image_size();
    train_data = std::make_unique<LabeledSplit>(c.data, true, size, c.train_limit);
    test_data = std::make_unique<LabeledSplit>(c.data, false, size, c.test_limit);
  });
  LabeledSplit& train_split = *train_data;
  LabeledSplit& test_split = *test_data;
  const int64_t classes = static_cast<int64_t>(train_split.classes().size());
  torch::manual_seed(c.seed);
  auto model = std::make_unique<AnyModel>(c.model, c.pattern, c.settings, classes, c.drop_path);
  if (!resuming && !c.init_weights.empty()) {
    // In several processes rank 0 loads the weights; the broadcast below hands them to the others.
    on_main("loading --init-weights", [&] {
      ModelFlags init;
      init.model = c.model;
      init.pattern = model->pattern();
      init.settings = c.settings;
      init.checkpoint = c.init_weights;
      init.seed = c.seed;
      auto loaded = load_model(init);  // one-line errors for a missing, unreadable or misfitting checkpoint
      try {
        load_state_dict(*model->module(), state_dict(*loaded.model->module()));
      } catch (const c10::Error& e) {
        TORCH_CHECK(false, "--init-weights '", c.init_weights, "' does not fit the run (", c.model, ", ",
                    classes, " classes): ", e.what_without_backtrace());
      }
    });
  }
  std::unique_ptr<AnyModel> ema_model;
  std::unique_ptr<ModelEma> ema;
  if (c.ema_decay > 0) {
    ema_model = std::make_unique<AnyModel>(c.model, c.pattern, c.settings, classes, c.drop_path);
    ema = std::make_unique<ModelEma>(*ema_model->module(), c.ema_decay);
    ema->reset(*model->module());
  }

  const int64_t steps_per_epoch = (train_split.size() + c.batch_size - 1) / c.batch_size;
  const int64_t warmup_steps = static_cast<int64_t>(std::llround(c.warmup_epochs * steps_per_epoch));
  CosineSchedule schedule(c.lr, c.min_lr, warmup_steps, c.epochs * steps_per_epoch);

  ResultsTable metrics = make_metrics_table();
  int64_t start_epoch = 0;
  if (resuming) {
    load_state_dict(*model->module(), resumed.state);
    if (ema)
      for (const auto& [name, value] : resumed.extra)
        if (name == "model_ema") load_state_dict(*ema_model->module(), from_ivalue_dict(value, "checkpoint entry 'model_ema'"));
  }
  // The model (and the EMA) on the run's device; the optimizer is made for the moved parameters.
  model->module()->to(device);
  if (ema_model) ema_model->module()->to(device);
  auto optimizer_ptr = make_adamw(*model->module(), c.lr, c.weight_decay, c.adam_eps);
  torch::optim::AdamW& optimizer = *optimizer_ptr;
  if (resuming) {
    for (const auto& [name, value] : resumed.extra) {
      if (name == "optimizer") {
        std::istringstream in(tensor_bytes(value.toTensor()));
        torch::serialize::InputArchive archive;
        archive.load_from(in, device);
        optimizer.load(archive);
      } else if (name == "rng_state" && !dist) {
        set_cpu_rng_state(value.toTensor());
      }
    }
    start_epoch = resumed.epoch;
    TORCH_CHECK(start_epoch >= 1 && start_epoch <= c.epochs, "--resume: '", ckpt_path, "' is at epoch ", start_epoch,
                ", outside 1..", c.epochs);
    // The rows up to the checkpoint's epoch: from the checkpoint itself; from metrics.h5 for a checkpoint written
    // before it carried them (where a kill between the two writes could have cost the last row).
    bool restored = false;
    const json meta = json::parse(resumed.meta, nullptr, false);
    for (const auto& [name, value] : resumed.extra)
      if (name == "metrics" && value.isTensor() && meta.contains("metrics_columns"))
        restored = restore_metrics(value.toTensor(), meta["metrics_columns"], start_epoch, &metrics);
    if (!restored) metrics = make_metrics_table();
    if (!restored && main_rank && fs::exists(metrics_path)) {
      h5::File f(metrics_path, h5::Mode::read);
      auto old = ResultsTable::read_h5(f);
      for (int64_t r = 0; r < old.rows() && r < start_epoch; ++r) {
        std::map<std::string, TableValue> row;
        for (const auto& col : old.columns()) {
          if (!metrics.has_column(col.name)) continue;
          if (col.kind == ColumnKind::integer)
            row[col.name] = col.integers[r];
          else if (col.kind == ColumnKind::number)
            row[col.name] = col.numbers[r];
        }
        metrics.add_row(row);
      }
    }
    if (!c.quiet)
      std::cerr << "resuming " << c.out << " at epoch " << start_epoch + 1 << "/" << c.epochs
                << " (configuration from the checkpoint)\n";
  }

  std::vector<torch::Tensor> all_params;
  for (const auto& p : model->module()->parameters()) all_params.push_back(p);
  std::shared_ptr<Distributed> bn_sync;
  if (dist) {
    // Identical weights everywhere: rank 0's parameters and buffers (and the EMA's), at the start and after a resume.
    auto state = all_params;
    for (const auto& b : model->module()->buffers()) state.push_back(b);
    if (ema_model) {
      for (const auto& p : ema_model->module()->parameters()) state.push_back(p);
      for (const auto& b : ema_model->module()->buffers()) state.push_back(b);
    }
    dist->broadcast(state, 0, "the initial weights");
    // BatchNorm normalises with the statistics of the global batch (non-owning: the group lives until exit).
    bn_sync = std::shared_ptr<Distributed>(dist, [](Distributed*) {});
    set_batch_norm_sync(*model->module(), bn_sync);
  }
  // testing: "exit:R:S" / "hang:R:S"
  std::string fault_kind;
  int64_t fault_rank = -1, fault_step = -1;
  if (!c.inject_fault.empty()) {
    char kind[8] = {0};
    long long r = -1, s = -1;
    TORCH_CHECK(std::sscanf(c.inject_fault.c_str(), "%7[a-z]:%lld:%lld", kind, &r, &s) == 3 &&
                    (std::string(kind) == "exit" || std::string(kind) == "hang" || std::string(kind) == "perturb"),
                "--inject-fault must be exit:RANK:STEP, hang:RANK:STEP or perturb:RANK:STEP, got '", c.inject_fault,
                "'");
    fault_kind = kind, fault_rank = r, fault_step = s;
  }

  const auto classes_names = train_split.classes();
  auto write_metrics = [&](const ResultsTable& t) {
    write_table_files(t, metrics_path, [&](h5::File& f) {
      set_provenance(f);
      f.set_attr("/", "table_kind", "train");
      f.set_attr("/", "model", model->preset());
      f.set_attr("/", "attn_pattern", model->pattern());
      std::string settings;
      for (const auto& s : model->settings()) settings += (settings.empty() ? "" : " ") + s;
      f.set_attr("/", "attn_settings", settings);
      f.set_attr("/", "dataset", train_split.description());
      f.set_attr("/", "train_config", c.to_json());
      f.set_attr("/", "dtype", "float32");
      f.set_attr("/", "processes", world);
    });
  };

  // A resumed run's metrics.h5 is rewritten from the rows restored above at once: it may lack the last rows (killed
  // between the checkpoint and the metrics), and with the checkpoint at the last epoch no epoch would rewrite it.
  if (resuming) on_main("writing the metrics", [&] { write_metrics(metrics); });

  TrainResult result;
  result.checkpoint = ckpt_path;
  result.metrics = metrics_path;
  result.epochs_done = start_epoch;
  if (metrics.rows() > 0) {
    const int64_t r = metrics.rows() - 1;
    result.train_loss = metrics.column("train_loss").numbers[r];
    result.train_top1 = metrics.column("train_top1").numbers[r];
    result.test_loss = metrics.column("test_loss").numbers[r];
    result.test_top1 = metrics.column("test_top1").numbers[r];
    result.test_top1_ema = metrics.column("test_top1_ema").numbers[r];
    result.images_per_s = metrics.column("images_per_s").numbers[r];
  }

  int64_t epochs_this_call = 0;
  for (int64_t epoch = start_epoch; epoch < c.epochs; ++epoch) {
    if (c.stop_after_epochs >= 0 && epochs_this_call >= c.stop_after_epochs) break;
    model->module()->train();
    // Data order and augmentation depend only on (seed, epoch): a resumed run draws the same batches.
    auto gen = data::make_generator(c.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    auto order = torch::randperm(train_split.size(), gen, torch::kInt64);
    // Several processes: drop path draws from the default generators, seeded per (seed, epoch, rank), so a resume
    // needs no per-rank generator state.
    if (dist) torch::manual_seed(c.seed * 1000003ULL + static_cast<uint64_t>(epoch) * 7919ULL + static_cast<uint64_t>(rank) + 1);
    Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(c.epochs), train_split.size(),
                      "images", c.quiet);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    double lr_now = 0;
    if (dist) dist->reset_comm_stats();
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      const int64_t global_step = epoch * steps_per_epoch + s;
      lr_now = schedule(global_step);
      for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_now);
      const int64_t begin = s * c.batch_size;
      const int64_t n = std::min(c.batch_size, train_split.size() - begin);
      if (global_step == fault_step && (fault_rank == rank || fault_rank < 0)) {
        if (fault_kind == "exit") std::_Exit(3);
        if (fault_kind == "hang")
          while (true) std::this_thread::sleep_for(std::chrono::hours(1));  // stops answering
        torch::NoGradGuard no_grad;  // "perturb": this rank's weights leave the others'
        all_params.front().add_(1e-3);
      }
      const bool inject_nan = global_step == c.inject_nonfinite_step &&
                              (c.inject_nonfinite_rank < 0 || c.inject_nonfinite_rank == rank);
      if (!dist) {
        auto [x, y] = train_split.batch(order.narrow(0, begin, n), c.augment, gen);
        x = x.to(device);
        y = y.to(device);
        auto logits = model->forward(x);
        auto loss = torch::nn::functional::cross_entropy(
            logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(c.label_smoothing));
        if (inject_nan) loss = loss * std::numeric_limits<double>::quiet_NaN();
        const double loss_value = loss.item<double>();
        if (!std::isfinite(loss_value)) {
          progress.finish();
          const bool kept = fs::exists(ckpt_path);
          TORCH_CHECK(false, "non-finite training loss (", loss_value, ") at epoch ", epoch + 1, ", step ", s + 1, " (lr ",
                      lr_now, "); ",
                      kept ? "the last good checkpoint '" + ckpt_path + "' (epoch " + std::to_string(epoch) +
                                 ") is kept; try a lower --lr or --clip-grad"
                           : std::string("no checkpoint was written yet; try a lower --lr or --clip-grad"));
        }
        optimizer.zero_grad();
        loss.backward();
        if (c.clip_grad > 0) torch::nn::utils::clip_grad_norm_(all_params, c.clip_grad);
        optimizer.step();
        if (ema) ema->update(*model->module());
        loss_sum += loss_value * static_cast<double>(n);
        correct += logits.detach().argmax(1).eq(y).sum().item<int64_t>();
      } else {
        // This rank's rows of global batch s (same draws as one process), the loss as Σ/n over the global batch.
        auto [x, y] = train_split.batch(order.narrow(0, begin, n), c.augment, gen, rank, world);
        const bool placeholder = x.size(0) == 0;  // fewer images than processes: run one image, weighted zero
        if (placeholder) {
          auto unused = data::make_generator(0);
          std::tie(x, y) = train_split.batch(order.narrow(0, begin, 1), false, unused);
        }
        x = x.to(device);
        y = y.to(device);
        bn_sync->contributes = !placeholder;
        auto logits = model->forward(x);
        auto loss_sum_local = torch::nn::functional::cross_entropy(
            logits, y,
            torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(c.label_smoothing).reduction(torch::kSum));
        if (inject_nan) loss_sum_local = loss_sum_local * std::numeric_limits<double>::quiet_NaN();
        auto loss = placeholder ? loss_sum_local * 0.0 : loss_sum_local / static_cast<double>(n);
        optimizer.zero_grad();
        loss.backward();
        // Loss sum, correct count and a non-finite flag per rank ride along with the gradients (no extra round trip).
        auto extras = torch::zeros({2 + world}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
        if (!placeholder) {
          extras.narrow(0, 0, 1).copy_(loss_sum_local.detach().to(torch::kFloat64).view({1}));
          extras.narrow(0, 1, 1).copy_(logits.detach().argmax(1).eq(y).sum().to(torch::kFloat64).view({1}));
        }
        extras.narrow(0, 2 + rank, 1).copy_((~torch::isfinite(loss.detach())).to(torch::kFloat64).view({1}));
        std::vector<torch::Tensor> to_sum;
        for (auto& p : all_params) {
          if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);  // identical bucket layouts on all ranks
          to_sum.push_back(p.grad());
        }
        to_sum.push_back(extras);
        dist->allreduce_sum(to_sum, "gradient allreduce at epoch " + std::to_string(epoch + 1) + ", step " +
                                        std::to_string(s + 1));
        const auto host = extras.cpu();
        const double loss_global = host[0].item<double>();
        std::string bad_ranks;
        for (int64_t r = 0; r < world; ++r)
          if (host[2 + r].item<double>() > 0) bad_ranks += (bad_ranks.empty() ? "" : ", ") + std::to_string(r);
        if (!bad_ranks.empty() || !std::isfinite(loss_global)) {
          progress.finish();
          const bool kept = epoch > 0;  // a checkpoint of this run exists (the same answer on every rank)
          TORCH_CHECK(false, "non-finite training loss (", loss_global / static_cast<double>(n), ") at epoch ",
                      epoch + 1, ", step ", s + 1, " (lr ", lr_now, ") on rank", bad_ranks.find(',') == std::string::npos ? " " : "s ",
                      bad_ranks.empty() ? "?" : bad_ranks, "; ",
                      kept ? "the last good checkpoint '" + ckpt_path + "' (epoch " + std::to_string(epoch) +
                                 ") is kept; try a lower --lr or --clip-grad"
                           : std::string("no checkpoint was written yet; try a lower --lr or --clip-grad"));
        }
        if (c.clip_grad > 0) torch::nn::utils::clip_grad_norm_(all_params, c.clip_grad);
        optimizer.step();
        if (ema) ema->update(*model->module());
        loss_sum += loss_global;
        correct += static_cast<int64_t>(std::llround(host[1].item<double>()));
      }
      seen += n;
      char extra[96];
      std::snprintf(extra, sizeof extra, "loss %.4f  acc %.1f%%", loss_sum / seen, 100.0 * correct / seen);
      progress.update(seen, extra);
    }
    synchronize(device);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double comm_seconds = dist ? dist->comm_seconds() : 0.0;
    progress.finish();
    if (dist) {
      // The invariant of data-parallel training, checked once per epoch: every rank holds rank 0's weights (and
      // EMA and buffers), bit for bit.
      std::vector<torch::Tensor> state;
      for (const auto& t : model->module()->parameters()) state.push_back(t.detach().reshape({-1}).to(torch::kFloat64));
      for (const auto& t : model->module()->buffers()) state.push_back(t.detach().reshape({-1}).to(torch::kFloat64));
      if (ema_model)
        for (const auto& t : ema_model->module()->parameters()) state.push_back(t.detach().reshape({-1}).to(torch::kFloat64));
      const auto mine = torch::cat(state);
      auto rank0 = mine.clone();
      dist->broadcast({rank0}, 0, "the weight check");
      std::string error;
      if (!torch::equal(mine, rank0)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.3g", (mine - rank0).abs().max().item<double>());
        error = "the weights of rank " + std::to_string(rank) + " differ from rank 0's (max |diff| " + buf +
                ") after epoch " + std::to_string(epoch + 1) + ": the ranks diverged; nothing of this epoch is kept";
      }
      dist->agree(error, "the weight check");
    }

    result.train_loss = loss_sum / static_cast<double>(seen);
    result.train_top1 = 100.0 * static_cast<double>(correct) / static_cast<double>(seen);
    std::tie(result.test_top1, result.test_loss) = evaluate(*model, test_split, c.eval_batch_size, dist);
    result.test_top1_ema = std::numeric_limits<double>::quiet_NaN();
    if (ema) result.test_top1_ema = evaluate(*ema_model, test_split, c.eval_batch_size, dist).first;
    result.images_per_s = static_cast<double>(seen) / seconds;
    result.epochs_done = epoch + 1;
    metrics.add_row({{"epoch", epoch + 1},
                     {"train_loss", result.train_loss},
                     {"train_top1", result.train_top1},
                     {"test_loss", result.test_loss},
                     {"test_top1", result.test_top1},
                     {"test_top1_ema", result.test_top1_ema},
                     {"lr", lr_now},
                     {"images_per_s", result.images_per_s},
                     {"seconds", seconds},
                     {"processes", world},
                     {"comm_seconds", comm_seconds}});

    // Checkpoint: model, EMA, optimizer, RNG; meta = model meta + training config. Rank 0 only, atomically.
    on_main("writing the checkpoint", [&] {
      json meta = json::parse(model_meta_json(*model, classes_names));
      meta["train_config"] = json::parse(c.to_json());
      meta["metrics_columns"] = json::array();
      for (const auto& col : metrics.columns()) meta["metrics_columns"].push_back(col.name);
      std::vector<std::pair<std::string, torch::IValue>> extra;
      {
        std::ostringstream buf;
        torch::serialize::OutputArchive archive;
        optimizer.save(archive);
        archive.save_to(buf);
        extra.emplace_back("optimizer", bytes_tensor(buf.str()));
      }
      extra.emplace_back("rng_state", cpu_rng_state());
      extra.emplace_back("metrics", metrics_tensor(metrics));
      if (ema) extra.emplace_back("model_ema", to_dict(state_dict(*ema_model->module())));
      save_checkpoint(ckpt_path, state_dict(*model->module()), epoch + 1, meta.dump(), extra);
      write_metrics(metrics);
    });
    ++epochs_this_call;
    if (!c.quiet) {
      std::fprintf(stderr, "epoch %lld/%lld  train loss %.4f  train top-1 %.2f%%  test top-1 %.2f%%", (long long)(epoch + 1),
                   (long long)c.epochs, result.train_loss, result.train_top1, result.test_top1);
      if (ema) std::fprintf(stderr, "  (EMA %.2f%%)", result.test_top1_ema);
      std::fprintf(stderr, "  %.0f images/s", result.images_per_s);
      if (dist) std::fprintf(stderr, " on %lld processes (%.0f%% in collectives)", (long long)world, 100.0 * comm_seconds / seconds);
      std::fprintf(stderr, "\n");
    }
  }
  if (dist) {
    set_batch_norm_sync(*model->module(), nullptr);
    dist->barrier("the end of training");  // every rank returns after rank 0 has written its files
  }
  return result;
}

}  // namespace rala
