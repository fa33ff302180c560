#include "experiments/distill.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "analysis/h5_store.h"
#include "analysis/results_table.h"
#include "experiments/data/fashion_mnist.h"
#include "experiments/data/transforms.h"
#include "experiments/model_loading.h"
#include "experiments/progress.h"
#include "experiments/device.h"
#include "experiments/runtime.h"
#include "experiments/train/schedule.h"
#include "experiments/train/train_loop.h"
#include "models/checkpoint.h"
#include "models/presets.h"

namespace rala {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------------------------
// Config

void DistillConfig::validate() const {
  TORCH_CHECK(!checkpoint.empty(), "--checkpoint TEACHER is required (an own checkpoint, e.g. from rala train)");
  TORCH_CHECK(!out.empty(), "--out DIR is required");
  TORCH_CHECK(epochs > 0, "--epochs must be > 0, got ", epochs);
  TORCH_CHECK(batch_size > 0, "--batch-size must be > 0, got ", batch_size);
  TORCH_CHECK(eval_batch_size > 0, "evaluation batch size must be > 0, got ", eval_batch_size);
  TORCH_CHECK(lr > 0 && std::isfinite(lr), "--lr must be a finite number > 0, got ", lr);
  TORCH_CHECK(min_lr >= 0 && min_lr <= lr, "--min-lr must be in [0, lr = ", lr, "], got ", min_lr);
  TORCH_CHECK(weight_decay >= 0, "--weight-decay must be >= 0, got ", weight_decay);
  TORCH_CHECK(warmup_epochs >= 0 && warmup_epochs < epochs, "--warmup-epochs must be in [0, epochs = ", epochs,
              "), got ", warmup_epochs);
  TORCH_CHECK(xent_weight >= 0 && mse_weight >= 0 && xent_weight + mse_weight > 0,
              "--xent-weight and --mse-weight must be >= 0 and not both 0, got ", xent_weight, " and ", mse_weight);
  TORCH_CHECK(finetune_epochs >= 0, "--finetune-epochs must be >= 0, got ", finetune_epochs);
  TORCH_CHECK(finetune_lr > 0 && std::isfinite(finetune_lr), "--finetune-lr must be a finite number > 0, got ",
              finetune_lr);
  TORCH_CHECK(image_size >= 0, "--image-size must be >= 0 (0 = the teacher's), got ", image_size);
  TORCH_CHECK(train_limit != 0 && test_limit != 0, "--train-limit and --test-limit must be > 0 or -1 (all)");
  TORCH_CHECK(!(data == "synthetic" && finetune_epochs > 0),
              "--finetune-epochs needs labelled data (fashion-mnist or a folder), not --data synthetic");
}

std::string DistillConfig::to_json() const {
  json j = {{"checkpoint", checkpoint},   {"checkpoint_key", checkpoint_key},   {"model", model},
            {"pattern", pattern},         {"settings", settings},               {"data", data},
            {"image_size", image_size},   {"train_limit", train_limit},         {"test_limit", test_limit},
            {"epochs", epochs},           {"batch_size", batch_size},           {"eval_batch_size", eval_batch_size},
            {"lr", lr},                   {"min_lr", min_lr},                   {"weight_decay", weight_decay},
            {"warmup_epochs", warmup_epochs}, {"xent_weight", xent_weight},     {"mse_weight", mse_weight},
            {"finetune_epochs", finetune_epochs}, {"finetune_lr", finetune_lr}, {"seed", seed}};
  return j.dump();
}

// ---------------------------------------------------------------------------------------------------------------
// Pattern, settings, objective

std::string converted_pattern(const std::string& teacher, const std::string& requested) {
  TORCH_CHECK(teacher.find('S') != std::string::npos, "the teacher (pattern ", teacher,
              ") has no softmax (S) stage to convert to hedgehog");
  if (requested.empty()) {
    std::string out = teacher;
    for (auto& ch : out)
      if (ch == 'S') ch = 'H';
    return out;
  }
  std::string letters;
  try {
    letters = pattern_letters(parse_pattern(requested, teacher.size()));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "--attn-pattern '", requested, "' does not fit the teacher (pattern ", teacher, "): ",
                e.what_without_backtrace());
  }
  int64_t converted = 0;
  for (size_t i = 0; i < teacher.size(); ++i) {
    if (letters[i] == teacher[i]) continue;
    TORCH_CHECK(teacher[i] == 'S' && letters[i] == 'H', "--attn-pattern '", requested, "': stage ", i, " is ",
                variant_info(variant_from_letter(teacher[i])).name, " (", teacher[i], ") in the teacher and ",
                variant_info(variant_from_letter(letters[i])).name, " (", letters[i],
                ") here; distillation only turns softmax (S) stages into hedgehog (H) (teacher pattern ", teacher, ")");
    ++converted;
  }
  TORCH_CHECK(converted > 0, "--attn-pattern '", requested, "' converts no stage: put H in place of at least one S of ",
              "the teacher's pattern ", teacher);
  return letters;
}

