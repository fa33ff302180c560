#include <gtest/gtest.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  at::set_num_threads(1);  // ctest runs test cases in parallel processes; one intra-op thread each
  return RUN_ALL_TESTS();
}
