# Two commands are the whole set-up: `make serve` and `make test`.
# Both create .venv and install the package (editable) with what it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint typecheck unit integration wheel-check bench bench-publish clean

# setup.py builds the optional compiled parts in place: the C extension (_fastio.c), and the
# modules mypyc compiles (MODULES in src/zmqserver/_compiled.py; a test checks this list), so an
# edit to one rebuilds. The build also stamps their sources' hashes (src/zmqserver/_build.json):
# an import that finds other sources runs them, with a warning, instead of stale compiled code.
COMPILED_SRC := src/zmqserver/_fastio.c src/zmqserver/_compiled.py src/zmqserver/worker.py \
	src/zmqserver/client/state.py src/zmqserver/client/pipeline.py \
	$(wildcard src/zmqserver/broker/*.py) $(wildcard src/zmqserver/protocol/*.py)

# _fastio.c needs libzmq's header (pyzmq's wheels ship none): the Debian packages in
# apt-packages.txt. Installed here when missing and we may (root, apt-get); otherwise the build
# says so and the broker uses pyzmq's own socket calls.
APT_PACKAGES := $(shell cat apt-packages.txt)
define HAVE_ZMQ_H
echo '#include <zmq.h>' | $${CC:-cc} -E - >/dev/null 2>&1
endef

$(STAMP): pyproject.toml setup.py apt-packages.txt $(COMPILED_SRC)
	@if ! $(HAVE_ZMQ_H); then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(APT_PACKAGES) (zmq.h, for the compiled socket I/O)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; } \
	      || echo "note: could not install $(APT_PACKAGES): _fastio is not built"; \
	  else \
	    echo "note: no zmq.h (Debian: apt-get install $(APT_PACKAGES)): _fastio is not built"; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	@echo "installing zmqserver and its tools into $(VENV) (the first time: about 2 minutes," \
	  "most of it compiling; pip's progress follows)"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

# The ports `make serve` listens on (clients, then workers): `make serve PORTS="7660 7661"`.
PORTS ?= 6660 6661

serve: $(STAMP)
	$(BIN)/zmqserver serve examples.upper:app --port $(PORTS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench setup.py
	$(BIN)/ruff format --check src tests examples bench setup.py
	$(BIN)/pre-commit validate-config .pre-commit-config.yaml

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

# What a user gets from `pip install`: the wheel built with build isolation, installed into a
# fresh venv outside the tree, imported under -W error, compiled, serving a job (about 40 s).
wheel-check: $(STAMP)
	$(BIN)/python tests/check_wheel.py

# The whole suite, then again on the pure-Python path (the fallback where nothing could be
# compiled: Python socket I/O, and the routing core and protocol run from source), so both
# paths are held to the same tests: all but those marked compiled_pass (pyproject.toml says
# which and why), which would only repeat calls the others make; then the wheel.
# What only the tests use: a real browser for the dashboard and promtool for /metrics (Debian
# packages in apt-packages-test.txt). Installed when missing and we may (root, apt-get);
# otherwise the tests that need them skip and say why.
TEST_APT_PACKAGES := $(shell cat apt-packages-test.txt)
TEST_TOOLS_STAMP := $(VENV)/.installed-test-tools
$(TEST_TOOLS_STAMP): apt-packages-test.txt | $(STAMP)
	@if ! command -v chromium >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(TEST_APT_PACKAGES) (the dashboard's browser test, promtool)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_APT_PACKAGES) >/dev/null; } \
	      || echo "note: could not install $(TEST_APT_PACKAGES): those tests will skip"; \
	  else \
	    echo "note: no chromium/promtool (Debian: apt-get install $(TEST_APT_PACKAGES)): those tests will skip"; \
	  fi; \
	fi
	touch $(TEST_TOOLS_STAMP)

test: $(STAMP) $(TEST_TOOLS_STAMP) lint typecheck
	$(BIN)/pytest tests
	ZMQSERVER_PURE_PYTHON=1 $(BIN)/pytest -m "not compiled_pass" tests/integration tests/unit
	$(MAKE) --no-print-directory wheel-check

# The benchmark suite (bench/README.md): about 8 minutes; JSON, Markdown and the plots in
# bench/results/ (not tracked). The bench extra adds matplotlib for the plots, the compare extra
# the systems bench/compare.py measures zmqserver against (Celery, zerorpc, gRPC); Celery's
# Redis is a Debian package (apt-packages-bench.txt), installed when missing and we may (root,
# apt-get); otherwise the comparison skips Celery and says so. The plots the docs show,
# docs/bench.png and docs/compare.png, change only on purpose: `make bench-publish` copies the
# latest.
BENCH_APT_PACKAGES := $(shell cat apt-packages-bench.txt)
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) apt-packages-bench.txt
	$(BIN)/pip install --quiet -e '.[dev,bench,compare]'
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(BENCH_APT_PACKAGES) (Celery's broker, for bench/compare.py)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_APT_PACKAGES) >/dev/null; } \
	      || echo "note: could not install $(BENCH_APT_PACKAGES): the comparison skips Celery"; \
	  else \
	    echo "note: no redis-server (Debian: apt-get install $(BENCH_APT_PACKAGES)): the comparison skips Celery"; \
	  fi; \
	fi
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --out bench/results --plot bench/results/bench.png
	$(BIN)/python -m bench.compare --out bench/results --plot bench/results/compare.png
	$(BIN)/python -m bench.clientlib

bench-publish:
	@test -f bench/results/bench.png || { echo "no bench/results/bench.png: run make bench first"; exit 1; }
	cp bench/results/bench.png docs/bench.png
	@if [ -f bench/results/compare.png ]; then cp bench/results/compare.png docs/compare.png; fi
	@echo "docs/bench.png (and docs/compare.png) updated: commit them with the numbers in BENCHMARKS.md"

# Also what the builds left in the tree: mypyc's C sources in build/, the extensions in src/.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
	find src -name '*.so' -delete
	rm -f src/zmqserver/_build.json
