# One place for the gates CI runs: `make test` is the README's test command.
#
# It needs cargo, python3 (3.10 or newer) and Node.js 20 with npm: the Python tools
# are installed into a fresh virtual environment, .venv, on first use; the browser
# tests' npm packages come from web/package-lock.json (`npm ci`), and Debian's
# chromium is installed with apt-get when it is missing (as root, as CI runs).
.PHONY: test lint rust-lint rust-test py-env py-build py-lint py-test conformance-bin web-lint web-env web-test go-lint go-test fmt build serve clean-venv fuzz bench bench-python

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# The extension builds in its own target dir: switching the python feature on and off
# in one dir would rebuild pyo3's dependency chain every time.
PY_TARGET := target/python

test: lint rust-test py-test web-test go-test

lint: rust-lint py-lint web-lint go-lint

# --workspace: the library, moechat-server and the instruments in tools/ (whose tests
# run the tools against the server binary built beside them).
rust-lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	CARGO_TARGET_DIR=$(PY_TARGET) cargo clippy --lib -p moechat --features python --locked -- -D warnings

rust-test:
	cargo test --workspace --all-targets --locked

$(VENV)/.tools: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet "maturin>=1.9.4,<2" "pytest>=8" "pytest-timeout>=2" "trustme>=1.1" "ruff>=0.6" "mypy>=1.10"
	touch $@

py-env: $(VENV)/.tools

# Builds the extension (debug) and installs the package into the venv, editable.
py-build: py-env
	VIRTUAL_ENV=$(abspath $(VENV)) CARGO_TARGET_DIR=$(PY_TARGET) $(VENV)/bin/maturin develop --quiet --locked

py-lint: py-env
	$(VENV)/bin/ruff check python tests bench web/tests
	$(VENV)/bin/ruff format --check python tests bench web/tests
	$(VENV)/bin/mypy python/moechat tests/*.py bench/*.py web/tests/*.py

# stubtest checks the hand-written .pyi against the built extension. The client
# scripts of conformance/ need their fake server, moechat-conformance.
py-test: py-build conformance-bin
	$(VPY) -m mypy.stubtest moechat._moechat
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

conformance-bin:
	cargo build --locked -p moechat-tools --bin moechat-conformance

# The page and its tests are plain ES modules: node checks that each one parses.
web-lint:
	for f in web/static/*.js web/tests/*.js; do node --check $$f || exit 1; done

CHROMIUM ?= /usr/bin/chromium
web-env:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "the browser tests need $(CHROMIUM): sudo apt-get install chromium" >&2; exit 1; \
	  fi; \
	fi
	cd web && npm ci --no-audit --no-fund --loglevel=error

# The chat page in Chromium (playwright-core), and the JavaScript client in Node.js,
# against the moechat-server binary; the Python peer comes from the venv.
web-test: web-env py-build conformance-bin
	cargo build --locked --bin moechat-server
	cd web && MOECHAT_PYTHON=$(abspath $(VPY)) CHROMIUM=$(CHROMIUM) npm test

# The Go client: its own module, standard library only. Its tests run against fake
# servers of their own, and here also against moechat-server and the Python client;
# each fuzz target gets a few seconds beyond its seeds.
GO ?= go
go-lint:
	cd clients/go && test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	cd clients/go && $(GO) vet ./...

go-test: py-build
	cargo build --locked --bin moechat-server
	cd clients/go && MOECHAT_SERVER=$(abspath target/debug/moechat-server) MOECHAT_PYTHON=$(abspath $(VPY)) \
	  $(GO) test -race -count=1 ./...
	cd clients/go && $(GO) test -run '^$$' -fuzz FuzzParseFrame -fuzztime 5s .
	cd clients/go && $(GO) test -run '^$$' -fuzz FuzzReadLine -fuzztime 5s .

fmt:
	cargo fmt --all
	cd clients/go && gofmt -w .
	$(VENV)/bin/ruff format python tests bench web/tests

build:
	cargo build --release --locked

serve:
	cargo run --release --locked --bin moechat-server

# Fuzzes each of FUZZ_TARGETS for FUZZ_SECS (needs `cargo install cargo-fuzz`;
# RUSTC_BOOTSTRAP lets the stable toolchain take the sanitizer flags). Not part of `test`.
# frames: the server's frame and request parsers; pushes: the client's push reading.
FUZZ_SECS ?= 600
FUZZ_TARGETS ?= frames pushes
fuzz:
	set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  cp -n fuzz/seeds/$$t/* fuzz/corpus/$$t/; \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECS) -max_len=4096); \
	done

# The benchmarks of docs/BENCHMARKS.md (not part of `test`): W1-W4 against MoeChat,
# redis-server and nats-server (apt-get install redis-server nats-server), then W5 with a
# release build of the Python package in its own virtual environment.
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=
bench:
	cargo build --release --locked --workspace --bins
	./target/release/moechat-bench $(BENCH_ARGS)

$(BENCH_VENV)/.built: pyproject.toml Cargo.toml Cargo.lock $(shell find src python -name '*.rs' -o -name '*.py' -o -name '*.pyi')
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet . "redis>=5"
	touch $@

bench-python: $(BENCH_VENV)/.built
	cargo build --release --locked --bin moechat-server
	$(BENCH_VENV)/bin/python bench/w5_python.py --server-bin target/release/moechat-server $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
