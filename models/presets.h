#pragma once
/// \file presets.h
/// Model presets as plain functions returning options. CLI names are lower-case (`ravlt_t`); `RAVLT_T` is accepted.
///
/// Usage:
///   rala::Ravlt model(rala::ravlt_preset("ravlt_t").attn_pattern("RRRR"));

#include <string>
#include <vector>

#include "models/ravlt.h"

namespace rala {

/// Official RAVLT-T/S/B/L (qhfan/RALA factories RAVLT_T … RAVLT_L): 14,897,768 / 25,591,208 / 48,241,288 / 95,242,440
/// parameters.
RavltOptions ravlt_t();
RavltOptions ravlt_s();
RavltOptions ravlt_b();
RavltOptions ravlt_l();
/// The micro configuration of the golden files (embed 16,32,64,128; depths 1,1,2,1; heads 1,2,4,4; projection 64;
/// 10 classes; drop path 0) — small enough for 28–64 px inputs on a CPU.
RavltOptions ravlt_micro();
/// By name (case-insensitive); throws listing the known presets.
RavltOptions ravlt_preset(const std::string& name);
/// Names of the RAVLT presets.
std::vector<std::string> ravlt_preset_names();

}  // namespace rala
