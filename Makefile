# One place for the gates CI runs: `make test` is the README's test command.
.PHONY: test lint fmt build serve

# Everything: formatting, lints, unit and integration tests.
test: lint
	cargo test --all-targets --locked

lint:
	cargo fmt --check
	cargo clippy --all-targets --locked -- -D warnings

fmt:
	cargo fmt

build:
	cargo build --release --locked

serve:
	cargo run --release --locked --bin moechat-server