namespace {

/// "gate=1 rope=0 lepe=1" → {(gate, 1), ...}
std::vector<SettingPair> parse_described(const std::string& described) {
  std::vector<SettingPair> out;
  std::istringstream in(described);
  std::string item;
  while (in >> item) out.push_back(split_setting(item));
  return out;
}

}  // namespace

std::vector<std::string> converted_settings(const AnyModel& teacher, const std::string& pattern,
                                            const std::vector<std::string>& user) {
  const auto stages = parse_pattern(pattern, teacher.pattern().size());
  std::vector<std::string> out;
  for (const auto& s : teacher.settings()) {  // drop what reaches no stage any more (e.g. softmax.rope=0 on SS → HH)
    try {
      distribute_settings(stages, {s});
      out.push_back(s);
    } catch (const c10::Error&) {
    }
  }
  for (const auto& layer : teacher.attention_layers()) {
    if (layer.variant != Variant::softmax) continue;
    for (const auto& [key, value] : parse_described(layer.settings))
      out.push_back(std::string("hedgehog.") + key + "=" + value);
    break;  // settings are per variant: every softmax layer has the same
  }
  out.insert(out.end(), user.begin(), user.end());
  return out;
}

torch::Tensor distillation_objective(const std::vector<MimicryLoss>& layers, double xent_weight, double mse_weight) {
  TORCH_CHECK(!layers.empty(), "distillation objective: no layer losses");
  torch::Tensor sum;
  for (const auto& l : layers) {
    auto t = l.total(xent_weight, mse_weight);
    sum = sum.defined() ? sum + t : t;
  }
  return sum / static_cast<double>(layers.size());
}

// ---------------------------------------------------------------------------------------------------------------
// The run

namespace {

constexpr const char* kCheckpointName = "checkpoint.pth";
constexpr const char* kMetricsName = "metrics.h5";

/// Every attention module of a model, in forward order, named "<stage>.<block>".
std::vector<std::pair<std::string, std::shared_ptr<AttentionBase>>> attention_modules(AnyModel& m) {
  std::vector<std::pair<std::string, std::shared_ptr<AttentionBase>>> out;
  if (m.is_ravlt()) {
    for (const auto& stage : m.ravlt()->stages) {
      int64_t j = 0;
      for (const auto& block : *stage->blocks)
        out.emplace_back(std::to_string(stage->stage) + "." + std::to_string(j++), block->as<RavltBlock>()->attn);
    }
  } else {
    for (size_t i = 0; i < m.deit()->blocks.size(); ++i)
      out.emplace_back("0." + std::to_string(i), m.deit()->blocks[i]->attn);
  }
  return out;
}

/// Training or held-out images: fashion-mnist / a folder (labelled, through the training loop's LabeledSplit,
/// without augmentation) or synthetic N(0, 1) images (unlabelled; 1024 training, 256 held-out by default).
class Images {
 public:
  Images(const std::string& spec, bool train, int64_t image_size, int64_t limit, uint64_t seed) {
    if (spec == "synthetic") {
      const int64_t n = limit > 0 ? limit : (train ? 1024 : 256);
      auto gen = data::make_generator(seed * 2 + (train ? 0 : 1));
      synthetic_ = at::normal(0.0, 1.0, {n, 3, image_size, image_size}, gen);
      description_ = std::string("synthetic N(0,1):") + (train ? "train" : "test") + ":" + std::to_string(n) + "@" +
                     std::to_string(image_size);
    } else {
      split_ = std::make_unique<LabeledSplit>(spec, train, image_size, limit);
      description_ = split_->description();
    }
  }
  int64_t size() const { return split_ ? split_->size() : synthetic_.size(0); }
  bool labelled() const { return split_ != nullptr; }
  const std::string& description() const { return description_; }
  std::vector<std::string> classes() const { return split_ ? split_->classes() : std::vector<std::string>{}; }
  /// Images (B, 3, S, S) and labels (B,) (undefined for synthetic), on run_device().
  std::pair<torch::Tensor, torch::Tensor> batch(const torch::Tensor& indices) const {
    const torch::Device device = run_device();
    if (!split_) return {synthetic_.index_select(0, indices).to(device), torch::Tensor()};
    auto [x, y] = split_->batch(indices, /*augment=*/false, data::make_generator(0));
    return {x.to(device), y.to(device)};
  }

