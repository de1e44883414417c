# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing,
# installs into it what it needs (skipped when nothing it depends on changed) and runs:
#   make demo   the package and its `demo` extra, then the demo
#   make test   the package and its `dev` and `docs` extras, then the tests and a strict docs build
# Each set of extras has its own stamp file in .venv, so `make demo` then `make test` installs
# only what the tests add. `make install` is the full set (the same as `make test`).
#
# TORCH_INDEX: an extra package index for the torch and torchvision wheels. PyPI's Linux wheels
# are the CUDA builds (with the nvidia-* libraries and triton, several GB); on a machine without
# an NVIDIA GPU take PyTorch's much smaller CPU builds instead:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# They are versioned 2.14.1+cpu: constraints.txt's torch==2.14.1 accepts them (PEP 440: a
# specifier without a local label ignores the candidate's label), and pip takes them over PyPI's
# 2.14.1 because a local label sorts higher. It applies when torch gets installed, so give it on
# the first `make` (or after `make clean`): an installed torch that satisfies the pins is kept.
PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX ?=
ARGS ?=
PY := $(VENV)/bin/python
# pip shows what it collects and a progress bar per download; no -q, which would hide the bars.
PIP_FLAGS ?= --disable-pip-version-check --progress-bar on
PIP_INSTALL = $(PY) -m pip install $(PIP_FLAGS) -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

comma := ,
DEMO_STAMP := $(VENV)/.proxyaug-demo
TEST_STAMP := $(VENV)/.proxyaug-dev-docs
DOCS_STAMP := $(VENV)/.proxyaug-docs

.PHONY: install demo test test-min docs screenshots clean gpu gpu-wheels disk-check

