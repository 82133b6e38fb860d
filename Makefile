# flowwarden — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data

.PHONY: setup test test-fast lint docs demo bench fit-paper pcap-check clean

setup: $(STAMP)

# Re-installs only when the project metadata or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[tools,train,broker,dev]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The README's option tables, generated from the commands' settings models (tests/test_docs.py checks them).
docs: setup
	$(PY) -m tests.support.docs

test: setup lint
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not kafka"

# Train (quick profile), serve with a real worker on an embedded broker, replay held-out flows, evaluate.
# DEMO_ARGS passes options through, e.g. DEMO_ARGS='--run .demo/run --limit 0' (see python -m detector.tools.demo -h).
demo: setup
	$(PY) -m detector.tools.demo --data $(DATA) $(DEMO_ARGS)

bench: setup
	$(PY) -m pytest -q tests/bench -s -p no:cacheprovider --override-ini testpaths=tests/bench --override-ini "python_files=bench_*.py"

fit-paper: setup
	$(VENV)/bin/trainer fit --data $(DATA)/cicids2017_improved_sample --profile paper --out runs/paper

# Packet captures -> the Python cicflowmeter (own Python 3.12 venv in .cache/) -> `detector score` -> label
# shares per capture (docs/pcap.md). On demand, never part of `make test`. PCAP_ARGS e.g. '--meter cli'.
BUNDLE ?= runs/paper/bundle
pcap-check: setup
	$(PY) tests/bench/pcap_check.py --bundle $(BUNDLE) --pcaps $(DATA)/pcap $(PCAP_ARGS)

clean:
	rm -rf runs .demo .pytest_cache .ruff_cache
