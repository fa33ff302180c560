# Thin wrapper: install deps → configure → build → demo | test | bench.
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: deps configure build demo test bench clean

deps:
	bash scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

DEMO_OUT ?= demo-out

# The main job on data that ships with the system: quick ablation on Fashion-MNIST, RAVLT-T rank analysis at 224² on
# Debian's skimage photographs, report.
demo: build
	bash scripts/fetch-photos.sh data/photos
	$(BUILD)/rala demo --out $(DEMO_OUT) --photos data/photos

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	$(BUILD)/rala bench --model ravlt_t --attn-pattern RRSS --batch-size 8 --image-size 224 --rounds 3 --out bench-out/goal.h5 --overwrite
	$(BUILD)/rala bench --attention-only --memory-limit-mb 3000 --out bench-out/attention.h5 --overwrite
	$(BUILD)/rala_bench_attention
	$(BUILD)/rala_bench_rank

clean:
	rm -rf $(BUILD)
