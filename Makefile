# Entry points; each installs what it needs. See README.md.
SWIFT ?= swift
VENV := .venv/bin/python
CLI := .build/release/vitmsn

.PHONY: setup build test demo fixtures parity bench fuzz clean

# Debian packages the build links against (CI and fresh machines start without OpenBLAS).
setup:
	@scripts/install_system_deps.sh

build: setup
	$(SWIFT) build -c release

# The suite runs twice: with the kernels this CPU dispatches to, and with the portable build forced.
test: setup
	VITMSN_KERNELS=generic $(SWIFT) test --disable-swift-testing
	$(SWIFT) test --disable-swift-testing --skip-build
	$(SWIFT) build --product vitmsn
	scripts/check_killed_save.sh .build/debug/vitmsn

# The main job: classify and embed real photos with a model that ships with the repo (a tiny random-weight
# classifier until the pretrained default model lands), then time the ViT-S/16 forward pass.
DEMO_MODEL := Tests/Fixtures/models/classifier_single
demo: build
	$(CLI) classify --model $(DEMO_MODEL) --top-k 3 Tests/Fixtures/images/flower_original.jpg Tests/Fixtures/images/progressive.jpg
	$(CLI) embed --model $(DEMO_MODEL) --dir Tests/Fixtures/images --output out/demo-embeddings.safetensors
	$(CLI) bench --preset small --batch 8 --seconds 5

$(VENV):
	scripts/setup_venv.sh

# Regenerates the committed parity fixtures with the pinned Transformers.
fixtures: $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/make_fixtures.py
	$(VENV) scripts/make_training_fixtures.py
	$(VENV) scripts/make_msn_fixtures.py

# Full-size parity against Transformers (vit-msn-small and -base shapes), on demand.
parity: build $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/parity_full.py

# Swift against PyTorch on the same shapes, interleaved.
bench: build $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/bench_peers.py --preset small --batch 1 --batch 8 --preset base

# libFuzzer + ASan on the image decoders for a fixed budget (SECONDS=60 by default).
fuzz: setup
	scripts/fuzz.sh $(or $(SECONDS),60)

clean:
	rm -rf .build out
