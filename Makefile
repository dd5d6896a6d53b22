# Two commands are the whole set-up: `make serve` and `make test`.
# Both create .venv and install the package (editable) with what it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint typecheck unit integration bench clean

# setup.py builds the optional compiled parts in place: the C extension (_fastio.c), and the
# modules mypyc compiles (src/zmqserver/_compiled.py lists them), so an edit to one rebuilds.
COMPILED_SRC := src/zmqserver/_fastio.c $(addprefix src/zmqserver/,$(addprefix broker/,admission.py deadlines.py dispatch.py replycache.py shell.py state.py) protocol.py worker.py)
$(STAMP): pyproject.toml setup.py $(COMPILED_SRC)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/zmqserver serve examples.upper:app --port 6660 6661

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

# The whole suite, then again on the pure-Python path (the fallback where nothing could be
# compiled: Python socket I/O, and the dispatch core and protocol run from source), so both
# paths are held to the same tests.
test: $(STAMP) lint typecheck
	$(BIN)/pytest tests
	ZMQSERVER_PURE_PYTHON=1 $(BIN)/pytest tests/integration tests/unit/test_io.py tests/unit/test_shell.py \
		tests/unit/test_compiled.py tests/unit/test_protocol.py tests/unit/test_dispatch*.py \
		tests/unit/test_deadlines.py tests/unit/test_replycache.py tests/unit/test_pair.py

# The benchmark suite (bench/README.md): about 5 minutes; JSON and Markdown in bench/results/,
# the plot in docs/bench.png. The bench extra adds matplotlib for the plot.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --out bench/results --plot docs/bench.png

# Also what the builds left in the tree: mypyc's C sources in build/, the extensions in src/.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
	find src -name '*.so' -delete
