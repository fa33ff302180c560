#include "experiments/demo.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>

#include "experiments/ablate.h"
#include "experiments/rank.h"
#include "experiments/runtime.h"
#include "reports/report.h"

namespace rala {

namespace fs = std::filesystem;

void add_demo_command(CLI::App& app) {
  struct Args {
    std::string out = "demo-out";
    std::string photos = "data/photos";
    std::string preset = "quick";
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "demo", "The main job: quick ablation on Fashion-MNIST, RAVLT-T rank analysis at 224² on photographs, report");
  cmd->add_option("--out", a->out, "Output directory")->capture_default_str();
  cmd->add_option("--photos", a->photos, "Folder of photographs (scripts/fetch-photos.sh makes data/photos)")
      ->capture_default_str();
  cmd->add_option("--preset", a->preset, "Ablation grid preset (quick | full | every_variant)")->capture_default_str();
  cmd->add_flag("--quiet", a->quiet, "No progress output");
  cmd->callback([a] {
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    TORCH_CHECK(fs::is_directory(a->photos), "--photos '", a->photos,
                "' is not a folder; run scripts/fetch-photos.sh ", a->photos, " first (make demo does)");
    const auto grid = grid_preset(a->preset);
    fs::create_directories(a->out);

    // 1. The ablation grid on Fashion-MNIST.
    std::cerr << "[demo 1/3] ablation '" << grid.name << "': " << grid.configs.size() << " configurations; "
              << grid.description << "\n";
    const auto table = run_ablation(grid, (fs::path(a->out) / "ablation").string(), a->quiet);

    // 2. RAVLT-T at 224² on real photographs, random weights, the five paper patterns.
    std::cerr << "[demo 2/3] rank analysis of RAVLT-T at 224x224 on " << a->photos << " (" << elapsed() << " s so far)\n";
    RankArgs ra;
    ra.model.model = "ravlt_t";
    ra.data = a->photos;
    ra.num_images = 0;  // every photograph
    ra.batch_size = 3;
    ra.image_size = 224;
    ra.out = (fs::path(a->out) / "rank").string();
    ra.quiet = a->quiet;
    fs::create_directories(ra.out);
    std::vector<std::string> patterns = {"RRSS", "RRRR", "LLSS", "FFSS", "CCSS"};
    std::vector<RankSummary> summaries;
    std::vector<std::string> rank_files;
    for (const auto& p : patterns) {
      rank_files.push_back((fs::path(ra.out) / ("ravlt_t_" + p + ".h5")).string());
      summaries.push_back(run_rank(ra, p, rank_files.back()));
    }
    // The paper's Figure 2 protocol: RAVLT-T (random weights) on the photographs, and the trained micro RRSS model of
    // the ablation on Fashion-MNIST test images.
    std::vector<std::string> paper_files;
    RankArgs paper = ra;
    paper.protocol = "paper";
    paper.probes = kPaperProbes;
    paper_files.push_back((fs::path(ra.out) / "ravlt_t_RRSS_paper.h5").string());
    run_rank(paper, "RRSS", paper_files.back());
    const auto trained = fs::path(a->out) / "ablation" / "runs" / "RRSS_seed0" / "checkpoint.pth";
    if (fs::exists(trained)) {
      RankArgs micro = paper;
      micro.model.model = "ravlt_micro";
      micro.model.checkpoint = trained.string();
      micro.data = "fashion-mnist";
      micro.num_images = 64;
      micro.batch_size = 32;
      micro.image_size = 28;
      paper_files.push_back((fs::path(ra.out) / "ravlt_micro_RRSS_trained_paper.h5").string());
      run_rank(micro, "", paper_files.back());
    }

    // 3. Report: ablation table, trained micro-model rank files of seed 0, RAVLT-T rank files, one training curve.
    std::cerr << "[demo 3/3] report (" << static_cast<int64_t>(elapsed()) << " s so far)\n";
    report::ReportOptions ro;
    const fs::path ablation_dir = fs::path(a->out) / "ablation";
    ro.inputs.push_back((ablation_dir / "ablation.h5").string());
    ro.inputs.insert(ro.inputs.end(), rank_files.begin(), rank_files.end());
    ro.inputs.insert(ro.inputs.end(), paper_files.begin(), paper_files.end());
    ro.inputs.push_back((ablation_dir / "runs" / "RRSS_seed0" / "metrics.h5").string());
    ro.out = (fs::path(a->out) / "report").string();
    ro.command_line = command_line();
    ro.quiet = a->quiet;
    const auto report = report::make_report(ro);

    // 4. Summary.
    std::cout << "\n## Ablation (" << grid.description << ")\n\n";
    print_ablation_table(std::cout, table);
    std::cout << "\n## RAVLT-T at 224x224, random weights, photographs in " << a->photos << "\n";
    print_rank_table(std::cout, patterns, summaries);
    std::cout << "\ndemo finished in " << static_cast<int64_t>(elapsed()) << " s; results in " << a->out << "\n"
              << "report: " << fs::absolute(report.html).string() << "\n";
  });
}

}  // namespace rala
