# leoflow-staging — developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: soak help check install binaries node-packages buildah wrk postgres airflow lint typecheck test unit demo bench dev-up dev-down clean image images

help:
	@echo "make check    - the fast loop: ruff, mypy, import contracts, unit tests and PostgreSQL-only tests (no root, no node)"
	@echo "make test     - install everything, build/find the control plane, ruff + mypy + import contracts + pytest"
	@echo "make demo     - the whole lifecycle on a local control plane"
	@echo "make dev-up   - start etcd, kube-apiserver, kube-controller-manager and PostgreSQL in the background"
	@echo "make dev-up NODE=1 - also a real node (containerd, kubelet, kube-proxy, scheduler), the RWX provisioner, images"
	@echo "make dev-down - stop them (and undo the node's host changes)"
	@echo "make bench    - benchmarks (figures, not assertions)"
	@echo "make soak     - the stress tests at their large sizes (about 30 min; docs/development.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

binaries:
	bash hack/build-control-plane.sh --node >/dev/null
	bash hack/build-prometheus.sh >/dev/null

node-packages:
	bash hack/ensure-node-packages.sh

wrk:
	bash hack/ensure-wrk.sh

postgres:
	bash hack/ensure-postgres.sh
	bash hack/ensure-pgbouncer.sh

# Stock Apache Airflow 3 (pinned by requirements/airflow.lock) for tests/airflow: cold ~2-3 min, warm ~0 s.
airflow:
	bash hack/ensure-airflow.sh >/dev/null

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

# The fast loop (no root, no node, no Kubernetes build): PostgreSQL comes from the machine (hack/ensure-postgres.sh).
check: lint typecheck
	bash hack/ensure-postgres.sh
	$(BIN)/pytest tests/unit tests/integration -q $(PYTEST_ARGS)

# docs/configuration.md, generated from the settings' own definitions (tests/unit/test_configuration_doc.py
# fails when it is stale).
.PHONY: docs
docs: install
	$(PY) -m hack.configuration_doc

# buildah (and skopeo, debootstrap, busybox-static) from Debian's packages, for the image builds.
buildah:
	bash hack/ensure-buildah.sh

# The node's images (pause, task, provisioner, product, the Airflow worker), built with buildah from their
# recipes (Dockerfile, hack/images/*/Containerfile) into OCI archives: cold ~5 min, warm ~10 s.
images: buildah
	bash hack/build-images.sh all airflow >/dev/null

test: install binaries postgres node-packages images airflow lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

# The stress tests at the sizes that make test shrinks (docs/development.md, "Stress sizes").
SOAK_TESTS := tests/e2e/test_soak.py tests/e2e/test_hostile_input.py tests/e2e/test_faults_processes.py \
	tests/e2e/test_gc_races.py
soak: install binaries postgres
	LEOFLOW_DEV_SOAK_SECONDS=600 LEOFLOW_DEV_KILL_RUNS=100 LEOFLOW_DEV_FUZZ_EXAMPLES=20000 \
	LEOFLOW_DEV_RACE_ITERATIONS=1500 LEOFLOW_DEV_REPLICA_PODS=1000 \
	$(BIN)/pytest $(SOAK_TESTS) --timeout=3600 -q -s $(PYTEST_ARGS)

NODE ?=
dev-up: install binaries postgres $(if $(NODE),node-packages)
	$(PY) -m devenv up $(if $(NODE),--node)

dev-down:
	@if [ -x $(PY) ]; then $(PY) -m devenv down; else echo "nothing running"; fi

demo: install binaries postgres
	$(PY) -m devenv.demo

bench: install binaries postgres wrk
	$(PY) -m bench

# The product image from the Dockerfile (the one recipe) into dist/leoflow-staging-<tag>.oci.tar with buildah, no
# Docker, no registry (docs/images.md); imported into a running dev node. Cold ~2 min, nothing changed ~5 s.
image: install buildah
	@set -o pipefail; bash hack/build-images.sh product | $(PY) -m devenv import-image

clean: dev-down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
