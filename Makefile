# robustattr — the two set-up commands: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: demo test test-fast bench lint docs docs-serve clean venv study

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m robustattr.apps.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra -n 2 --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# CPU-sized benchmarks by default; `make bench BENCH_ARGS=` runs the full sizes (meant for a GPU).
BENCH_ARGS ?= --quick
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# The papers' experiment on the digits: 9 objectives trained and evaluated the same way, one table
# (outputs/study/digits/study.md; resumable: rerun to continue). `make study STUDY_ARGS=--dry-run` estimates the time.
study: $(STAMP)
	$(BIN)/python study.py run configs/study/digits.yaml $(STUDY_ARGS)

# ruff (style, imports, bugbear), the import-linter contracts in pyproject.toml (layers, no
# cycles) and a strict build of the documentation site into a throw-away folder.
lint: $(STAMP)
	$(BIN)/ruff check robustattr tests benchmarks train.py certify.py docs/hooks.py
	$(BIN)/lint-imports
	tmp=$$(mktemp -d) && PYTHONPATH=$(CURDIR) $(BIN)/mkdocs build --strict --quiet --site-dir $$tmp; rc=$$?; rm -rf $$tmp; exit $$rc

# The documentation site (MkDocs + Material + mkdocstrings) into site/; docs-serve on :8000.
docs: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/mkdocs serve

clean:
	rm -rf outputs wandb lightning_logs .pytest_cache site
