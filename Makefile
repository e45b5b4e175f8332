# The two commands a newcomer needs (run as root on a fresh Debian machine):
#   make demo   -- set everything up and run kservice on the bundled example
#   make test   -- set everything up and run the whole test suite (lint, types, tests)
# Everything is installed into ./.venv; Debian packages (nftables, iptables,
# ipset, iproute2, ipvsadm) are installed with apt-get when missing and root.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEB_PACKAGES := nftables iptables ipset iproute2 ipvsadm procps

.PHONY: demo test lint typecheck pytest bench deps venv build clean

demo: venv build
	$(VENV)/bin/kservice validate examples/
	$(VENV)/bin/kservice alloc examples/
	$(VENV)/bin/kservice dns backend-api.production -n staging examples/
	$(VENV)/bin/kservice compile examples/ --mode nftables --node node-a --cluster-cidr 10.244.0.0/16
	$(VENV)/bin/kservice trace examples/ --mode nftables --node node-a --cluster-cidr 10.244.0.0/16 \
		--from pod:production/backend-api-7c9d6b5f4-2xk8p --dst 10.109.131.193 --dport 80

test: deps venv build lint typecheck pytest

deps:
	@bash scripts/install-debian-deps.sh $(DEB_PACKAGES)

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel "Cython>=3.0"
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test,dev]"
	touch $(STAMP)

# (Re)build the Cython extensions in place; fails loudly if a compile fails.
build: venv
	$(PY) setup.py --quiet build_ext --inplace
	$(PY) scripts/check_extensions.py

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest

bench: venv build
	$(VENV)/bin/pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,ops

clean:
	rm -rf $(VENV) build src/*.egg-info
	find src -name '*.so' -delete
	find src -name '*.c' -path '*kservice*' -delete
