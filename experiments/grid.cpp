#include "experiments/grid.h"

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "analysis/probe_recorder.h"
#include "attention_variants/registry.h"
#include "attention_variants/text.h"
#include "models/presets.h"

namespace rala {

/// The shipped grids (experiments/grids/*.yaml), compiled in by CMake (grid_presets.cpp, generated).
const std::vector<std::pair<std::string, std::string>>& shipped_grids();

namespace {

using json = nlohmann::json;

/// One-line error "FILE:LINE: key 'K': message".
struct Where {
  std::string file;
  [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& message) const {
    const auto mark = at.Mark();
    const std::string line = mark.line >= 0 ? std::to_string(mark.line + 1) : "?";
    // Keys, names and values come from the file: control characters in them are escaped (one line, always).
    TORCH_CHECK(false, one_line(file), ":", line, ": ", key.empty() ? std::string() : "key '" + one_line(key) + "': ",
                one_line(message));
  }
};

std::string kind_of(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
    case YAML::NodeType::Null: return "nothing";
    default: return "an undefined node";
  }
}

int64_t as_int(const Where& w, const YAML::Node& n, const std::string& key) {
  int64_t v = 0;
  if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) w.fail(n, key, "expected an integer, got " + kind_of(n));
  return v;
}

double as_double(const Where& w, const YAML::Node& n, const std::string& key) {
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v))
    w.fail(n, key, "expected a finite number, got " + kind_of(n));
  return v;
}

bool as_bool(const Where& w, const YAML::Node& n, const std::string& key) {
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) w.fail(n, key, "expected true or false, got " + kind_of(n));
  return v;
}

std::string as_string(const Where& w, const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) w.fail(n, key, "expected a text value, got " + kind_of(n));
  return n.Scalar();
}

/// Checks that a mapping holds only `allowed` keys; returns it (a node is a handle: return it by value).
YAML::Node expect_map(const Where& w, const YAML::Node& n, const std::string& key,
                             const std::set<std::string>& allowed) {
  if (!n.IsMap()) w.fail(n, key, "expected a mapping, got " + kind_of(n));
  for (const auto& kv : n) {
    const auto k = kv.first.Scalar();
    if (!allowed.count(k)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      w.fail(kv.first, k, "unknown key" + (key.empty() ? std::string() : " in '" + key + "'") + " (expected one of: " +
                              list + ")");
    }
  }
  return n;
}

/// Settings as "key=value" strings: a list of such strings, or a mapping {key: value}.
std::vector<std::string> as_settings(const Where& w, const YAML::Node& n, const std::string& key) {
  std::vector<std::string> out;
  if (n.IsNull()) return out;
  if (n.IsSequence()) {
    for (const auto& s : n) {
      const auto text = as_string(w, s, key);
      if (text.find('=') == std::string::npos || text.front() == '=')
        w.fail(s, key, "setting '" + text + "' must have the form key=value or variant.key=value");
      out.push_back(text);
    }
  } else if (n.IsMap()) {
    for (const auto& kv : n) out.push_back(kv.first.Scalar() + "=" + as_string(w, kv.second, key));
  } else {
    w.fail(n, key, "expected a list of key=value settings or a mapping, got " + kind_of(n));
  }
  return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

/// The `train` mapping: every stored TrainConfig field except the ones a grid sets elsewhere, typed as the default.
void apply_train(const Where& w, const YAML::Node& n, TrainConfig& c) {
  static const std::set<std::string> elsewhere = {"model", "pattern", "settings", "data", "image_size", "seed"};
  auto j = json::parse(c.to_json());
  std::set<std::string> allowed;
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!elsewhere.count(it.key())) allowed.insert(it.key());
  if (!n.IsMap()) w.fail(n, "train", "expected a mapping of training settings, got " + kind_of(n));
  for (const auto& kv : n) {
    const auto k = kv.first.Scalar();
    if (elsewhere.count(k))
      w.fail(kv.first, k, k == "seed" ? "seeds are set by the top-level 'seeds'"
                                      : "set at the top level (model, data, image_size) or per configuration "
                                        "(pattern, settings), not under 'train'");
    if (!allowed.count(k)) w.fail(kv.first, k, "unknown training setting (expected one of: " + join({allowed.begin(), allowed.end()}, ", ") + ")");
    auto& slot = j[k];
    if (slot.is_boolean()) slot = as_bool(w, kv.second, k);
    else if (slot.is_number_integer()) slot = as_int(w, kv.second, k);
    else if (slot.is_number()) slot = as_double(w, kv.second, k);
    else slot = as_string(w, kv.second, k);
  }
  c.from_json(j.dump());
}

}  // namespace

