# Entry points; each installs what it needs. See README.md.
SWIFT ?= swift
VENV := .venv/bin/python
CLI := .build/release/vitmsn

.PHONY: setup build test demo default-model default-model-quick fixtures parity bench bench-gemm bench-train bench-serve docs fuzz clean

# Debian packages the build links against (CI and fresh machines start without them).
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
	scripts/check_faults.sh .build/debug/vitmsn 6
	scripts/check_example.sh .build/debug/vitmsn
	scripts/check_serve.sh .build/debug/vitmsn
	scripts/check_mpi.sh .build/debug/vitmsn
	scripts/fuzz.sh 15

# The main job: the default model (MSN-pretrained on Fashion-MNIST by configs/fashion_mnist_msn.json, in
# models/) on the paper's low-shot protocol against the baselines (raw pixels, random and from-scratch ViTs), then its attention maps.
DEMO_MODEL := models/fashion-mnist-msn
demo: build
	@scripts/install_system_deps.sh dataset-fashion-mnist
	$(CLI) lowshot --model $(DEMO_MODEL) --dataset fashion-mnist --baselines
	@mkdir -p out
	$(CLI) attention --model $(DEMO_MODEL) --fashion-mnist 8 --output out/attention.png

# Pretrains the default model again into out/msn-fashion-mnist (18 epochs: 115 min on the Xeon's two cores,
# about 127 on the Zen 3 VM).
default-model: build
	@scripts/install_system_deps.sh dataset-fashion-mnist
	$(CLI) pretrain --config configs/fashion_mnist_msn.json

# The same recipe for 3 epochs (under 30 minutes) into out/msn-fashion-mnist-quick, to watch pretraining happen.
default-model-quick: build
	@scripts/install_system_deps.sh dataset-fashion-mnist
	$(CLI) pretrain --config configs/fashion_mnist_msn_quick.json

$(VENV):
	scripts/setup_venv.sh

# Regenerates the committed parity fixtures with the pinned Transformers.
fixtures: $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/make_fixtures.py
	$(VENV) scripts/make_training_fixtures.py
	$(VENV) scripts/make_msn_fixtures.py
	$(VENV) scripts/make_lowshot_fixtures.py

# Full-size parity against Transformers (vit-msn-small and -base shapes), on demand.
parity: build $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/parity_full.py

# Swift against PyTorch on the same shapes, interleaved.
bench: build $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/bench_peers.py --preset small --batch 1 --batch 8 --preset base

# The GEMM against OpenBLAS, BLIS, oneDNN and ONNX Runtime's MLAS at 1 and 2 threads, with the FMA peak.
bench-gemm: $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/bench_gemm.py

# Training and MSN pretraining steps against PyTorch, interleaved.
bench-train: build $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/bench_train.py --preset small:16 --preset fashion-mnist:256
	$(VENV) scripts/bench_msn_step.py --config configs/fashion_mnist_msn.json

# DocC documentation of the public API (the ViTMSN and ViTTrain products) into out/docs.
docs: setup
	@mkdir -p out/docs
	$(SWIFT) package --allow-writing-to-directory out/docs generate-documentation --target ViTMSN \
		--output-path out/docs/ViTMSN --transform-for-static-hosting --hosting-base-path ViTMSN
	$(SWIFT) package --allow-writing-to-directory out/docs generate-documentation --target ViTTrain \
		--output-path out/docs/ViTTrain --transform-for-static-hosting --hosting-base-path ViTTrain

# vitmsn serve against KServe, FastAPI + uvicorn and TorchServe around Transformers pipelines, interleaved.
bench-serve: build $(VENV)
	scripts/setup_venv.sh
	$(VENV) scripts/bench_serve.py

# libFuzzer + ASan on the image decoders for a fixed budget (SECONDS=60 by default).
fuzz: setup
	scripts/fuzz.sh $(or $(SECONDS),60)

clean:
	rm -rf .build out
