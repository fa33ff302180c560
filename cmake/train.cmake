# experiments/train/: the training loop, schedule, EMA, metrics; `rala train`, `rala ablate`, `rala demo`, `rala distill`.
target_sources(rala_experiments PRIVATE
  experiments/train/schedule.cpp
  experiments/train/train_loop.cpp
  experiments/train.cpp
  experiments/ablate.cpp
  experiments/demo.cpp
  experiments/distill.cpp)   # `rala distill`: softmax → Hedgehog attention transfer
if(RALA_BUILD_TESTS)
  rala_add_tests(rala_tests_train tests/experiments/train_test.cpp tests/experiments/distill_test.cpp)
endif()
