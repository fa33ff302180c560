#include "experiments/train/train_loop.h"
