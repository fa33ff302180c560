# fuzz/: libFuzzer targets, one per reader of hostile input (RALA_FUZZ=ON; clang; see cmake/sanitize.cmake).
#   scripts/fuzz.sh TARGET SECONDS      runs one on its corpus (fuzz/corpus/TARGET) for a budget
# Each target is linked with -fsanitize=fuzzer (libFuzzer's main); the libraries it reads through are built with
# -fsanitize=fuzzer-no-link,address,undefined by cmake/sanitize.cmake.
if(NOT RALA_FUZZ)
  return()
endif()

set(RALA_FUZZ_TARGETS checkpoint pickle safetensors idx image report_input grid pattern)
set(rala_fuzz_libs_checkpoint rala_models)
set(rala_fuzz_libs_pickle rala_models)
set(rala_fuzz_libs_safetensors rala_models)
set(rala_fuzz_libs_idx rala_data)
set(rala_fuzz_libs_image rala_data)
set(rala_fuzz_libs_report_input rala_reports)
set(rala_fuzz_libs_grid rala_experiments)
set(rala_fuzz_libs_pattern rala_attention_variants)

foreach(name ${RALA_FUZZ_TARGETS})
  add_executable(fuzz_${name} fuzz/${name}_fuzz.cpp)
  target_link_libraries(fuzz_${name} PRIVATE ${rala_fuzz_libs_${name}})
  target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
  rala_target(fuzz_${name})
endforeach()
# The seeds only our own writers make (fuzz/make_seeds.py runs it).
add_executable(fuzz_make_seeds EXCLUDE_FROM_ALL fuzz/make_seeds.cpp)
target_link_libraries(fuzz_make_seeds PRIVATE rala_models)
rala_target(fuzz_make_seeds)

list(TRANSFORM RALA_FUZZ_TARGETS PREPEND fuzz_ OUTPUT_VARIABLE rala_fuzz_executables)
add_custom_target(fuzz_all DEPENDS ${rala_fuzz_executables})
