#include "experiments/rank_merge.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "analysis/h5_store.h"
#include "analysis/probe_recorder.h"
#include "experiments/runtime.h"

namespace rala {

namespace {

namespace fs = std::filesystem;

/// What makes a file a shard, and where it sits.
constexpr const char* kShardAttrs[] = {"shard_index", "shard_count", "image_offset", "image_count"};
/// Root attributes that define the analysis: every shard must have the same (the first difference is reported).
constexpr const char* kIdentityAttrs[] = {"schema_version", "model",    "attn_pattern", "attn_settings", "weights",
                                          "dataset",        "image_size", "tolerance_rule", "protocol",    "dtype",
                                          "batch_size",     "total_images", "shard_count"};
/// Root attributes of the run that may differ between shards; the merged file records the distinct values.
constexpr const char* kRunAttrs[] = {"threads", "device", "device_name", "tool_version", "git_commit", "torch_version"};
/// Rows copied per read (bounds the memory of a merge whatever the shard size).
constexpr int64_t kBlockRows = 256;

struct Shard {
  std::string path;
  std::unique_ptr<h5::File> file;
  int64_t index = 0, count = 0, offset = 0, images = 0;
};

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string text_or_absent(const h5::File& f, const std::string& object, const std::string& name) {
  return f.has_attr(object, name) ? f.attr_text(object, name) : "(absent)";
}

/// One line naming the first difference between shard `a` and shard `b` at `what`.
[[noreturn]] void disagree(const Shard& a, const Shard& b, const std::string& what, const std::string& va,
                           const std::string& vb) {
  TORCH_CHECK(false, "rank-merge: the shards disagree on ", what, ": ", quoted(a.path), " has ", quoted(va), ", ",
              quoted(b.path), " has ", quoted(vb),
              " (a merge joins the shards of one analysis: the same model, pattern, settings, weights, data, image "
              "size, probes, tolerance, protocol and batch size)");
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

/// The attributes of `object` as name → text.
std::map<std::string, std::string> attrs_of(const h5::File& f, const std::string& object) {
  std::map<std::string, std::string> out;
  for (const auto& name : f.attr_names(object)) out[name] = f.attr_text(object, name);
  return out;
}

void compare_attrs(const Shard& a, const Shard& b, const std::string& object) {
  const auto x = attrs_of(*a.file, object), y = attrs_of(*b.file, object);
  std::set<std::string> names;
  for (const auto& [k, _] : x) names.insert(k);
  for (const auto& [k, _] : y) names.insert(k);
  for (const auto& n : names) {
    const auto ix = x.find(n), iy = y.find(n);
    const std::string vx = ix == x.end() ? "(absent)" : ix->second, vy = iy == y.end() ? "(absent)" : iy->second;
    if (vx != vy) disagree(a, b, "attribute " + n + " of " + object, vx, vy);
  }
}

std::string dtype_and_row_shape(const h5::File& f, const std::string& dataset) {
  const auto shape = f.shape(dataset);
  std::string s = c10::toString(f.read_rows(dataset, 0, 0).scalar_type());
  s += " rows of (";
  for (size_t i = 1; i < shape.size(); ++i) s += (i > 1 ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

/// Everything but the rows: layers, probes, datasets, their attributes, dtypes and row shapes.
void compare_structure(const Shard& a, const Shard& b) {
  const bool la = a.file->is_group("/layers"), lb = b.file->is_group("/layers");
  if (la != lb) disagree(a, b, "/layers", la ? "present" : "absent", lb ? "present" : "absent");
  if (!la) return;
  const auto layers_a = a.file->list("/layers"), layers_b = b.file->list("/layers");
  if (layers_a != layers_b) disagree(a, b, "the layers", join(layers_a), join(layers_b));
  for (const auto& layer : layers_a) {
    const std::string lg = "/layers/" + layer;
    compare_attrs(a, b, lg);
    const auto probes_a = a.file->list(lg), probes_b = b.file->list(lg);
    if (probes_a != probes_b) disagree(a, b, "the probes of layer " + layer, join(probes_a), join(probes_b));
    for (const auto& probe : probes_a) {
      const std::string g = lg + "/" + probe;
      compare_attrs(a, b, g);
      const auto ds_a = a.file->list(g), ds_b = b.file->list(g);
      if (ds_a != ds_b) disagree(a, b, "the datasets of " + g, join(ds_a), join(ds_b));
      for (const auto& d : ds_a) {
        const std::string path = g + "/" + d;
        const auto ta = dtype_and_row_shape(*a.file, path), tb = dtype_and_row_shape(*b.file, path);
        if (ta != tb) disagree(a, b, path, ta, tb);
        compare_attrs(a, b, path);
      }
    }
  }
}

/// Every dataset under /layers (in a stable order).
std::vector<std::string> layer_datasets(const h5::File& f) {
  std::vector<std::string> out;
  if (!f.is_group("/layers")) return out;
  for (const auto& layer : f.list("/layers"))
    for (const auto& probe : f.list("/layers/" + layer))
      for (const auto& d : f.list("/layers/" + layer + "/" + probe))
        out.push_back("/layers/" + layer + "/" + probe + "/" + d);
  return out;
}

}  // namespace

RankSummary merge_rank_shards(const std::vector<std::string>& paths, const std::string& out, bool overwrite,
                              bool quiet) {
  TORCH_CHECK(!paths.empty(), "rank-merge: no shard files given");
  TORCH_CHECK(!out.empty(), "rank-merge: --out F.h5 is required");
  TORCH_CHECK(overwrite || !fs::exists(out), "rank-merge: ", quoted(out), " exists; pass --overwrite to replace it");
  std::vector<Shard> shards;
  for (const auto& p : paths) {
    TORCH_CHECK(fs::absolute(p).lexically_normal() != fs::absolute(out).lexically_normal(), "rank-merge: ", quoted(p),
                " is both a shard and --out");
    Shard s;
    s.path = p;
    s.file = std::make_unique<h5::File>(p, h5::Mode::read);
    for (const char* a : kShardAttrs)
      TORCH_CHECK(s.file->has_attr("/", a), "rank-merge: ", quoted(p), " is not a shard of a rank analysis (no ", a,
                  " attribute; shards are written by rala rank --shard K/N)");
    s.index = s.file->attr_int("/", "shard_index");
    s.count = s.file->attr_int("/", "shard_count");
    s.offset = s.file->attr_int("/", "image_offset");
    s.images = s.file->attr_int("/", "image_count");
    shards.push_back(std::move(s));
  }
  std::stable_sort(shards.begin(), shards.end(), [](const Shard& a, const Shard& b) { return a.index < b.index; });
  const Shard& first = shards.front();
  // One analysis: the same shard count, every shard once, the same identity attributes and structure.
  for (const auto& s : shards)
    if (s.count != first.count)
      disagree(first, s, "shard_count", std::to_string(first.count), std::to_string(s.count));
  for (size_t i = 1; i < shards.size(); ++i)
    TORCH_CHECK(shards[i].index != shards[i - 1].index, "rank-merge: shard ", shards[i].index, "/", first.count,
                " is given twice: ", quoted(shards[i - 1].path), " and ", quoted(shards[i].path));
  std::vector<std::string> missing;
  for (int64_t k = 0, j = 0; k < first.count; ++k) {
    while (j < static_cast<int64_t>(shards.size()) && shards[j].index < k) ++j;
    if (j >= static_cast<int64_t>(shards.size()) || shards[j].index != k) missing.push_back(std::to_string(k));
  }
  TORCH_CHECK(missing.empty(), "rank-merge: shard", missing.size() == 1 ? " " : "s ", join(missing), " of ",
              first.count, " ", missing.size() == 1 ? "is" : "are", " missing (every shard 0..", first.count - 1,
              " must be given once)");
  for (size_t i = 1; i < shards.size(); ++i) {
    for (const char* a : kIdentityAttrs) {
      const auto va = text_or_absent(*first.file, "/", a), vb = text_or_absent(*shards[i].file, "/", a);
      if (va != vb) disagree(first, shards[i], a, va, vb);
    }
    compare_structure(first, shards[i]);
  }
  // The images: contiguous blocks that tile [0, total), every name once.
  const int64_t total = first.file->attr_int("/", "total_images");
  int64_t expected = 0;
  std::set<std::string> seen;
  const auto datasets = layer_datasets(*first.file);
  for (const auto& s : shards) {
    TORCH_CHECK(s.offset == expected, "rank-merge: shard ", s.index, "/", s.count, " (", quoted(s.path),
                ") holds images from ", s.offset, ", expected from ", expected,
                " (shards of different --num-images or --batch-size?)");
    const auto names = s.file->read_strings("/images/names");
    TORCH_CHECK(static_cast<int64_t>(names.size()) == s.images, "rank-merge: ", quoted(s.path), " holds ",
                names.size(), " image names, its image_count is ", s.images);
    for (const auto& n : names)
      TORCH_CHECK(seen.insert(n).second, "rank-merge: image ", quoted(n), " is in more than one shard (again in ",
                  quoted(s.path), ")");
    for (const auto& d : datasets) {
      const auto rows = s.file->shape(d).at(0);
      TORCH_CHECK(rows == s.images, "rank-merge: ", quoted(s.path), " has ", rows, " rows in ", d, ", expected ",
                  s.images, " (one per image): the shard is incomplete");
    }
    expected += s.images;
  }
  TORCH_CHECK(expected == total, "rank-merge: the shards hold ", expected, " images, the analysis has ", total);

  h5::AtomicPath target(out);  // nothing at `out` unless everything below succeeds
  {
    h5::File dst(target.partial(), h5::Mode::truncate);
    // Root attributes: the analysis's (shard 0's), the run's (distinct values of all shards), this merge's provenance.
    std::set<std::string> skip(std::begin(kShardAttrs), std::end(kShardAttrs));
    for (const char* a : kRunAttrs) skip.insert(a);
    for (const auto& name : first.file->attr_names("/"))
      if (!skip.count(name)) dst.copy_attr(*first.file, "/", name, "/");
    for (const char* a : kRunAttrs) {
      std::vector<std::string> values;
      for (const auto& s : shards)
        if (s.file->has_attr("/", a)) {
          const auto v = s.file->attr_text("/", a);
          if (std::find(values.begin(), values.end(), v) == values.end()) values.push_back(v);
        }
      if (values.size() == 1)
        dst.copy_attr(*first.file, "/", a, "/");
      else if (!values.empty())
        dst.set_attr("/", a, join(values));
    }
    dst.set_attr("/", "num_images", total);
    dst.set_attr("/", "created_utc", utc_now());
    dst.set_attr("/", "command_line", command_line());
    std::vector<std::string> sources;
    for (const auto& s : shards) sources.push_back(fs::path(s.path).filename().string());
    dst.set_attr("/", "merged_from", join(sources));
    // Groups and empty extendible datasets with shard 0's attributes (the same chunking as the recorder's).
    if (first.file->is_group("/layers")) {
      for (const auto& layer : first.file->list("/layers")) {
        const std::string lg = "/layers/" + layer;
        dst.create_group(lg);
        for (const auto& a : first.file->attr_names(lg)) dst.copy_attr(*first.file, lg, a, lg);
        for (const auto& probe : first.file->list(lg)) {
          const std::string g = lg + "/" + probe;
          dst.create_group(g);
          for (const auto& a : first.file->attr_names(g)) dst.copy_attr(*first.file, g, a, g);
        }
      }
    }
    for (const auto& d : datasets) {
      const auto shape = first.file->shape(d);
      const auto dtype = first.file->read_rows(d, 0, 0).scalar_type();
      // As the recorder stores them: float columns uncompressed (gzip gains ≈ 4 % on them), integer ones deflated.
      dst.create_extendible(d, dtype, std::vector<int64_t>(shape.begin() + 1, shape.end()), 64,
                            /*deflate=*/!c10::isFloatingType(dtype));
      for (const auto& a : first.file->attr_names(d)) dst.copy_attr(*first.file, d, a, d);
    }
    // The rows, shard after shard.
    std::vector<std::string> names;
    std::vector<torch::Tensor> labels;
    for (const auto& s : shards) {
      for (const auto& d : datasets)
        for (int64_t start = 0; start < s.images; start += kBlockRows)
          dst.append(d, s.file->read_rows(d, start, std::min(kBlockRows, s.images - start)));
      const auto shard_names = s.file->read_strings("/images/names");
      names.insert(names.end(), shard_names.begin(), shard_names.end());
      labels.push_back(s.file->read("/images/labels").to(torch::kInt64));
      if (!quiet)
        std::fprintf(stderr, "rank-merge: shard %lld/%lld %s: images %lld-%lld (%lld) appended\n",
                     static_cast<long long>(s.index), static_cast<long long>(s.count), quoted(s.path).c_str(),
                     static_cast<long long>(s.offset), static_cast<long long>(s.offset + s.images - 1),
                     static_cast<long long>(s.images));
    }
    dst.write_strings("/images/names", names);
    dst.write("/images/labels", torch::cat(labels));
  }
  target.commit();
  h5::File merged(out, h5::Mode::read);
  return summarize_results(merged);
}

void add_rank_merge_command(CLI::App& app) {
  struct Args {
    std::vector<std::string> shards;
    std::string out;
    bool overwrite = false, quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("rank-merge",
                                 "Join the shards of a rank analysis (rala rank --shard K/N) into one results file");
  cmd->add_option("shards", a->shards, "Shard files (<model>_<pattern>.shard-K-of-N.h5), any order")->required();
  cmd->add_option("--out", a->out, "The merged results file (written atomically)")->required();
  cmd->add_flag("--overwrite", a->overwrite, "Replace --out if it exists");
  cmd->add_flag("--quiet", a->quiet, "No progress lines");
  cmd->callback([a] {
    const auto summary = merge_rank_shards(a->shards, a->out, a->overwrite, a->quiet);
    std::string pattern;
    {
      h5::File f(a->out, h5::Mode::read);
      pattern = f.has_attr("/", "attn_pattern") ? f.attr_string("/", "attn_pattern") : "merged";
    }
    print_rank_table(std::cout, {pattern}, {summary});
    std::cout << "wrote " << a->out << " (" << a->shards.size() << " shards)\n";
  });
}

}  // namespace rala
