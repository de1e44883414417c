# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing,
# installs the project into it (skipped when nothing it depends on changed) and runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.proxyaug-installed
PIP_FLAGS ?= -qq --disable-pip-version-check

.PHONY: install demo test docs screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing proxyaug and its dependencies into $(VENV) (pinned by constraints.txt)..."
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[dev,demo,docs]'
	@touch $(STAMP)

demo: $(STAMP)
	PYTHONUNBUFFERED=1 $(PY) -m benchmarks.train --preset demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# The site builds offline: PyTorch cross-references come from docs/inventories/torch.inv.
DOCS_ENV := NO_MKDOCS_2_WARNING=1 PROXYAUG_TORCH_INVENTORY=file://$(CURDIR)/docs/inventories/torch.inv

docs: $(STAMP)
	$(DOCS_ENV) $(PY) -m mkdocs build --strict -d site

# Headless Chromium screenshots of the built site (needs: apt-get install chromium)
screenshots: docs
	bash docs/screenshots.sh site site-screenshots

clean:
	rm -rf $(VENV) runs build site site-screenshots *.egg-info
