// Ablation grids as files: the shipped grids parse and expand; listed and product configurations; every mistake is
// one line naming the file, the line and the key, before anything runs; a changed grid under an existing DIR is
// refused naming the configurations that differ, and --overwrite retrains only those.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "analysis/h5_store.h"
#include "attention_variants/registry.h"
#include "experiments/ablate.h"
#include "experiments/grid.h"
#include "tests/test_util.h"

namespace rala {
namespace {

namespace fs = std::filesystem;


TEST(Grid, ShippedGridsParseAndExpand) {
  const auto names = grid_preset_names();
  for (const char* n : {"quick", "full", "tiny", "every_variant"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  auto quick = grid_preset("quick");
  EXPECT_EQ(quick.configs.size(), 11u);
  EXPECT_EQ(quick.seeds, std::vector<int64_t>{0});
  EXPECT_EQ(quick.train.train_limit, 8192);
  EXPECT_EQ(quick.train.epochs, 4);
  EXPECT_DOUBLE_EQ(quick.train.warmup_epochs, 0.5);
  EXPECT_EQ(quick.configs[7].name, "RRSS no_gate");
  EXPECT_EQ(quick.configs[7].settings, std::vector<std::string>{"rala.gate=0"});
  EXPECT_EQ(grid_preset("full").seeds, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(grid_preset("full").analysis.images, 256);
  // every_variant holds every variant of the registry.
  auto every = grid_preset("every_variant");
  std::set<Variant> seen;
  for (const auto& c : every.configs)
    for (auto v : parse_pattern(c.pattern, 4)) seen.insert(v);
  for (const auto& info : kVariants) EXPECT_TRUE(seen.count(info.variant)) << info.name << " is not in every_variant";
}

TEST(Grid, ListedAndProductConfigurations) {
  auto g = parse_grid(R"(
name: mine
model: ravlt_micro
data: synthetic
image_size: 32
train: {epochs: 30, lr: 1.0e-3, augment: false}
seeds: [0, 4]
analysis: {probes: [kv_buffer], images: 16, summary_stages: [1], time_inference: false}
configs:
  - {pattern: RRSS}
  - name: custom
    pattern: "rala,linear,softmax,softmax"
    settings: {rala.alpha: 0}
product:
  patterns: [LLSS, CCSS]
  settings:
    - []
    - [softmax.gate=0]
    - {name: no-lepe, set: {softmax.lepe: 0}}
)",
                      "mine.yaml");
  EXPECT_EQ(g.name, "mine");
  EXPECT_EQ(g.train.data, "synthetic");
  EXPECT_EQ(g.train.image_size, 32);
  EXPECT_EQ(g.train.epochs, 30);
  EXPECT_DOUBLE_EQ(g.train.lr, 1e-3);
  EXPECT_FALSE(g.train.augment);
  EXPECT_EQ(g.train.batch_size, TrainConfig().batch_size);  // rala train's default
  EXPECT_EQ(g.seeds, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(g.analysis.probes, std::vector<std::string>{"kv_buffer"});
  EXPECT_EQ(g.analysis.summary_stages, std::vector<int64_t>{1});
  EXPECT_FALSE(g.analysis.time_inference);
  std::vector<std::string> names;
  for (const auto& c : g.configs) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"RRSS", "custom", "LLSS", "LLSS softmax.gate=0", "LLSS no-lepe", "CCSS",
                                             "CCSS softmax.gate=0", "CCSS no-lepe"}));
  EXPECT_EQ(g.configs[1].settings, std::vector<std::string>{"rala.alpha=0"});
  EXPECT_EQ(g.runs().size(), 16u);
  EXPECT_EQ(g.runs()[1], "RRSS seed 4: pattern RRSS");
  // A spec changes with anything that changes how a configuration runs.
  auto h = g;
  h.train.epochs = 31;
  EXPECT_NE(g.config_spec(0), h.config_spec(0));
  EXPECT_EQ(g.config_spec(0), parse_grid(g.text, "again.yaml").config_spec(0));
}

TEST(Grid, EveryMistakeIsOneLineWithFileLineAndKey) {
  struct Case {
    std::string text, expected;
  };
  const std::string head = "model: ravlt_micro\n";
  const std::vector<Case> cases = {
      {head + "epochs: 3\nconfigs: [{pattern: RRSS}]\n", "g.yaml:2: key 'epochs': unknown key (expected one of:"},
      {head + "train: {epoch: 3}\nconfigs: [{pattern: RRSS}]\n", "g.yaml:2: key 'epoch': unknown training setting"},
      {head + "train: {epochs: four}\nconfigs: [{pattern: RRSS}]\n", "g.yaml:2: key 'epochs': expected an integer, got 'four'"},
      {head + "train: {lr: [1]}\nconfigs: [{pattern: RRSS}]\n", "key 'lr': expected a finite number, got a list"},
      {head + "train: {seed: 3}\nconfigs: [{pattern: RRSS}]\n", "key 'seed': seeds are set by the top-level 'seeds'"},
      {head + "configs:\n  - {pattern: RRQS}\n", "g.yaml:3: configuration 'RRQS': unknown attention pattern letter 'Q'"},
      {head + "configs:\n  - {pattern: \"rala,rala,performer,softmax\"}\n", "unknown variant 'performer'"},
      {head + "configs:\n  - {pattern: RRSS, settings: [chnuk=4]}\n", "g.yaml:3: configuration 'RRSS chnuk=4': unknown attention setting 'chnuk'"},
      {head + "configs:\n  - {pattern: RRSS, settings: [chunk=4]}\n", "'chunk' is a setting of transnormer_diag"},
      {head + "configs:\n  - {pattern: LLSS, settings: [alpha=0]}\n", "applies to no layer of pattern 'LLSS'"},
      {head + "configs:\n  - {pattern: RRSS, settings: [alpha=2]}\n", "setting 'alpha' of attention variant rala expects a boolean"},
      {head + "configs:\n  - {pattern: RRSS}\n  - {pattern: LLSS}\n  - {name: RRSS, pattern: CCSS}\n",
       "g.yaml:5: key 'name': duplicate configuration name 'RRSS' (first at line 3)"},
      {head + "product: {patterns: []}\n", "g.yaml:2: key 'patterns': the product needs a non-empty list of patterns"},
      {head + "product: {patterns: [RRSS], settings: []}\n", "key 'settings': expected a non-empty list"},
      {head + "seeds: []\nconfigs: [{pattern: RRSS}]\n", "g.yaml:2: key 'seeds': the list of seeds is empty"},
      {head + "seeds: 0\nconfigs: [{pattern: RRSS}]\n", "key 'seeds': expected a count > 0"},
      {head + "analysis: {probes: [normalizer_z]}\nconfigs: [{pattern: RRSS}]\n", "key 'probes': probe 'normalizer_z' is not"},
      {head + "analysis: {images: 0}\nconfigs: [{pattern: RRSS}]\n", "key 'images': must be > 0"},
      {head + "name: x\n", "key 'configs': the grid has no configurations"},
      {"model: ravlt_xl\nconfigs: [{pattern: RRSS}]\n", "g.yaml:1: key 'model': unknown model preset 'ravlt_xl'"},
      {head + "configs:\n  - {name: a}\n", "g.yaml:3: key 'pattern': every configuration needs a pattern"},
      {head + "configs:\n  - {pattern: RRSS, setting: [alpha=0]}\n", "g.yaml:3: key 'setting': unknown key in 'configs'"},
      {head + "configs: [{pattern: RRSS, settings: [alpha]}]\n", "must have the form key=value"},
      {head + "configs: [{pattern: RRSS}\n", "g.yaml:3: not valid YAML"},
      {"- a\n- b\n", "g.yaml:1: a grid is a mapping of keys"},
  };
  // Found by fuzz/grid_fuzz.cpp: yaml-cpp quotes the offending character raw, and a pattern letter may be a control
  // character; both used to break the message over lines. Control characters are now escaped (\r, \xNN).
  std::ifstream found(std::string(RALA_TEST_DATA) + "/fuzz/grid/yaml_error_quotes_control_chars.yaml", std::ios::binary);
  ASSERT_TRUE(found.good());
  const std::string found_text((std::istreambuf_iterator<char>(found)), std::istreambuf_iterator<char>());
  const std::vector<Case> found_cases = {
      {found_text, "g.yaml:21: not valid YAML"},
      {head + "configs:\n  - {pattern: \"H\\rSS\"}\n", "unknown attention pattern letter '\\r'"},
      {head + "configs:\n  - {pattern: \"D\\r,T,Vn,S\"}\n", "attention pattern 'D\\r,T,Vn,S': unknown variant 'Vn'"},
      {head + "configs:\n  - {pattern: RRSS, settings: [\"al\\npha=0\"]}\n", "unknown attention setting 'al\\npha'"},
  };
  for (const auto& c : found_cases) {
    auto msg = test::error_message([&] { parse_grid(c.text, "g.yaml"); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << "expected: " << c.expected << "\ngot: " << msg;
    EXPECT_EQ(msg.find_first_of("\n\r\v\f"), std::string::npos) << msg;
  }
  for (const auto& c : cases) {
    auto msg = test::error_message([&] { parse_grid(c.text, "g.yaml"); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << "grid:\n" << c.text << "expected: " << c.expected << "\ngot: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

std::string write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path.string();
}

TEST(Grid, CliDryRunAndChangedGridUnderAnExistingDirectory) {
  test::TempDir tmp("rala_grid");
  const std::string grid_text = R"(name: tiny-synthetic
model: ravlt_micro
data: synthetic
image_size: 28
train: {train_limit: 64, test_limit: 32, epochs: 1, batch_size: 32, warmup_epochs: 0}
analysis: {probes: [kv_buffer, output], images: 4, summary_stages: [0, 1], time_inference: false}
configs:
  - {name: a, pattern: RRSS}
  - {name: b, pattern: LLSS}
)";
  const auto grid = write_file(tmp.path / "g.yaml", grid_text);
  const auto out = (tmp.path / "abl").string();
  const std::string bin = std::string(RALA_BINARY) + " ablate ";
  int status = 0;
  auto log = test::run_command(bin + "--grid " + grid + " --dry-run", &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_NE(log.find("a seed 0: pattern RRSS\nb seed 0: pattern LLSS\n2 runs"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out));

  log = test::run_command(bin + "--grid " + grid + " --quiet --out " + out, &status);
  ASSERT_EQ(status, 0) << log;
  h5::File f((fs::path(out) / "ablation.h5").string(), h5::Mode::read);
  auto t = ResultsTable::read_h5(f);
  ASSERT_EQ(t.rows(), 2);
  EXPECT_TRUE(t.has_column("output_effective_rank"));
  EXPECT_FALSE(t.has_column("output_gated_rank"));  // only the grid's probes
  EXPECT_TRUE(std::isnan(t.column("images_per_s").numbers[0]));  // time_inference: false
  EXPECT_EQ(f.attr_ints("/", "summary_stages"), (std::vector<int64_t>{0, 1}));

  // The same grid again resumes: nothing is retrained.
  const auto ckpt_a = fs::path(out) / "runs" / "a_seed0" / "checkpoint.pth";
  const auto ckpt_b = fs::path(out) / "runs" / "b_seed0" / "checkpoint.pth";
  const auto time_a = fs::last_write_time(ckpt_a), time_b = fs::last_write_time(ckpt_b);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  log = test::run_command(bin + "--grid " + grid + " --quiet --out " + out, &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_EQ(fs::last_write_time(ckpt_a), time_a);

  // A changed configuration (b's pattern) and an added one: refused, naming them; nothing touched.
  std::string changed = grid_text;
  changed.replace(changed.find("{name: b, pattern: LLSS}"), 24, "{name: b, pattern: CCSS}\n  - {name: c, pattern: FFSS}");
  const auto grid2 = write_file(tmp.path / "g2.yaml", changed);
  log = test::run_command(bin + "--grid " + grid2 + " --quiet --out " + out, &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(log.find("was made by a different grid (changed: 'b'; added: 'c'); use --overwrite"), std::string::npos)
      << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_EQ(fs::last_write_time(ckpt_b), time_b);
  // --overwrite retrains b only (a untouched) and trains c.
  log = test::run_command(bin + "--grid " + grid2 + " --quiet --overwrite --out " + out, &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_EQ(fs::last_write_time(ckpt_a), time_a);
  EXPECT_NE(fs::last_write_time(ckpt_b), time_b);
  EXPECT_TRUE(fs::exists(fs::path(out) / "runs" / "c_seed0" / "checkpoint.pth"));
  h5::File f2((fs::path(out) / "ablation.h5").string(), h5::Mode::read);
  EXPECT_EQ(ResultsTable::read_h5(f2).column("pattern").texts, (std::vector<std::string>{"RRSS", "CCSS", "FFSS"}));

  // A bad grid is one line before anything runs.
  const auto bad = write_file(tmp.path / "bad.yaml", "model: ravlt_micro\nconfigs:\n  - {pattern: RRSS, settings: [chunk=4]}\n");
  log = test::run_command(bin + "--grid " + bad + " --out " + (tmp.path / "never").string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(log.find("bad.yaml:3: configuration 'RRSS chunk=4'"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(tmp.path / "never"));
}

}  // namespace
}  // namespace rala
