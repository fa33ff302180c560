// libFuzzer target: what `rala report` reads from a results file (reports/report_inputs.h load_input, then the
// spectra of every rank probe) on arbitrary bytes written to a scratch .h5 file. HDF5 itself is Debian's
// uninstrumented libhdf5; what is ours is every read, shape and type check on top of it.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "reports/report_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = rala::fuzz::write_scratch("input.h5", data, size);
  rala::fuzz::expect_clean([&] {
    std::vector<rala::report::InputFile> inputs{rala::report::load_input(path)};
    rala::report::assign_labels(inputs);
    const auto& in = inputs.front();
    for (const auto& layer : in.rank.layers)
      for (const auto& [name, probe] : layer.probes) {
        if (probe.rank.size() != static_cast<size_t>(probe.images * probe.heads) ||
            probe.effective_rank.size() != probe.rank.size() || probe.ok.size() != probe.rank.size())
          rala::fuzz::finding("probe " + probe.path + " has inconsistent sizes");
        probe.rank_stat();
        probe.effective_rank_stat();
        rala::report::normalised_spectra(in, probe);
      }
  });
  return 0;
}