 private:
  std::unique_ptr<LabeledSplit> split_;
  torch::Tensor synthetic_;
  std::string description_;
};

/// Logits of `model` (normal mode, eval, no grad) on every image of `images`.
torch::Tensor all_logits(AnyModel& model, const Images& images, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  model.module()->eval();
  std::vector<torch::Tensor> out;
  for (int64_t start = 0; start < images.size(); start += batch_size) {
    const int64_t n = std::min(batch_size, images.size() - start);
    out.push_back(model.forward(images.batch(torch::arange(start, start + n, torch::kInt64)).first));
  }
  return torch::cat(out);
}

torch::Tensor all_labels(const Images& images) {
  if (!images.labelled()) return {};
  return images.batch(torch::arange(images.size(), torch::kInt64)).second;
}

/// Fills the agreement columns of `row` from student and teacher logits (N, classes).
void compare_logits(DistillRow& row, const torch::Tensor& student, const torch::Tensor& teacher,
                    const torch::Tensor& labels) {
  const auto s = student.to(torch::kFloat64), t = teacher.to(torch::kFloat64);
  row.agreement = 100.0 * s.argmax(1).eq(t.argmax(1)).to(torch::kFloat64).mean().item<double>();
  row.logit_mse = (s - t).pow(2).mean().item<double>();
  auto log_t = torch::log_softmax(t, 1), log_s = torch::log_softmax(s, 1);
  row.logit_kl = (log_t.exp() * (log_t - log_s)).sum(1).mean().item<double>();
  if (labels.defined()) {
    row.student_top1 = 100.0 * s.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
    row.teacher_top1 = 100.0 * t.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
  }
}

ResultsTable make_distill_table(const std::vector<std::string>& layers) {
  ResultsTable t;
  t.add_column("phase", ColumnKind::text, "", "distill: attention mimicry (epoch 0 = before training); finetune: "
                                              "after end-to-end training")
      .add_column("epoch", ColumnKind::integer, "", "epoch of the phase, 1-based (0 = the converted model before "
                                                    "distillation)")
      .add_column("train_loss", ColumnKind::number, "",
                  "mean training objective of the epoch (distill: mean over layers of xent_weight·xent + "
                  "mse_weight·mse; finetune: label-smoothed cross-entropy)")
      .add_column("xent", ColumnKind::number, "nats", "held-out attention cross-entropy, mean over distilled layers")
      .add_column("mse", ColumnKind::number, "", "held-out MSE of per-head outputs, mean over distilled layers")
      .add_column("loss", ColumnKind::number, "", "held-out xent_weight·xent + mse_weight·mse, mean over layers");
  for (const auto& l : layers) {
    t.add_column("xent_" + l, ColumnKind::number, "nats", "held-out attention cross-entropy of layer " + l);
    t.add_column("mse_" + l, ColumnKind::number, "", "held-out output MSE of layer " + l);
    t.add_column("loss_" + l, ColumnKind::number, "", "held-out mimicry loss of layer " + l);
  }
  t.add_column("agreement", ColumnKind::number, "%", "held-out images where student and teacher top-1 agree")
      .add_column("logit_mse", ColumnKind::number, "", "mean squared difference of student and teacher logits")
      .add_column("logit_kl", ColumnKind::number, "nats", "mean KL(teacher ‖ student) of the class probabilities")
      .add_column("student_top1", ColumnKind::number, "%", "student top-1 accuracy (nan: unlabelled data)")
      .add_column("teacher_top1", ColumnKind::number, "%", "teacher top-1 accuracy (nan: unlabelled data)")
      .add_column("lr", ColumnKind::number, "", "learning rate at the last step of the epoch")
      .add_column("seconds", ColumnKind::number, "s", "wall time of the epoch's training steps");
  return t;
}

void add_table_row(ResultsTable& t, const DistillRow& r, const std::vector<std::string>& layers, double lr,
                   double seconds) {
  std::map<std::string, TableValue> v = {{"phase", r.phase},          {"epoch", r.epoch},
                                         {"train_loss", r.train_loss}, {"xent", r.xent},
                                         {"mse", r.mse},               {"loss", r.loss},
                                         {"agreement", r.agreement},   {"logit_mse", r.logit_mse},
                                         {"logit_kl", r.logit_kl},     {"student_top1", r.student_top1},
                                         {"teacher_top1", r.teacher_top1}, {"lr", lr},
                                         {"seconds", seconds}};
  for (size_t i = 0; i < layers.size() && i < r.layer_xent.size(); ++i) {
    v["xent_" + layers[i]] = r.layer_xent[i];
    v["mse_" + layers[i]] = r.layer_mse[i];
    v["loss_" + layers[i]] = r.layer_loss[i];
  }
  t.add_row(v);
}

}  // namespace

