# make            release build; ./server, ./client, ./bench and ./admin at the repository root
# make cert       ./mycert.pem, self-signed (FORCE=1 replaces an existing one); KEY=ec writes
#                 ./mycert-ec.pem, an ECDSA P-256 one, for a second --cert
# make ticket-key ./ticket.key, a shared session-ticket key (TICKET_KEY=FILE; FORCE=1 replaces)
# make client-cert NAME=alice   ./alice.pem: a self-signed client certificate (ECDSA P-256) and
#                 its key, 0600, to enroll for signing in (FORCE=1 replaces an existing one)
# make run-server build, make the certificate if missing, run ./server --demo on 127.0.0.1:8081
#                 (the demo account's password is weak: BIND=ADDR serves it elsewhere)
# make test       formatting, lints, every test and the TLS audit (what CI runs); first it
#                 installs what the tests run and the machine lacks (python3, gcc, postgresql-15,
#                 haproxy, pgbouncer, patroni, etcd-server, sslscan) as root, or stops at once
#                 naming the apt-get command that does
# make tls-audit  scan the server with sslscan
# make bench      benchmarks against nginx, openssl s_server and the crypto floor (installs
#                 nginx-light and libnginx-mod-stream if missing)
# make cluster    PostgreSQL, two instances and HAProxy on port 8081 (PORT=...), until Ctrl-C;
#                 HA=1 is make cluster-ha
# make cluster-ha the same with etcd and two PostgreSQL nodes under Patroni behind the
#                 instances; it says which node is the primary and how to kill, hang or
#                 switch it over (apt-get install patroni etcd-server)
# make compare    the C programs (compare/*.c, or ORIG_SERVER=... ORIG_CLIENT=... builds of the
#                 original) and the Rust ones in the four pairings; fails on a difference the
#                 README's table does not explain

CARGO ?= cargo
PORT ?= 8081
TICKET_KEY ?= ticket.key
# make cert: the key type, and the arguments of scripts/gencert.sh for each.
KEY ?= rsa
CERT_ARGS_rsa := mycert.pem
CERT_ARGS_ec := mycert-ec.pem ec
# make compare: the Rust programs are the release build (make all), or those in RUST_BIN=DIR,
# built already (make test uses the debug build cargo test made).
RUST_BIN ?=
COMPARE_DIR := build/compare
COMPARE_CFLAGS := -O2 -Wall -Wextra -Werror

.PHONY: all cert client-cert ticket-key run-server test test-unit test-integration test-compare \
	test-failover nice-clippy clippy lint tls-audit tls-scan bench cluster cluster-ha compare clean

all:
	$(CARGO) build --release --locked --bins
	install -m 755 target/release/server target/release/client target/release/bench \
		target/release/admin .

cert:
ifeq ($(CERT_ARGS_$(KEY)),)
	$(error make cert: KEY=$(KEY) is not a key type: KEY=rsa (the default) writes mycert.pem, KEY=ec writes mycert-ec.pem)
endif
	scripts/gencert.sh $(CERT_ARGS_$(KEY))

client-cert:
ifndef NAME
	$(error make client-cert: say whose: make client-cert NAME=alice writes alice.pem)
endif
	scripts/gencert.sh $(NAME).pem ec $(NAME)

ticket-key:
	scripts/ticketkey.sh $(TICKET_KEY)

BIND ?= 127.0.0.1

run-server: all cert
	@echo "run-server: the demo account aticle/123 on $(BIND) only (BIND=:: serves every interface)"
	./server --demo --bind $(BIND) $(PORT)

lint: clippy
	$(CARGO) fmt --check
	scripts/check-links.py

# Clippy in a target directory of its own, so that it can run beside a test of the build in
# target/ (make test runs it, at the lowest priority, beside the failover tests).
clippy:
	CARGO_TARGET_DIR=target/clippy $(CARGO) clippy --locked --all-targets -- -D warnings

