# The template's two entry points (see README.md):
#   make demo  - bake a project with the default answers and run its whole pipeline
#                locally, train to production (KEEP_SERVING=1 leaves the servers up)
#   make test  - run the template's test suite (bakes projects and runs their own checks)
#   make engine - a Docker engine, a local registry and the base image, so the suite's
#                container tests run (they skip, saying why, without them)
# Both create the virtualenv they need on first use; only Python 3.11+, git and make
# must be installed.

VENV := .venv
PYTHON := $(abspath $(VENV))/bin/python
INSTALLED := $(VENV)/.installed
TEMPLATE := {{cookiecutter.project_slug}}
DEMO_DIR := build/demo
DEMO_PROJECT := $(DEMO_DIR)/diabetes-mlops

# The base image of the bake whose full suite (with the container tests) runs: Python 3.11.
ENGINE_BASE_IMAGE := python:3.11-slim-trixie

.PHONY: demo test engine clean

# uv resolves and installs the ~160 packages in seconds where pip takes minutes.
$(INSTALLED): requirements-test.txt $(TEMPLATE)/requirements.txt $(TEMPLATE)/requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "uv>=0.9,<1"
	$(VENV)/bin/uv pip install --quiet --python $(PYTHON) -r requirements-test.txt
	touch $@

demo: $(INSTALLED)
	rm -rf $(DEMO_DIR)
	$(PYTHON) -m cookiecutter --no-input --output-dir $(DEMO_DIR) .
	cd $(DEMO_PROJECT) && git init -q && git add -A && \
		git -c user.name=demo -c user.email=demo@example.com commit -q --allow-empty -m "Baked from the template"
	$(MAKE) -C $(DEMO_PROJECT) demo PYTHON=$(PYTHON) KEEP_SERVING=$(KEEP_SERVING)

# The suites' temporary files (projects, MLflow stores, git repositories: about 2 GB at
# once) in memory, where /dev/shm has room for them and TMPDIR is not set: every SQLite
# and git commit waits on the disk otherwise. Measured on the 2 cores, the full suite
# alone, one seed: 388 s (60 CPU-s idle) on the disk, 355 s (23 idle) in memory.
TEST_TMPDIR := $(if $(TMPDIR),,$(shell python3 -c 'import os, shutil; print("/dev/shm" \
	if os.access("/dev/shm", os.W_OK) and shutil.disk_usage("/dev/shm").free >= 6 << 30 \
	else "")' 2>/dev/null))

test: $(INSTALLED)
	$(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR) )$(PYTHON) -m pytest $(PYTEST_ARGS)

engine:
	"$(TEMPLATE)/scripts/container-engine.sh" $(ENGINE_BASE_IMAGE)

clean:
	rm -rf $(VENV) build
