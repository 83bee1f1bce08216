# ICN Super-Node rollout. Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
include lab/versions.env

REGIONS ?= 7
TOPOLOGY ?= multi
PYTHON ?= python3
VENV := $(CURDIR)/.venv
TOOLS_CACHE ?= $(HOME)/.cache/icn-super-node/tools
TOOL_PATH := $(TOOLS_CACHE)/kubernetes-$(K8S_VERSION)/bin:$(TOOLS_CACHE)/helm-$(HELM_VERSION)/bin:$(TOOLS_CACHE)/kwok-$(KWOK_VERSION)/bin:$(TOOLS_CACHE)/etcd-$(ETCD_VERSION)/bin:$(TOOLS_CACHE)/istio-$(ISTIO_MODULE_VERSION)/bin:$(TOOLS_CACHE)/prometheus-$(PROMETHEUS_VERSION)/bin
export PATH := $(VENV)/bin:$(TOOL_PATH):$(PATH)
export KUBECONFIG := $(CURDIR)/.lab/kubeconfig
export ICN_TOOLS_CACHE := $(TOOLS_CACHE)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help venv tools lab-tools lab-up lab-down lab-status demo test lint test-unit test-lab test-kind build

help:
	@echo "make demo                 build or reuse the lab's tools, start the 7-region lab, deploy to it"
	@echo "make test                 install what is needed and run every test (what CI runs)"
	@echo "make test-unit            the tests that need no cluster (lint, then pytest -m 'not multi and not single and not kind')"
	@echo "make test-lab             the tests that need the lab (pytest -m 'multi or single'; starts the lab it needs)"
	@echo "make test-kind            molecule test -s kind and the real-node tests alone (kind clusters built here; make test runs them last)"
	@echo "make lab-up [REGIONS=N] [TOPOLOGY=multi|single] [PROMETHEUS=0]   start the lab (with its Prometheus unless PROMETHEUS=0)"
	@echo "make lab-status | lab-down"
	@echo "make lint | build"

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(VENV)/.installed

# Every tool (make test); lab-tools: only what the lab and deploy.yml use (not istioctl or
# promtool, which only the tests use). Each build prints its start, with what it took here, and its
# end; the go tool's output goes to $(TOOLS_CACHE)/logs/<tool>.log.
tools:
	bash lab/build-tools.sh

lab-tools:
	bash lab/build-tools.sh kubernetes etcd kwok helm

# lab/icnlab.py reads the region catalogue (charts/super-node/regions.yaml) with the venv's PyYAML.
# PROMETHEUS=1 (the default): with the lab's Prometheus, exporter, prometheus-adapter and
# prometheus-operator's CRDs.
PROMETHEUS ?= 1
lab-up: venv lab-tools
	$(PYTHON) lab/icnlab.py up --regions $(REGIONS) --topology $(TOPOLOGY) $(if $(filter 1,$(PROMETHEUS)),--prometheus)
	@$(PYTHON) lab/icnlab.py status

lab-down:
	$(PYTHON) lab/icnlab.py down

lab-status:
	$(PYTHON) lab/icnlab.py status

demo: venv
	@echo "make demo builds only the lab's tools and helm (not istioctl or promtool: only the tests use them)"
	@$(MAKE) --no-print-directory lab-tools
	bash scripts/demo.sh

lint: venv
	yamllint --strict .
	ansible-lint --profile production

build: venv
	ansible-galaxy collection build --force --output-path build/

test: venv tools
	bash tests/run-all.sh

# Real nodes (docs/kind.md): the kind tools and images (cached), `molecule test -s kind`, then the
# real-node tests on the same clusters (tests/run-kind.sh): the last step of make test, or alone.
test-kind: venv tools
	bash tests/run-kind.sh

# The chart-render and alert tests need helm and promtool: `tools` builds them once (cached).
test-unit: venv tools
	yamllint --strict .
	ansible-lint --profile production
	python -m pytest tests -m 'not multi and not single and not kind'

test-lab: venv tools
	python -m pytest tests -m 'multi or single'

# Benchmarks (bench/bench.py; not part of make test): each starts its own lab in .lab-bench.
# bench-deploy: the lab's configuration, then the production one (Istio on), REGIONS regions.
.PHONY: bench-deploy bench-upgrade bench-analysis bench-fleet
bench-deploy: venv lab-tools
	bash lab/build-tools.sh istio >/dev/null
	python bench/bench.py deploy --regions $(REGIONS)
	python bench/bench.py deploy-istio --regions $(REGIONS)

# bench-upgrade: the same two ways.
bench-upgrade: venv lab-tools
	bash lab/build-tools.sh istio >/dev/null
	python bench/bench.py upgrade --regions $(REGIONS)
	python bench/bench.py upgrade --istio --regions $(REGIONS)

# bench-analysis: upgrade.yml's metric analysis against a plain soak as long (3 regions, with Prometheus).
bench-analysis: venv lab-tools
	bash lab/build-tools.sh prometheus promcrds adapter >/dev/null
	python bench/bench.py analysis --regions 3

# deploy.yml on 3, 7 and 14 regions (beyond seven, lab/fleet.yaml's), in one run.
bench-fleet: venv lab-tools
	python bench/bench.py fleet --regions 3 7 14
