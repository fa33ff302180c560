# `rala bench`: throughput, latency, memory, GEMM-rate ratio, attention-only scaling.
target_sources(rala_experiments PRIVATE experiments/bench.cpp)
if(RALA_BUILD_TESTS)
  rala_add_tests(rala_tests_bench tests/experiments/bench_test.cpp)
endif()
