# make            release build; ./server and ./client at the repository root
# make cert       ./mycert.pem, self-signed (FORCE=1 replaces an existing one)
# make run-server build, make the certificate if missing, run ./server --demo 8081
# make test       formatting, lints and every test (what CI runs)

CARGO ?= cargo
PORT ?= 8081

.PHONY: all cert run-server test lint clean

all:
	$(CARGO) build --release --locked --bins
	install -m 755 target/release/server target/release/client .

cert:
	scripts/gencert.sh mycert.pem

run-server: all cert
	./server --demo $(PORT)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test: lint
	$(CARGO) test --locked

clean:
	$(CARGO) clean
	rm -f server client
