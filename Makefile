# GitWarden's one entry point for developers and CI.
#   make test   - venv + pinned Python deps + pinned Go-built tools, then every check and test
#   make test-long - the long profiles (GITWARDEN_FUZZ=long: 100,000 fuzzed AdmissionReviews, ...;
#                    20 SIGKILLs of a 1,000-object apply; a 10-minute webhook soak)
#   make demo   - the whole trust chain on one machine, seven steps (KEEP=1 keeps it running)
#   make tools  - only build/reuse the pinned tools (kube-apiserver, kube-controller-manager, etcd, opa, helm, kubeconform, kubeseal)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

PYTEST_ARGS ?=

.PHONY: help venv tools lint typecheck imports policy chart pytest test test-long demo demo-stop docs lock clean

help:
	@echo "make test    run every check and test (installs what it needs)"
	@echo "make test-long  the long profiles: fuzzing at full size (tens of minutes)"
	@echo "make demo    run the end-to-end demo (KEEP=1 keeps it running; make demo-stop)"
	@echo "make tools   build or reuse the pinned Go tools into $(TOOLS)"
	@echo "make lock    refresh constraints.txt from a fresh resolve"

# The venv is refreshed whenever the dependency declaration or the lock changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

tools:
	tools/build-tools.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

imports: venv
	$(BIN)/lint-imports

policy: tools
	opa fmt --list --fail policies
	opa check --strict policies
	opa test policies
	@# --threshold fails the run below 90% line coverage; the JSON report itself is not needed.
	opa test policies --coverage --threshold 90 >/dev/null

# The chart: its copies in step with their sources, `helm lint --strict`, and every value set
# (the defaults and each ci/*.yaml) rendered and checked by kubeconform -strict against schemas
# made from the test cluster's own kube-apiserver (tests/chart/kubeschemas.py; no download).
KUBE_VERSION := 1.35.4
CHART_DIR    := charts/gitwarden
chart: venv tools
	$(BIN)/python -m tests.chart.chartfiles --check
	@schemas=$$($(BIN)/python -m tests.chart.kubeschemas); \
	for values in default $(CHART_DIR)/ci/*.yaml; do \
	  args=(--kube-version $(KUBE_VERSION)); [ "$$values" = default ] || args+=(--values "$$values"); \
	  echo "chart: $$values"; \
	  helm lint --strict --namespace gitwarden "$${args[@]}" $(CHART_DIR); \
	  helm template gitwarden $(CHART_DIR) --namespace gitwarden "$${args[@]}" \
	    | kubeconform -strict -summary -schema-location "$$schemas/{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json"; \
	done

pytest: venv tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck imports policy chart pytest

# The long profiles: the fuzz targets at their long counts (tests/fuzz/budget.py), the kill
# test at 20 SIGKILLs of a 1,000-object apply, with no per-test timeout, and the webhook soak
# (10 minutes at twice the benchmark's load).
test-long: venv tools
	GITWARDEN_FUZZ=long $(BIN)/python -m pytest tests/fuzz --timeout=0 --hypothesis-show-statistics $(PYTEST_ARGS)
	GITWARDEN_FUZZ=long $(BIN)/python -m pytest tests/e2e/test_reconcile_loop_kill.py --timeout=0 -s $(PYTEST_ARGS)
	$(BIN)/python -m bench.soak_webhook --seconds 600

# KEEP=1 leaves the cluster, OPA, the webhook and the reconciler running; `make demo-stop` ends it.
demo: venv tools
	$(BIN)/python -m demo $(if $(KEEP),--keep,)

# Rewrites the generated sections of docs/ from the code (tests/unit/test_docs.py checks them).
docs: venv
	$(BIN)/python -m tests.docs_sections

demo-stop: venv
	$(BIN)/python -m demo stop

lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet --upgrade pip && .lockvenv/bin/pip install --quiet -e '.[dev]'
	{ echo '# Exact versions CI tested; `make test` installs with `-c constraints.txt`. Refresh with `make lock`.'; \
	  .lockvenv/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .tools .demo .mypy_cache .ruff_cache .pytest_cache