# First, before anything is built, the programs the tests run: installed as root when missing
# (scripts/test-needs.sh), or named in one line with the apt-get command that installs them.
# Then the formatting and the links, and one build. Then the two failover tests side by side,
# each on a Patroni cluster of its own: they time what they see, but wait on Patroni's timers
# (under half a core together), so clippy runs beside them at the lowest priority (nice 19),
# in the CPU they leave. Then, at once, each group's output held until it ends
# (--output-sync): the unit tests; the integration tests, 8 at a time (most wait on servers and
# timeouts rather than on the CPU); make compare; the TLS audit (beside those, a switchover
# took 12 s instead of 3). Last, alone and one at a time, the floods tests: they compare an
# honest client's times before and during a flood.
# Test binaries of their own, which no group of make test runs.
STRAY_TESTS := $(strip $(wildcard tests/*.rs) \
	$(filter-out tests/integration/main.rs,$(wildcard tests/*/main.rs)))
TEST_GROUPS := test-unit test-integration test-compare tls-scan
test:
	scripts/test-needs.sh
	$(CARGO) fmt --check
	scripts/check-links.py
	@test -z "$(STRAY_TESTS)" || { echo "make test: $(STRAY_TESTS): no group runs it;" \
		"integration tests are modules of tests/integration/" >&2; exit 1; }
	$(CARGO) test --locked --no-run
	$(MAKE) -j --output-sync=target test-failover nice-clippy
	$(MAKE) -j --output-sync=target $(TEST_GROUPS)
	$(CARGO) test --locked --test integration -- --test-threads=1 floods::

test-failover:
	$(CARGO) test --locked --test integration -- --test-threads=2 failover::

nice-clippy:
	nice -n 19 $(MAKE) --no-print-directory clippy

test-unit:
	$(CARGO) test --locked --lib --bins -- --test-threads=4
	$(CARGO) test --locked --doc

test-integration:
	$(CARGO) test --locked --test integration -- --test-threads=8 --skip floods:: --skip failover::

test-compare:
	$(MAKE) compare RUST_BIN=target/debug

# The TLS audit with sslscan (scripts/tls-audit.sh installs it as root when missing); then
# whether it catches TLS 1.3 offered, a scan of the protocols alone.
PROTOCOLS_ONLY := --no-ciphersuites --no-groups --no-heartbleed --no-fallback --no-compression \
	--no-renegotiation --no-check-certificate
tls-audit:
	$(CARGO) build --locked --bin server
	$(MAKE) --no-print-directory tls-scan

# The scans alone, of the debug server as built (make test's: `cargo build` there would build
# it again, without the features the tests' dependencies add, under the running tests).
tls-scan:
	scripts/tls-audit.sh target/debug/server
	@out=$$(SERVER_ARGS=--allow-tls13 SSLSCAN_ARGS="$(PROTOCOLS_ONLY)" \
		scripts/tls-audit.sh target/debug/server 2>&1); \
	case "$$out" in *"FAILED: TLSv1.3 is offered"*) \
		echo "tls-audit: catches TLS 1.3 when it is offered";; \
	*) printf '%s\n' "$$out" >&2; \
		echo "tls-audit: did not catch TLS 1.3 being offered (its run is above)" >&2; exit 1;; \
	esac

# Benchmarks, side by side with nginx, openssl s_server and the crypto floor
# (docs/BENCHMARKS.md).
bench:
	scripts/bench.sh

# The scale-out set-up on one machine (docs/SCALING.md); HA=1 (anything but empty or 0) is
# cluster-ha, the same with a Patroni-managed primary and standby.
HA ?=
cluster:
	PORT=$(PORT) scripts/cluster$(if $(filter-out 0,$(HA)),-ha).sh

cluster-ha:
	PORT=$(PORT) scripts/cluster-ha.sh

# The project's C stand-ins for the original server.c and client.c (gcc, libssl-dev).
$(COMPARE_DIR)/%: compare/%.c
	@mkdir -p $(COMPARE_DIR)
	$(CC) $(COMPARE_CFLAGS) -o $@ $< -lssl -lcrypto

# The original and the port side by side (scripts/compare.py; docs/COMPARE.md).
compare: $(if $(RUST_BIN),,all) $(COMPARE_DIR)/server $(COMPARE_DIR)/client
	ORIG_SERVER="$(ORIG_SERVER)" ORIG_CLIENT="$(ORIG_CLIENT)" scripts/compare.py --rust-bin $(or $(RUST_BIN),.) \
		--c-server $(COMPARE_DIR)/server --c-client $(COMPARE_DIR)/client

clean:
	$(CARGO) clean
	rm -f server client bench admin
	rm -rf build
