# flowwarden — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data

.PHONY: setup kafka chaos test test-fast lint docs demo bench bench-e2e bench-batch bench-scale bench-candidates bench-train-step bench-gpu bench-gpu-prepare fit-paper pcap-check site-check clean

setup: $(STAMP)

# Re-installs only when the project metadata or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[tools,ingest,train,broker,dev,openvino]'
	touch $(STAMP)

# Apache Kafka for the tests: the jars pinned in tests/support/kafka-broker/pom.xml, from Maven Central, into
# .cache/kafka-broker/libs (once; again when the pom changes). Without Maven or Java 17 this says so and the
# suite runs its Kafka tests on the embedded broker (tests that need Apache Kafka skip with the reason).
KAFKA_POM  := tests/support/kafka-broker/pom.xml
KAFKA_LIBS := .cache/kafka-broker/libs
KAFKA_STAMP := .cache/kafka-broker/.resolved

kafka: $(KAFKA_STAMP)

$(KAFKA_STAMP): $(KAFKA_POM)
	@if command -v mvn >/dev/null 2>&1; then \
		rm -rf $(KAFKA_LIBS) && \
		mvn -q -B -Dstyle.color=never -f $(KAFKA_POM) dependency:copy-dependencies -DincludeScope=runtime \
			-DoutputDirectory=$(abspath $(KAFKA_LIBS)) && touch $@; \
	else \
		echo "make kafka: no mvn on PATH: Kafka tests run on the embedded broker (Apache Kafka tests skip)"; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The README's option tables, generated from the commands' settings models (tests/test_docs.py checks them).
docs: setup
	$(PY) -m tests.support.docs

test: setup lint kafka
	$(PY) -m pytest -q --durations=25

# A bounded fault-injection run on a 3-node Apache Kafka cluster, once per guarantee, one JSON line each (README
# "Reliability"; never part of make test). CHAOS_ARGS e.g. '--records 5000 --faults 3' or '--bootstrap host:9092'.
# The hostile-input properties run 1,000 examples per target in `make test`; here ten times as many.
PROPERTY_TESTS := $(wildcard tests/*/test_*_properties.py tests/*/*/test_*_properties.py)
PROPERTY_EXAMPLES ?= 10000

chaos: setup kafka
	$(PY) -m tests.chaos.run $(CHAOS_ARGS)
	FLOWWARDEN_PROPERTY_EXAMPLES=$(PROPERTY_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider $(PROPERTY_TESTS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not kafka"

# Train (quick profile), serve with a real worker on an embedded broker, replay held-out flows, evaluate.
# DEMO_ARGS passes options through, e.g. DEMO_ARGS='--run .demo/run --limit 0' (see python -m detector.tools.demo -h).
demo: setup
	$(VENV)/bin/detector demo --data $(DATA) $(DEMO_ARGS)

# The detector measured side by side in one run on a real bundle (trained once, cached in .cache/bench), ending
# with one JSON line (README "Performance"). BENCH_ARGS e.g. '--no-e2e' (python -m tests.bench.bench -h).
bench: setup
	$(PY) -m tests.bench.bench $(BENCH_ARGS)

# The worker end to end alone, on the bundle `make bench` cached (python -m detector.tools.e2e -h).
bench-e2e: setup
	$(PY) -m tests.bench.bench --e2e-only $(BENCH_ARGS)

# The worker end to end at --max-batch 64..2048 on the cached bench bundle: JSON and the plot in docs/
# (README "Performance"). BENCH_ARGS e.g. '--threads 1 --guarantee at-least-once' (python -m tests.bench.batch_curve -h).
bench-batch: setup
	$(PY) -m tests.bench.batch_curve --out-json docs/perf-batch.json --out-png docs/perf-batch.png $(BENCH_ARGS)

# 1, 2 and 3 workers in one group on a preloaded 3-partition topic, flows/s side by side in one JSON line.
bench-scale: setup
	$(PY) -m tests.bench.scale_out $(BENCH_ARGS)

# The serving-backend candidates (torch.compile, hand-written GRU, bf16, int8) on the cached bench bundle.
bench-candidates: setup
	$(PY) -m tests.bench.backend_candidates --cached $(BENCH_ARGS)

# One fine-tuning (SAM) step: torch's GRU against a hand-written BiGRU and bf16 autocast (README "Training time").
bench-train-step: setup
	$(PY) -m tests.bench.train_step $(BENCH_ARGS)

# On a GPU machine (no internet): `make bench-gpu-prepare` here first (wheels, data, cached bundle into .whl/),
# carry .whl, then `bash tests/bench/gpu.sh` there. `make test` runs it dry on the CPU (tests/bench/test_bench_dry.py).
bench-gpu-prepare: setup
	PYTHON=$(PY) tests/bench/gpu_prepare.sh

bench-gpu:
	bash tests/bench/gpu.sh $(BENCH_ARGS)

fit-paper: setup
	$(VENV)/bin/trainer fit --data $(DATA)/cicids2017_improved_sample --profile paper --out runs/paper

# Packet captures -> the Python cicflowmeter (own Python 3.12 venv in .cache/) -> `detector score` -> label
# shares per capture (docs/pcap.md). On demand, never part of `make test`. PCAP_ARGS e.g. '--meter cli'.
BUNDLE ?= runs/paper/bundle
pcap-check: setup
	$(PY) tests/bench/pcap_check.py --bundle $(BUNDLE) --pcaps $(DATA)/pcap $(PCAP_ARGS)

# trainer adapt measured on the same captures: the portable quick bundle (trained once, cached in .cache/bench)
# adapted on the LAN baseline and one browsing capture, then every capture scored before and after (README
# "Site adaptation"). On demand, never part of `make test`. SITE_ARGS e.g. '--work .cache/site-check'.
site-check: setup
	FLOWWARDEN_DATA=$(DATA) $(PY) -m tests.bench.site_check --pcaps $(DATA)/pcap $(SITE_ARGS)

clean:
	rm -rf runs .demo .pytest_cache .ruff_cache .whl