DistillResult distill(const DistillConfig& requested) {
  DistillConfig c = requested;
  c.validate();
  const fs::path dir(c.out);
  const std::string ckpt_path = (dir / kCheckpointName).string();
  const std::string metrics_path = (dir / kMetricsName).string();
  TORCH_CHECK(c.overwrite || (!fs::exists(ckpt_path) && !fs::exists(metrics_path)), "'", c.out,
              "' already holds a distillation (", kCheckpointName, "); use --overwrite to start again");

  // The teacher and what its checkpoint says about itself.
  Checkpoint teacher_ckpt = read_checkpoint(c.checkpoint, c.checkpoint_key);
  json meta = json::object();
  if (!teacher_ckpt.meta.empty()) {
    meta = json::parse(teacher_ckpt.meta, nullptr, false);
    TORCH_CHECK(!meta.is_discarded() && meta.is_object(), "teacher checkpoint '", c.checkpoint,
                "' has a 'meta' entry that is not a JSON object");
  }
  std::string preset = c.model;
  if (preset.empty() && meta.contains("preset")) preset = meta["preset"].get<std::string>();
  TORCH_CHECK(!preset.empty(), "teacher checkpoint '", c.checkpoint,
              "' names no model preset in its meta (not an own checkpoint?); give --model");
  const json train_meta = meta.contains("train_config") ? meta["train_config"] : json::object();
  if (c.data.empty()) c.data = train_meta.contains("data") ? train_meta["data"].get<std::string>() : "fashion-mnist";
  TORCH_CHECK(!(c.data == "synthetic" && c.finetune_epochs > 0),
              "--finetune-epochs needs labelled data (fashion-mnist or a folder), not --data synthetic");
  ModelFlags tf;
  tf.model = preset;
  tf.checkpoint = c.checkpoint;
  tf.checkpoint_key = c.checkpoint_key;
  tf.seed = c.seed;
  LoadedModel teacher = load_model(tf);
  const StateDict teacher_state = state_dict(*teacher.model->module());
  TORCH_CHECK(teacher_state.count("head.bias"), "teacher checkpoint '", c.checkpoint, "' has no head.bias");
  const int64_t num_classes = teacher_state.at("head.bias").size(0);

  DistillResult result;
  result.teacher_pattern = teacher.model->pattern();
  result.pattern = converted_pattern(result.teacher_pattern, c.pattern);
  const auto settings = converted_settings(*teacher.model, result.pattern, c.settings);

  int64_t size = c.image_size;
  if (size == 0 && train_meta.contains("image_size")) size = train_meta["image_size"].get<int64_t>();
  if (size == 0) size = c.data == "fashion-mnist" ? data::kFashionMnistSide : teacher.model->default_image_size();
  Images train_set(c.data, true, size, c.train_limit, c.seed);
  Images test_set(c.data, false, size, c.test_limit, c.seed);
  if (c.finetune_epochs > 0)
    TORCH_CHECK(static_cast<int64_t>(train_set.classes().size()) == num_classes, "--finetune-epochs: the data has ",
                train_set.classes().size(), " classes, the teacher ", num_classes);

  // The student: the teacher's network with S → H, every teacher weight copied, new (seeded) feature maps.
  torch::manual_seed(c.seed);
  const int64_t depth = teacher.model->is_ravlt() ? 0 : teacher.model->deit()->options().depth();  // a DeiT's blocks
  AnyModel student(preset, result.pattern, settings, num_classes, -1, depth);
  auto teacher_layers = attention_modules(*teacher.model);
  auto student_layers = attention_modules(student);
  TORCH_CHECK(student_layers.size() == teacher_layers.size(), "the converted model has ", student_layers.size(),
              " attention layers, the teacher ", teacher_layers.size());
  std::vector<HedgehogAttentionImpl*> distilled;
  std::set<std::string> optional;  // the new feature maps (and the deterministic RoPE buffers)
  for (const auto& b : student.module()->named_buffers())
    if (b.key().find("RoPE.angle") != std::string::npos) optional.insert(b.key());
  for (const auto& p : student.module()->named_parameters())
    if (p.key().find("feature_map_") != std::string::npos) optional.insert(p.key());
  for (size_t i = 0; i < student_layers.size(); ++i) {
    const auto& t = *teacher_layers[i].second;
    auto* h = dynamic_cast<HedgehogAttentionImpl*>(student_layers[i].second.get());
    if (t.variant() != Variant::softmax || h == nullptr) continue;
    for (const char* key : {"gate", "rope", "lepe"})
      TORCH_CHECK(t.settings().flag(key) == h->settings().flag(key), "--attn-opt changes hedgehog.", key,
                  " of layer ", student_layers[i].first, " to ", h->settings().text(key),
                  "; a converted layer keeps the teacher softmax layer's ", key, " (", t.settings().text(key), ")");
    distilled.push_back(h);
    result.layers.push_back(student_layers[i].first);
  }
  try {
    load_state_dict(*student.module(), teacher_state, optional);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "the teacher's weights do not fit the converted model (pattern ", result.pattern, "): ",
                e.what_without_backtrace());
  }

  student.module()->to(run_device());  // the teacher is there already (load_model)
  // Only the feature maps of the distilled layers learn; eval mode keeps BatchNorm statistics and drop path still.
  for (auto& p : student.module()->parameters()) p.set_requires_grad(false);
  for (auto* h : distilled)
    for (auto& p : h->feature_map_q->parameters()) p.set_requires_grad(true);
  for (auto* h : distilled)
    for (auto& p : h->feature_map_k->parameters()) p.set_requires_grad(true);
  auto set_distillation = [&](bool on) {
    for (auto* h : distilled) h->set_distillation(on);
  };
  auto optimizer_ptr = make_adamw(*student.module(), c.lr, c.weight_decay);
  auto& optimizer = *optimizer_ptr;
  const int64_t steps_per_epoch = (train_set.size() + c.batch_size - 1) / c.batch_size;
  const int64_t warmup_steps = static_cast<int64_t>(std::llround(c.warmup_epochs * steps_per_epoch));
  CosineSchedule schedule(c.lr, c.min_lr, warmup_steps, c.epochs * steps_per_epoch);

  if (!c.quiet) {
    std::cerr << "distill: teacher " << c.checkpoint << " (" << preset << ", " << result.teacher_pattern << ") -> "
              << result.pattern << "; layers";
    for (const auto& l : result.layers) std::cerr << " " << l;
    std::cerr << "; settings";
    for (const auto& s : settings) std::cerr << " " << s;
    std::cerr << "\n  data " << train_set.description() << " / " << test_set.description() << "; " << c.epochs
              << " epochs x " << steps_per_epoch << " steps, batch " << c.batch_size << ", lr " << c.lr
              << ", loss " << c.xent_weight << "·xent + " << c.mse_weight << "·mse\n";
  }

  const torch::Tensor test_labels = all_labels(test_set);
  const torch::Tensor teacher_logits = all_logits(*teacher.model, test_set, c.eval_batch_size);
  const size_t L = distilled.size();

  // Held-out mimicry (distillation mode) and agreement (normal mode) of the student as it is now.
  auto measure = [&](const std::string& phase, int64_t epoch, bool mimicry) {
    DistillRow row;
    row.phase = phase;
    row.epoch = epoch;
    if (mimicry) {
      torch::NoGradGuard no_grad;
      student.module()->eval();
      set_distillation(true);
      std::vector<double> xent(L, 0.0), mse(L, 0.0);
      for (int64_t start = 0; start < test_set.size(); start += c.eval_batch_size) {
        const int64_t n = std::min(c.eval_batch_size, test_set.size() - start);
        student.forward(test_set.batch(torch::arange(start, start + n, torch::kInt64)).first);
        for (size_t i = 0; i < L; ++i) {
          xent[i] += distilled[i]->last_mimicry().xent.item<double>() * static_cast<double>(n);
          mse[i] += distilled[i]->last_mimicry().mse.item<double>() * static_cast<double>(n);
        }
      }
      row.xent = row.mse = row.loss = 0;
      for (size_t i = 0; i < L; ++i) {
        row.layer_xent.push_back(xent[i] / static_cast<double>(test_set.size()));
        row.layer_mse.push_back(mse[i] / static_cast<double>(test_set.size()));
        row.layer_loss.push_back(c.xent_weight * row.layer_xent.back() + c.mse_weight * row.layer_mse.back());
        row.xent += row.layer_xent.back() / static_cast<double>(L);
        row.mse += row.layer_mse.back() / static_cast<double>(L);
        row.loss += row.layer_loss.back() / static_cast<double>(L);
      }
    }
    set_distillation(false);
    compare_logits(row, all_logits(student, test_set, c.eval_batch_size), teacher_logits, test_labels);
    return row;
  };

  ResultsTable table = make_distill_table(result.layers);
  auto write_checkpoint = [&](int64_t epoch) {
    json m = json::parse(model_meta_json(student, teacher.classes));
    m["distill_config"] = json::parse(c.to_json());
    m["teacher"] = {{"checkpoint", c.checkpoint}, {"attn_pattern", result.teacher_pattern},
                    {"attn_settings", teacher.model->settings()}};
    m["distilled_layers"] = result.layers;
    save_checkpoint(ckpt_path, state_dict(*student.module()), epoch, m.dump());
  };
  auto write_table = [&] {
    std::string layers;
    for (const auto& l : result.layers) layers += (layers.empty() ? "" : " ") + l;
    std::string described;
    for (const auto& s : settings) described += (described.empty() ? "" : " ") + s;
    write_table_files(table, metrics_path, [&](h5::File& f) {
      set_provenance(f);
      f.set_attr("/", "table_kind", "distill");
      f.set_attr("/", "model", preset);
      f.set_attr("/", "attn_pattern", result.pattern);
      f.set_attr("/", "attn_settings", described);
      f.set_attr("/", "teacher_checkpoint", c.checkpoint);
      f.set_attr("/", "teacher_attn_pattern", result.teacher_pattern);
      f.set_attr("/", "distilled_layers", layers);
      f.set_attr("/", "dataset", train_set.description());
      f.set_attr("/", "distill_config", c.to_json());
      f.set_attr("/", "dtype", "float32");
    });
  };

  fs::create_directories(dir);
  result.checkpoint = ckpt_path;
  result.metrics = metrics_path;
  result.rows.push_back(measure("distill", 0, true));
  add_table_row(table, result.rows.back(), result.layers, std::nan(""), std::nan(""));

  for (int64_t epoch = 0; epoch < c.epochs; ++epoch) {
    student.module()->eval();
    set_distillation(true);
    auto gen = data::make_generator(c.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    auto order = torch::randperm(train_set.size(), gen, torch::kInt64);
    Progress progress("distill " + std::to_string(epoch + 1) + "/" + std::to_string(c.epochs), train_set.size(),
                      "images", c.quiet);
    double loss_sum = 0, lr_now = 0;
    int64_t seen = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      const int64_t global_step = epoch * steps_per_epoch + s;
      lr_now = schedule(global_step);
      for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_now);
      const int64_t begin = s * c.batch_size, n = std::min(c.batch_size, train_set.size() - begin);
      student.forward(train_set.batch(order.narrow(0, begin, n)).first);
      std::vector<MimicryLoss> losses;
      for (auto* h : distilled) losses.push_back(h->last_mimicry());
      auto loss = distillation_objective(losses, c.xent_weight, c.mse_weight);
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        progress.finish();
        TORCH_CHECK(false, "non-finite distillation loss (", value, ") at epoch ", epoch + 1, ", step ", s + 1,
                    " (lr ", lr_now, "); try a lower --lr");
      }
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      loss_sum += value * static_cast<double>(n);
      seen += n;
      char extra[64];
      std::snprintf(extra, sizeof extra, "loss %.4f", loss_sum / static_cast<double>(seen));
      progress.update(seen, extra);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.finish();
    DistillRow row = measure("distill", epoch + 1, true);
    row.train_loss = loss_sum / static_cast<double>(seen);
    result.rows.push_back(row);
    add_table_row(table, row, result.layers, lr_now, seconds);
    write_checkpoint(epoch + 1);
    write_table();
    if (!c.quiet)
      std::fprintf(stderr, "distill %lld/%lld  train loss %.4f  held-out xent %.4f  mse %.5f  agreement %.2f%%\n",
                   (long long)(epoch + 1), (long long)c.epochs, row.train_loss, row.xent, row.mse, row.agreement);
  }
  set_distillation(false);
  for (auto& p : student.module()->parameters()) p.set_requires_grad(true);

  if (c.finetune_epochs > 0) {
    TrainConfig t;
    t.model = preset;
    t.pattern = result.pattern;
    t.settings = settings;
    t.data = c.data;
    t.image_size = size;
    t.train_limit = c.train_limit;
    t.test_limit = c.test_limit;
    t.epochs = c.finetune_epochs;
    t.batch_size = c.batch_size;
    t.eval_batch_size = c.eval_batch_size;
    t.lr = c.finetune_lr;
    t.min_lr = std::min(c.min_lr, c.finetune_lr);
    t.warmup_epochs = 0;
    t.seed = c.seed;
    t.init_weights = ckpt_path;
    t.out = (dir / "finetune").string();
    t.overwrite = c.overwrite;
    t.quiet = c.quiet;
    const TrainResult tr = train(t);
    load_state_dict(*student.module(), read_checkpoint(tr.checkpoint, "model").state);
    DistillRow row = measure("finetune", tr.epochs_done, false);
    row.train_loss = tr.train_loss;
    result.rows.push_back(row);
    add_table_row(table, row, result.layers, std::nan(""), std::nan(""));
    write_table();  // OUT/checkpoint.pth stays the distilled model; the fine-tuned one is OUT/finetune/checkpoint.pth
    result.finetune_dir = t.out;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// CLI

void add_distill_command(CLI::App& app) {
  auto c = std::make_shared<DistillConfig>();
  auto* cmd = app.add_subcommand(
      "distill", "Convert a trained softmax model to Hedgehog: train feature maps to mimic each softmax layer's "
                 "attention (lolcats attention transfer), then optionally fine-tune end to end");
  cmd->add_option("--checkpoint", c->checkpoint, "Teacher: own checkpoint of a model with softmax stages")
      ->required();
  cmd->add_option("--checkpoint-key", c->checkpoint_key, "Which state dict of the checkpoint: model | model_ema")
      ->check(CLI::IsMember({"model", "model_ema"}));
  cmd->add_option("--model", c->model, "Preset (default: the teacher's, from its checkpoint)");
  cmd->add_option("--attn-pattern", c->pattern,
                  "Student pattern: the teacher's with S → H where to convert (default: every S becomes H)");
  cmd->add_option("--attn-opt", c->settings,
                  "Hedgehog setting (repeatable): feature_dim=F, feature_init=kaiming|identity, eps=E");
  cmd->add_option("--data", c->data,
                  "fashion-mnist | DIR with train/ and val/ class folders | synthetic (default: the teacher's training data)");
  cmd->add_option("--image-size", c->image_size, "Input side (0: the teacher's training size)")->capture_default_str();
  cmd->add_option("--train-limit", c->train_limit, "Distil on the first N training images (-1: all; synthetic 1024)")
      ->capture_default_str();
  cmd->add_option("--test-limit", c->test_limit, "Measure on the first N held-out images (-1: all; synthetic 256)")
      ->capture_default_str();
  cmd->add_option("--epochs", c->epochs, "Distillation epochs")->capture_default_str();
  cmd->add_option("--batch-size", c->batch_size, "Images per step")->capture_default_str();
  cmd->add_option("--lr", c->lr, "Peak learning rate of the feature maps (AdamW)")->capture_default_str();
  cmd->add_option("--min-lr", c->min_lr, "Learning rate at the end of the cosine")->capture_default_str();
  cmd->add_option("--weight-decay", c->weight_decay, "AdamW weight decay of the feature maps")->capture_default_str();
  cmd->add_option("--warmup-epochs", c->warmup_epochs, "Linear warm-up in epochs")->capture_default_str();
  cmd->add_option("--xent-weight", c->xent_weight, "Weight of the attention cross-entropy")->capture_default_str();
  cmd->add_option("--mse-weight", c->mse_weight, "Weight of the per-head output MSE")->capture_default_str();
  cmd->add_option("--finetune-epochs", c->finetune_epochs,
                  "Then train the converted model end to end (all parameters) for E epochs (OUT/finetune)")
      ->capture_default_str();
  cmd->add_option("--finetune-lr", c->finetune_lr, "Peak learning rate of the fine-tuning")->capture_default_str();
  cmd->add_option("--seed", c->seed, "Seed (feature-map init, data order)")->capture_default_str();
  cmd->add_option("--out", c->out, "Output directory (checkpoint.pth, metrics.h5, metrics.csv, finetune/)")
      ->required();
  cmd->add_flag("--overwrite", c->overwrite, "Replace a distillation already in --out");
  cmd->add_flag("--quiet", c->quiet, "No progress output");
  cmd->callback([c] {
    const DistillResult r = distill(*c);
    const auto& first = r.rows.front();
    const DistillRow* last = &first;
    for (const auto& row : r.rows)
      if (row.phase == "distill") last = &row;
    std::string layers;
    for (const auto& l : r.layers) layers += (layers.empty() ? "" : ", ") + l;
    std::printf("%s: %s -> %s, distilled layers %s: held-out xent %.4f -> %.4f, mse %.5f -> %.5f, "
                "teacher agreement %.2f%% -> %.2f%%\n",
                c->out.c_str(), r.teacher_pattern.c_str(), r.pattern.c_str(), layers.c_str(), first.xent, last->xent,
                first.mse, last->mse, first.agreement, last->agreement);
    if (!r.finetune_dir.empty())
      std::printf("  fine-tuned: teacher agreement %.2f%%, top-1 %.2f%% (teacher %.2f%%)\n  run        %s\n",
                  r.rows.back().agreement, r.rows.back().student_top1, r.rows.back().teacher_top1,
                  r.finetune_dir.c_str());
    std::printf("  checkpoint %s\n  metrics    %s\n", r.checkpoint.c_str(), r.metrics.c_str());
  });
}

}  // namespace rala
