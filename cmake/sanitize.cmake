# Instrumented builds, each in a build directory of its own (scripts/ci-sanitize.sh, scripts/ci-fuzz.sh, scripts/fuzz.sh).
#   RALA_SANITIZE=ON  every target with AddressSanitizer + UndefinedBehaviorSanitizer (GCC or clang): the test suite
#                     under the sanitizers. UB is fatal (-fno-sanitize-recover), so a finding fails its test.
#   RALA_FUZZ=ON      clang only; implies RALA_SANITIZE, adds libFuzzer's coverage instrumentation to every target
#                     (-fsanitize=fuzzer-no-link) and builds the fuzz targets of fuzz/ (-fsanitize=fuzzer). The same
#                     build directory serves the sanitizer test suite and the fuzzers.
# LibTorch, HDF5, zlib, yaml-cpp … are Debian's uninstrumented shared libraries: ASan still sees every allocation they
# make (malloc is intercepted) but not their out-of-bounds accesses.
option(RALA_SANITIZE "Build with AddressSanitizer + UndefinedBehaviorSanitizer" OFF)
option(RALA_FUZZ "Build the libFuzzer targets of fuzz/ (clang; implies RALA_SANITIZE)" OFF)

if(RALA_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "RALA_FUZZ=ON needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++ "
                        "-DCMAKE_C_COMPILER=clang (Debian packages clang, libclang-rt-14-dev)")
  endif()
  set(RALA_SANITIZE ON CACHE BOOL "" FORCE)
endif()

if(RALA_SANITIZE)
  set(RALA_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_compile_options(${RALA_SANITIZER_FLAGS})
  add_link_options(${RALA_SANITIZER_FLAGS})
  if(RALA_FUZZ)
    add_compile_options(-fsanitize=fuzzer-no-link)
  endif()
  # -O1 (after the build type's -O3, so it wins): the sanitizers' usual level, and a quicker build. Line tables only:
  # symbolised reports without the full debug info of the torch headers (which would double the build time).
  add_compile_options(-O1)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    add_compile_options(-gline-tables-only)
  else()
    add_compile_options(-g1)
  endif()
endif()