std::string AblationGrid::config_spec(size_t i) const {
  const auto& c = configs.at(i);
  json j = {{"pattern", c.pattern},
            {"settings", c.settings},
            {"train", json::parse(train.to_json())},
            {"seeds", seeds},
            {"analysis",
             {{"probes", analysis.probes},
              {"images", analysis.images},
              {"summary_stages", analysis.summary_stages},
              {"time_inference", analysis.time_inference}}}};
  return j.dump();
}

std::vector<std::string> AblationGrid::runs() const {
  std::vector<std::string> out;
  for (const auto& c : configs)
    for (auto s : seeds)
      out.push_back(c.name + " seed " + std::to_string(s) + ": pattern " + c.pattern +
                    (c.settings.empty() ? "" : ", settings " + join(c.settings, " ")));
  return out;
}

AblationGrid parse_grid(const std::string& text, const std::string& file) {
  const Where w{file};
  YAML::Node loaded;
  try {
    loaded = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, file, ":", e.mark.line + 1, ": not valid YAML: ", one_line(e.msg));
  }
  const YAML::Node root = loaded;  // const: looking up a missing key never inserts it
  if (!root.IsMap()) w.fail(root, "", "a grid is a mapping of keys (name, model, data, train, configs, …), got " + kind_of(root));
  expect_map(w, root, "",
             {"name", "description", "model", "data", "image_size", "train", "seeds", "jobs", "analysis", "configs",
              "product"});
  AblationGrid g;
  g.source = file;
  g.text = text;
  g.name = root["name"] ? as_string(w, root["name"], "name") : std::string();
  if (root["model"]) g.train.model = as_string(w, root["model"], "model");
  if (root["data"]) g.train.data = as_string(w, root["data"], "data");
  if (root["image_size"]) {
    g.train.image_size = as_int(w, root["image_size"], "image_size");
    if (g.train.image_size < 0) w.fail(root["image_size"], "image_size", "must be >= 0 (0 = the data's default)");
  }
  const auto model_names = model_preset_names();
  if (std::find(model_names.begin(), model_names.end(), g.train.model) == model_names.end())
    w.fail(root["model"] ? root["model"] : root, "model",
           "unknown model preset '" + g.train.model + "' (expected one of: " + join(model_names, ", ") + ")");
  if (root["train"]) apply_train(w, root["train"], g.train);
  if (root["seeds"]) {
    const auto& s = root["seeds"];
    if (s.IsSequence()) {
      g.seeds.clear();
      std::set<int64_t> seen;
      for (const auto& x : s) {
        const auto v = as_int(w, x, "seeds");
        if (v < 0 || !seen.insert(v).second) w.fail(x, "seeds", "seeds must be distinct and >= 0");
        g.seeds.push_back(v);
      }
      if (g.seeds.empty()) w.fail(s, "seeds", "the list of seeds is empty");
    } else {
      const auto n = as_int(w, s, "seeds");
      if (n <= 0) w.fail(s, "seeds", "expected a count > 0 or a list of seeds, got " + std::to_string(n));
      g.seeds.clear();
      for (int64_t i = 0; i < n; ++i) g.seeds.push_back(i);
    }
  }
  if (root["jobs"]) {
    g.jobs = as_int(w, root["jobs"], "jobs");
    if (g.jobs < 0) w.fail(root["jobs"], "jobs", "must be >= 0 (0 = one per core)");
  }
  if (root["analysis"]) {
    const YAML::Node a = expect_map(w, root["analysis"], "analysis", {"probes", "images", "summary_stages", "time_inference"});
    if (a["probes"]) {
      if (!a["probes"].IsSequence()) w.fail(a["probes"], "probes", "expected a list of probe names");
      g.analysis.probes.clear();
      for (const auto& p : a["probes"]) g.analysis.probes.push_back(as_string(w, p, "probes"));
      RecorderOptions check;
      try {
        parse_probe_list(join(g.analysis.probes, ","), check);
      } catch (const c10::Error& e) {
        w.fail(a["probes"], "probes", e.what_without_backtrace());
      }
    }
    if (a["images"]) {
      g.analysis.images = as_int(w, a["images"], "images");
      if (g.analysis.images <= 0) w.fail(a["images"], "images", "must be > 0");
    }
    if (a["summary_stages"]) {
      if (!a["summary_stages"].IsSequence()) w.fail(a["summary_stages"], "summary_stages", "expected a list of stage numbers");
      g.analysis.summary_stages.clear();
      for (const auto& s : a["summary_stages"]) {
        const auto v = as_int(w, s, "summary_stages");
        if (v < 0) w.fail(s, "summary_stages", "stage numbers are >= 0");
        g.analysis.summary_stages.push_back(v);
      }
      if (g.analysis.summary_stages.empty()) w.fail(a["summary_stages"], "summary_stages", "the list is empty");
    }
    if (a["time_inference"]) g.analysis.time_inference = as_bool(w, a["time_inference"], "time_inference");
  }

  // Configurations: listed, then the product of patterns × settings.
  std::map<std::string, YAML::Node> where;  // name → node, for duplicate messages
  auto add = [&](AblationConfig c, const YAML::Node& at) {
    if (c.name.empty()) c.name = c.pattern + (c.settings.empty() ? "" : " " + join(c.settings, " "));
    if (where.count(c.name))
      w.fail(at, "name", "duplicate configuration name '" + c.name + "' (first at line " +
                             std::to_string(where[c.name].Mark().line + 1) + ")");
    try {  // validates the pattern and the settings against the model's stages, without building the model
      AnyModel::check_pattern_and_settings(g.train.model, c.pattern, c.settings);
    } catch (const c10::Error& e) {
      w.fail(at, "", "configuration '" + one_line(c.name) + "': " + e.what_without_backtrace());
    }
    where[c.name] = at;
    g.configs.push_back(std::move(c));
  };
  if (root["configs"]) {
    const auto& list = root["configs"];
    if (!list.IsSequence()) w.fail(list, "configs", "expected a list of configurations");
    for (const auto& item : list) {
      expect_map(w, item, "configs", {"name", "pattern", "settings"});
      if (!item["pattern"]) w.fail(item, "pattern", "every configuration needs a pattern (letters or names)");
      AblationConfig c;
      c.pattern = as_string(w, item["pattern"], "pattern");
      if (item["name"]) c.name = as_string(w, item["name"], "name");
      if (item["settings"]) c.settings = as_settings(w, item["settings"], "settings");
      add(std::move(c), item);
    }
  }
  if (root["product"]) {
    const YAML::Node p = expect_map(w, root["product"], "product", {"patterns", "settings"});
    if (!p["patterns"] || !p["patterns"].IsSequence() || p["patterns"].size() == 0)
      w.fail(p["patterns"] ? p["patterns"] : p, "patterns", "the product needs a non-empty list of patterns");
    std::vector<std::pair<std::string, std::vector<std::string>>> variants_of_settings;  // (label, settings)
    if (p["settings"]) {
      if (!p["settings"].IsSequence() || p["settings"].size() == 0)
        w.fail(p["settings"], "settings", "expected a non-empty list; each item a list of key=value, a mapping, or "
                                          "{name: …, set: …}");
      for (const auto& s : p["settings"]) {
        if (s.IsMap() && s["set"]) {
          expect_map(w, s, "settings", {"name", "set"});
          auto set = as_settings(w, s["set"], "set");
          variants_of_settings.emplace_back(s["name"] ? as_string(w, s["name"], "name") : join(set, " "), set);
        } else {
          auto set = as_settings(w, s, "settings");
          variants_of_settings.emplace_back(join(set, " "), set);
        }
      }
    } else {
      variants_of_settings.emplace_back("", std::vector<std::string>{});
    }
    for (const auto& pat : p["patterns"]) {
      const auto pattern = as_string(w, pat, "patterns");
      for (const auto& [label, set] : variants_of_settings)
        add({pattern + (label.empty() ? "" : " " + label), pattern, set}, pat);
    }
  }
  if (g.configs.empty()) w.fail(root, "configs", "the grid has no configurations (give 'configs' or 'product')");

  std::ostringstream d;
  d << g.train.model << " on " << g.train.data << ", "
    << (g.train.train_limit < 0 ? std::string("all") : std::to_string(g.train.train_limit)) << " training images, "
    << (g.train.test_limit < 0 ? std::string("all") : std::to_string(g.train.test_limit)) << " test images, "
    << g.train.epochs << " epochs, " << (g.train.image_size > 0 ? std::to_string(g.train.image_size) + " px" : "default size")
    << ", batch " << g.train.batch_size;
  g.description = root["description"] ? as_string(w, root["description"], "description") : d.str();
  if (g.name.empty()) g.name = file;
  return g;
}

AblationGrid load_grid(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "cannot read grid file '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  TORCH_CHECK(ss.str().size() < (1u << 20), "grid file '", path, "' is larger than 1 MiB; a grid is a short YAML file");
  return parse_grid(ss.str(), path);
}

std::vector<std::string> grid_preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : shipped_grids()) names.push_back(name);
  return names;
}

std::string grid_preset_text(const std::string& name) {
  for (const auto& [n, text] : shipped_grids())
    if (n == name) return text;
  TORCH_CHECK(false, "unknown ablation preset '", name, "' (expected one of: ", join(grid_preset_names(), ", "),
              "; or give --grid FILE)");
}

AblationGrid grid_preset(const std::string& name) {
  auto g = parse_grid(grid_preset_text(name), "experiments/grids/" + name + ".yaml");
  g.source = "preset:" + name;
  return g;
}

}  // namespace rala
