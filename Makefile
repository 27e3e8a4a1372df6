# make            release build; ./server, ./client, ./bench and ./admin at the repository root
# make cert       ./mycert.pem, self-signed (FORCE=1 replaces an existing one)
# make ticket-key ./ticket.key, a shared session-ticket key (TICKET_KEY=FILE; FORCE=1 replaces)
# make run-server build, make the certificate if missing, run ./server --demo 8081
# make test       formatting, lints, every test and the TLS audit (what CI runs); the store's
#                 tests need PostgreSQL 15's binaries (Debian's postgresql-15; see .ci/run)
# make tls-audit  scan the server with sslscan (skipped if sslscan is missing)
# make bench      benchmarks against openssl s_server and the crypto floor
# make cluster    PostgreSQL, two instances and HAProxy on port 8081 (PORT=...), until Ctrl-C

CARGO ?= cargo
PORT ?= 8081
TICKET_KEY ?= ticket.key

.PHONY: all cert ticket-key run-server test lint tls-audit bench cluster clean

all:
	$(CARGO) build --release --locked --bins
	install -m 755 target/release/server target/release/client target/release/bench \
		target/release/admin .

cert:
	scripts/gencert.sh mycert.pem

ticket-key:
	scripts/ticketkey.sh $(TICKET_KEY)

run-server: all cert
	./server --demo $(PORT)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Most integration tests wait on servers and timeouts rather than on the CPU: run 8 at once.
test: lint
	$(CARGO) test --locked -- --test-threads=8
	$(MAKE) tls-audit

# The TLS audit needs sslscan (.ci/run installs it); without it the audit is skipped.
tls-audit:
	@if command -v sslscan >/dev/null; then \
		$(CARGO) build --locked --bin server && \
		scripts/tls-audit.sh target/debug/server && \
		if SERVER_ARGS=--allow-tls13 scripts/tls-audit.sh target/debug/server >/dev/null 2>&1; then \
			echo "tls-audit: did not catch TLS 1.3 being offered" >&2; exit 1; \
		else echo "tls-audit: catches TLS 1.3 when it is offered"; fi; \
	else echo "tls-audit: skipped: sslscan is not installed (apt-get install sslscan)"; fi

# Benchmarks, side by side with openssl s_server and the crypto floor (docs/BENCHMARKS.md).
bench:
	scripts/bench.sh

# The scale-out set-up on one machine (docs/SCALING.md).
cluster:
	PORT=$(PORT) scripts/cluster.sh

clean:
	$(CARGO) clean
	rm -f server client bench admin
