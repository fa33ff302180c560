#pragma once
/// \file runtime.h
/// Process-wide runtime facts and settings shared by every subcommand: threads, the BLAS in use, versions, and the
/// one-line error text for exceptions.

#include <exception>
#include <string>

namespace rala {

namespace h5 {
class File;
}

/// Tool version ("0.1.0") and the git commit the binary was built from.
std::string tool_version();
std::string git_commit();
/// LibTorch version ("1.13.1").
std::string torch_version();
/// Sets LibTorch's intra-op thread count; 0 means all cores, divided among the processes a launcher started on this
/// node (LOCAL_WORLD_SIZE, SLURM_STEP_TASKS_PER_NODE, OMPI_COMM_WORLD_LOCAL_SIZE). Returns the count in effect.
/// Throws on a negative count.
int configure_threads(int requested);
/// The process's allocation policy: "retain" keeps freed blocks in glibc's heap (no mmap per large tensor, no
/// automatic trim) so a forward does not page-fault its activations in again on every call; "system" = glibc's
/// defaults. Throws on another name. `rala` uses "retain" (rala bench --allocator overrides).
void configure_allocator(const std::string& policy);
/// OpenBLAS's own thread count (it keeps a pool beside LibTorch's OpenMP threads); returns the count in effect, or -1
/// when the BLAS is not OpenBLAS. `rala` runs it single-threaded inside the model (two pools fighting over the same
/// cores cost 35 % of a RAVLT-T forward; see the README's Performance section).
int set_blas_threads(int threads);
/// OpenBLAS picks its kernels for the CPU it recognises when it loads; one it does not recognise (this project's
/// AVX-512 Xeons report a model OpenBLAS 0.3.21 lacks) gets the generic SSE3 "Prescott" kernels, 2.5x slower on a
/// RAVLT-T forward. Called first thing in main(): when OpenBLAS chose a core weaker than the CPU's instruction set and
/// OPENBLAS_CORETYPE is not set, re-executes this program with OPENBLAS_CORETYPE set (SkylakeX for AVX-512 F/BW/DQ/VL/CD,
/// Haswell for AVX2+FMA) — the variable is read only while the library loads. RALA_BLAS_CORETYPE=keep turns it off.
/// Returns (only when it does not re-execute) the core OpenBLAS uses, or "" when the BLAS is not OpenBLAS.
std::string select_blas_kernels(char** argv);
/// The OpenBLAS core a CPU with this instruction set should use ("SkylakeX", "Haswell"), or "" for no better choice
/// than the library's own, given the core the library chose.
std::string better_blas_core(const std::string& chosen);
/// The BLAS library mapped into this process (resolved path), plus OpenBLAS's own config string when it is OpenBLAS.
std::string blas_info();
/// The command line of this process (set once by main), recorded in every output file.
void set_command_line(int argc, char** argv);
const std::string& command_line();
/// Current UTC time as "2026-11-24T07:30:00Z".
std::string utc_now();
/// Writes the provenance attributes every output file carries on its root: schema_version (1), tool_version,
/// git_commit, torch_version, created_utc, command_line, threads, device (run_device(): "cpu" or "cuda:N"; with
/// device_name "cuda:0 (NVIDIA …, 80.0 GiB)" on a GPU).
void set_provenance(h5::File& file);
/// One line for an exception: c10::Error without its backtrace, anything else as what().
std::string error_line(const std::exception& e);

}  // namespace rala