# Free space the first install needs where $(VENV) lives: .venv measured 6.0 GB after `make demo`
# and 6.3 GB after `make test` with PyPI's CUDA torch (README). Below it, a warning before pip
# starts rather than pip's "No space left on device" after minutes of downloads. Checked only while
# torch is not yet in $(VENV); `make disk-check` runs the check alone.
NEEDS_GB ?= 7
define disk_check
	@if ! ls -d $(VENV)/lib/python*/site-packages/torch >/dev/null 2>&1; then \
	parent=$$(dirname "$(abspath $(VENV))"); while [ ! -d "$$parent" ]; do parent=$$(dirname "$$parent"); done; \
	free=$$(df -Pk "$$parent" 2>/dev/null | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	if [ -n "$$free" ] && [ "$$free" -lt $(NEEDS_GB) ]; then \
	echo "warning: $$free GB free on the disk of $$parent; proxyaug's first install into $(VENV) needs about $(NEEDS_GB) GB with PyPI's CUDA torch (less with TORCH_INDEX=https://download.pytorch.org/whl/cpu); free some space or set VENV= to another disk"; fi; fi
endef

# $(call install_extras,EXTRAS,STEPS): steps 1 and 2 of STEPS, as a recipe for a stamp file
define install_extras
	$(disk_check)
	@if [ -x $(PY) ]; then echo "[1/$(2)] using $(VENV)"; \
	else echo "[1/$(2)] creating $(VENV) with $(PYTHON)" && $(PYTHON) -m venv $(VENV); fi
	@echo "[2/$(2)] installing proxyaug[$(1)] into $(VENV), pinned by constraints.txt$(if $(TORCH_INDEX), (torch from $(TORCH_INDEX)))"
	$(PIP_INSTALL) -e '.[$(1)]'
	@touch $@
endef

install: $(TEST_STAMP)

$(DEMO_STAMP): pyproject.toml constraints.txt
	$(call install_extras,demo,3)

$(TEST_STAMP): pyproject.toml constraints.txt
	$(call install_extras,dev$(comma)docs,3)

$(DOCS_STAMP): pyproject.toml constraints.txt
	$(call install_extras,docs,3)

disk-check:
	$(disk_check)

demo: $(DEMO_STAMP)
	@echo "[3/3] running the demo (benchmarks.train --preset demo), about 2 minutes on 2 CPU cores"
	PYTHONUNBUFFERED=1 $(PY) -m benchmarks.train --preset demo $(ARGS)

# PROXYAUG_TEST_DEVICE (cpu by default; cuda on a GPU machine) is where the tensor tests run:
#   PROXYAUG_TEST_DEVICE=cuda make test   (or make test ARGS="--device cuda")
test: $(TEST_STAMP)
	@echo "[3/3] running the tests (tensor tests on $${PROXYAUG_TEST_DEVICE:-cpu}), doctests and a strict docs build"
	$(PY) -m pytest -q $(ARGS)

# The oldest versions pyproject.toml claims (constraints-min.txt) in a venv of their own, on the
# core tests: what a user with those versions gets. .ci/run runs it after `make test`.
# PYTHON_MIN: the oldest Python claimed (requires-python >= 3.9) when this machine has one (on the
# PATH, or pyenv's), else $(PYTHON); step 1 says which, and .venv-min is rebuilt when it changes.
OLDEST_PYTHON := 3.9
PYTHON_MIN ?= $(firstword $(shell for p in python$(OLDEST_PYTHON) $(HOME)/.pyenv/versions/$(OLDEST_PYTHON).*/bin/python$(OLDEST_PYTHON); do \
	"$$p" -c "" >/dev/null 2>&1 && echo "$$p" && break; done) $(PYTHON))
PYVER = -c 'import sys; print("%d.%d" % sys.version_info[:2])'
VENV_MIN ?= .venv-min
MIN_TESTS ?= tests/test_transform.py tests/test_bank.py tests/test_dataset.py tests/test_refresh.py tests/test_capture.py \
	tests/test_functional.py tests/test_compose.py tests/test_guided.py
test-min:
	@$(MAKE) -s disk-check VENV=$(VENV_MIN) NEEDS_GB=6  # .venv-min measured 5.3 GB with PyPI's CUDA torch 2.5.1
	@want=$$($(PYTHON_MIN) $(PYVER)); have=$$($(VENV_MIN)/bin/python $(PYVER) 2>/dev/null || true); \
	echo "[1/3] $(VENV_MIN) with Python $$want ($(PYTHON_MIN))"; \
	if [ "$$want" != "$(OLDEST_PYTHON)" ]; then echo "warning: no Python $(OLDEST_PYTHON) here (the oldest proxyaug claims): the minimum-versions tests run on $$want; give one with PYTHON_MIN=/path/to/python$(OLDEST_PYTHON)"; fi; \
	if [ "$$have" != "$$want" ]; then rm -rf $(VENV_MIN) && $(PYTHON_MIN) -m venv $(VENV_MIN); fi
	@echo "[2/3] installing the oldest supported versions (constraints-min.txt), pytest and proxyaug"
	$(VENV_MIN)/bin/python -m pip install $(PIP_FLAGS) -r constraints-min.txt "pytest>=7" "hypothesis>=6.80" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(VENV_MIN)/bin/python -m pip install $(PIP_FLAGS) --no-deps -e .
	@echo "[3/3] running the core tests on them (tensor tests on $${PROXYAUG_TEST_DEVICE:-cpu})"
	$(VENV_MIN)/bin/python -c "import torch, torchvision, kornia, torchmetrics; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'kornia', kornia.__version__, 'torchmetrics', torchmetrics.__version__)"
	$(VENV_MIN)/bin/python -m pytest -q -p no:randomly $(MIN_TESTS) $(ARGS)

# The site builds offline: PyTorch cross-references come from docs/inventories/torch.inv.
DOCS_ENV := NO_MKDOCS_2_WARNING=1 PROXYAUG_TORCH_INVENTORY=file://$(CURDIR)/docs/inventories/torch.inv

docs: $(DOCS_STAMP)
	@echo "[3/3] building the site into site/ (strict)"
	$(DOCS_ENV) $(PY) -m mkdocs build --strict -d site

# Headless Chromium screenshots of the built site (needs: apt-get install chromium)
screenshots: docs
	bash docs/screenshots.sh site site-screenshots

# The GPU proof (benchmarks/gpu.sh): on a CUDA machine with the image's Python, torch and timm and
# no registry, after `make gpu-wheels` here and with .wheels/ carried there. Results in $$OUT.
gpu:
	bash benchmarks/gpu.sh

# What the GPU image (Python 3.12, torch 2.11, torchvision 0.26, timm, numpy, Pillow) lacks for
# benchmarks/gpu.sh, as wheels for Python 3.12 on x86_64 Linux, without their dependencies (so no
# torch). The whole folder must stay under the 64 MiB a run carries (63.3 MiB measured): opencv
# (61 MB on its own) does not fit, and pytorch-grad-cam cannot be imported without it (nor without
# scipy, scikit-learn and matplotlib), so pytorch-grad-cam is left out there: its rows say
# "not installed" and its fidelity tests skip. torchcam and captum are the GPU peers. hypothesis
# (tests/test_properties.py, CPU properties) is left out too; pytest 7.4 needs no pygments.
GPU_PYTHON ?= 3.12
GPU_WHEELS ?= kornia==0.9.0 kornia_rs==0.2.0 tqdm torchcam==0.5.0 captum==0.9.0 \
	matplotlib==3.11.2 contourpy cycler kiwisolver pyparsing python-dateutil six packaging \
	scikit-learn==1.9.1 scipy==1.18.1 joblib threadpoolctl pytest==7.4.4 pluggy iniconfig
# fontTools (matplotlib.pyplot imports it; captum imports pyplot) as its pure-Python wheel: 1.2 MB, not 5.4
GPU_WHEELS_PURE ?= fonttools
PIP_ANY := $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m pip

gpu-wheels:
	rm -rf .wheels && mkdir -p .wheels
	$(PIP_ANY) download --disable-pip-version-check --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .wheels $(GPU_WHEELS)
	$(PIP_ANY) download --disable-pip-version-check --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--platform any -d .wheels $(GPU_WHEELS_PURE)
	@du -sb .wheels | awk '{ printf "%.1f MiB in .wheels (a run carries at most 64 MiB)\n", $$1 / 1048576; if ($$1 > 64 * 1048576) exit 1 }'

clean:
	rm -rf $(VENV) $(VENV_MIN) runs build site site-screenshots *.egg-info
