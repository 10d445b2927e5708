# One-command set-up: `make demo` and `make test` create .venv, install the project, and run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := build/demo
CASE := $(DEMO)/cohort/A2026-0000

# The folder of the 15 CHAOS T2-SPIR cases `make seg-model` trains on: not in the repository, so no default.
CHAOS ?=
SEG_MODEL := LiverStiffness/liverstiffness/shipped_models/liver_seg

.PHONY: demo test test-fast bench bench-clinical demo-model seg-model clean dicom-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a looser request would pull a multi-GB CUDA build (see docs/developing.md).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,slicer,web,webtest,federated]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/liverstiffness synth --out $(DEMO)/cohort --n 1 --seed 2026 --sites A --size normal --quiet
	$(VENV)/bin/liverstiffness predict --t1w $(CASE)/t1w.nii.gz --t2w $(CASE)/t2w.nii.gz \
	    --dwi $(CASE)/dwi.nii.gz --dwi-b 0,500 --mask $(CASE)/mask.nii.gz \
	    --age 58 --sex F --bmi 31 --pdff 9 --out $(DEMO)/result

# Debian's dicom3tools: its dciodvfy checks every DICOM object the tests write (SEG, Parametric Map, SR).
dicom-tools:
	@command -v dciodvfy >/dev/null || { command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq dicom3tools; } ; } || \
	    { echo "dciodvfy is missing: install Debian's dicom3tools (apt-get install dicom3tools)"; exit 1; }

# Lint first (ruff, the linter MONAI and Slicer use; settings in pyproject.toml), then the layers
# (import-linter: front ends over workflows over the core, no cycles), then every test on every core.
test: $(STAMP) dicom-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n auto --dist loadfile Testing/Python

# For development: the same lint, then the tests not marked slow (no training, browser or process trees).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow" Testing/Python

bench: $(STAMP)
	$(PY) bench/bench_predict.py

# Memory and time at clinical resolution and over a 200-exam batch (about half an hour on 2 cores).
bench-clinical: $(STAMP)
	$(PY) bench/bench_clinical.py

# Re-train the shipped demo model (synthetic data only; see LiverStiffness/liverstiffness/shipped_models/demo/MODEL_CARD.md):
# 1200 training exams, 3 folds in two data-parallel processes, about 40 min on 2 cores (docs/training.md).
demo-model: $(STAMP)
	$(PY) -m recipes.train_demo_model

# Re-train the shipped liver segmentation model: the 15 real CHAOS T2-SPIR cases (CC BY-SA 4.0) and 9 synthetic
# exams (6 normal-size, 3 small; sites A–D; drawn for 15 % of the training samples), two independent runs (seeds 0
# and 1) of 5 folds (each case scored by the mean of the two networks that never saw it, one per run; a phantom built
# from a CHAOS case's anatomy is held out with that case); all ten networks together are the model. Two stages:
# 6000 steps per network from random weights (twice the earlier 3000: +0.015 held-out Dice with seed 0, +0.003 with
# seed 1; two runs instead of one: +0.004 and +0.012), then each network continued 3000 steps, the last 80 % at a
# held learning rate with its weights averaged (--swa: +0.004 and +0.005 by seed, the pair 0.904 against 0.900;
# bench/RESULTS.md). About 2.4 h + 1.8 h on this project's 2-core CPU (five worker processes of one thread); uses a
# GPU when present. Then bench/seg_bench.py --update-model (docs/training.md) measures it.
# Usage: make seg-model CHAOS=/path/to/chaos_t2spir (the 15 cases, image_N.nii.gz / label_N.nii.gz).
SEG_STAGE1 := build/seg_model/stage1
SEG_RECIPE = --data $(CHAOS) --manifest build/seg_model/synthetic/manifest.csv \
	--manifest build/seg_model/synthetic_small/manifest.csv --folds 5 --runs 2 --context 2 --organ-intensity 0.35 \
	--synthetic-share 0.15 --workers 5 --threads 1 --seed 0
seg-model: seg-model-chaos $(STAMP)
	$(VENV)/bin/liverstiffness synth --out build/seg_model/synthetic --n 6 --seed 7 --sites A,B,C,D --size normal --quiet
	$(VENV)/bin/liverstiffness synth --out build/seg_model/synthetic_small --n 3 --seed 8 --sites A,B,C,D --size small --quiet
	$(VENV)/bin/liverstiffness train-seg $(SEG_RECIPE) --out $(SEG_STAGE1) --steps 6000
	$(VENV)/bin/liverstiffness train-seg $(SEG_RECIPE) --out $(SEG_MODEL) --init-from $(SEG_STAGE1) --steps 3000 \
	    --lr 1e-3 --swa 0.8
.PHONY: seg-model-chaos
seg-model-chaos:
	$(if $(CHAOS),,$(error make seg-model needs the CHAOS T2-SPIR training cases: make seg-model CHAOS=/path/to/chaos_t2spir (a folder of image_N.nii.gz / label_N.nii.gz)))
	@test -d "$(CHAOS)" || { echo "CHAOS=$(CHAOS): no such folder (give the folder of the 15 CHAOS T2-SPIR cases)"; exit 1; }

# The browser front end on this machine only (http://127.0.0.1:8080/), over a few synthetic exams
# made on first use; `make serve SERVE_DATA=/path/to/exams` for real ones, SERVE_ARGS for more
# (docs/web.md: --host, --token, --certfile/--keyfile to serve other machines safely).
SERVE_DATA ?= build/serve/exams
SERVE_ARGS ?=
.PHONY: serve web-deps
serve: $(STAMP)
	test -d $(SERVE_DATA) || $(VENV)/bin/liverstiffness synth --out $(SERVE_DATA) --n 2 --seed 2026 --sites A --size normal --quiet
	$(VENV)/bin/liverstiffness serve --data $(SERVE_DATA) $(SERVE_ARGS)

# The README's screenshots of the real page (Playwright in Debian's chromium; needs make web-deps).
.PHONY: screenshots
screenshots: $(STAMP)
	$(PY) recipes/web_screenshots.py

# Debian packages for the browser tests and `serve` (as root: CI runs this): Chromium, which
# Playwright drives (its own browser download is not reachable), and the EGL/Mesa libraries VTK
# renders the slice views with when there is no X server.
WEB_DEBS := chromium libegl1 libegl-mesa0 libgl1-mesa-dri libgles2
web-deps:
	@dpkg -s $(WEB_DEBS) >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(WEB_DEBS); }

clean:
	rm -rf $(VENV) build
