# `rala bench`: throughput, latency, memory, GEMM-rate ratio, attention-only scaling.
target_sources(rala_experiments PRIVATE experiments/bench.cpp)
