//! What each command costs the PostgreSQL store in round trips, counted on the wire between a
//! real server and PostgreSQL (or PgBouncer): every Sync and simple Query the server sends,
//! and every statement it parses or prepares. A regression check of docs/SCALING.md's table.

use std::net::TcpStream;
use std::time::Duration;

use openssl::ssl::SslStream;

use crate::common::pg::cluster;
use crate::common::pg_wire::{WireCounter, WireCounts};
use crate::common::*;

/// How long the wire must be quiet before a reading is taken.
const QUIET: Duration = Duration::from_millis(100);

/// The most each command may cost, in round trips.
const VIEW: u64 = 1;
const UPDATE: u64 = 2;
const LOGIN: u64 = 4;
const FAILED_LOGIN: u64 = 4;
const SIGNUP: u64 = 3;
const LEGACY: u64 = 4;
/// Not among the goals: a count, a check, forgiving it and the write.
const PASSWD: u64 = 4;

/// What `f` sent PostgreSQL, once the wire is quiet again.
fn counted(counter: &WireCounter, f: impl FnOnce()) -> WireCounts {
    let before = counter.settle(QUIET);
    f();
    counter.settle(QUIET).since(before)
}

/// One command on `ssl`, which must get `expected`; what it cost.
fn command(
    counter: &WireCounter,
    ssl: &mut SslStream<TcpStream>,
    document: &str,
    expected: &str,
) -> WireCounts {
    counted(counter, || {
        let reply = call(ssl, document);
        assert_eq!(code(&reply), expected, "{document}: {reply}");
    })
}

fn passwd(current: &str, new: &str) -> String {
    format!("<passwd><password>{current}</password><new_password>{new}</new_password></passwd>")
}

fn login(user: &str, password: &str) -> String {
    format!("<login><username>{user}</username><password>{password}</password></login>")
}

/// Every command of the account protocol and the legacy exchange, on a server whose store is
/// reached through `counter`: each within its budget, and after a warm-up no statement parsed
/// or prepared (each runs as `EXECUTE` of the statement its server connection prepared).
fn every_command_within_budget(fx: &Fixture, counter: &WireCounter, database: &str) {
    let server = fx.server(&["--db", database]);
    let mut costs = Vec::new();
    let mut check = |what: &str, cost: WireCounts, budget: u64| {
        costs.push(format!("{what}: {cost:?}"));
        assert!(
            cost.round_trips() <= budget && cost.named_parses == 0 && cost.prepares == 0,
            "{what} cost {cost:?}: more than {budget} round trips, or a statement prepared \
             after the warm-up; all so far: {costs:#?}"
        );
    };
    // Warm-up: the pool opens its connections, and each statement is prepared on them.
    let warm_up = counted(counter, || {
        let mut ssl = tls_connect(&server.addr());
        let signup = "<signup><username>counted</username><password>counted-pw</password></signup>";
        assert_eq!(code(&call(&mut ssl, signup)), "1000");
        drop(ssl);
        for _ in 0..2 {
            let mut ssl = tls_connect(&server.addr());
            assert_eq!(code(&call(&mut ssl, &login("counted", "wrong-pw"))), "2200");
            assert_eq!(code(&call(&mut ssl, &login("nobody", "wrong-pw"))), "2200");
            assert_eq!(
                code(&call(&mut ssl, &login("counted", "counted-pw"))),
                "1000"
            );
            for document in [
                "<view/>",
                "<update><phone>555 0199</phone></update>",
                &passwd("counted-pw", "counted-pw2"),
                &passwd("counted-pw2", "counted-pw"),
            ] {
                assert_eq!(code(&call(&mut ssl, document)), "1000", "{document}");
            }
            assert_eq!(
                exchange(&server.addr(), &request("counted", "counted-pw")),
                VALID_REPLY
            );
        }
    });
    assert!(
        warm_up.prepares > 0,
        "the counter saw no statement prepared: {warm_up:?}"
    );

    let mut ssl = tls_connect(&server.addr());
    let other = "<signup><username>second</username><password>second-pw</password></signup>";
    check("signup", command(counter, &mut ssl, other, "1000"), SIGNUP);
    let failed = command(counter, &mut ssl, &login("counted", "wrong-pw"), "2200");
    check("failed login", failed, FAILED_LOGIN);
    let unknown = command(counter, &mut ssl, &login("nobody", "wrong-pw"), "2200");
    check("login of no account", unknown, FAILED_LOGIN);
    let ok = command(counter, &mut ssl, &login("counted", "counted-pw"), "1000");
    check("login", ok, LOGIN);
    for _ in 0..3 {
        check("view", command(counter, &mut ssl, "<view/>", "1000"), VIEW);
    }
    let update = "<update><phone>555 0100</phone></update>";
    check("update", command(counter, &mut ssl, update, "1000"), UPDATE);
    check("view", command(counter, &mut ssl, "<view/>", "1000"), VIEW);
    let changed = command(
        counter,
        &mut ssl,
        &passwd("counted-pw", "counted-pw2"),
        "1000",
    );
    check("passwd", changed, PASSWD);
    assert_eq!(
        code(&call(&mut ssl, &passwd("counted-pw2", "counted-pw"))),
        "1000"
    );
    drop(ssl);
    let legacy = counted(counter, || {
        assert_eq!(
            exchange(&server.addr(), &request("counted", "counted-pw")),
            VALID_REPLY
        )
    });
    check("legacy exchange", legacy, LEGACY);
    let wrong = counted(counter, || {
        assert_eq!(
            exchange(&server.addr(), &request("counted", "wrong-pw")),
            b"Invalid Message"
        )
    });
    check("legacy exchange refused", wrong, LEGACY);
    // What PostgreSQL may log of a failing statement (its text) holds no password hash and
    // no account information: those go as bound values.
    for private in ["$pbkdf2-sha512$", "555 0100", "555 0199"] {
        assert!(
            !counter.query_text_contains(private.as_bytes()),
            "{private:?} was written into a statement's text"
        );
    }
    assert!(counter.query_text_contains(b"EXECUTE ssc_"));
    eprintln!("round trips per command: {costs:#?}");
}

#[test]
fn each_command_costs_postgresql_a_few_round_trips() {
    let fx = Fixture::new();
    let url = cluster().new_database();
    let counter = WireCounter::start(cluster().port);
    let database = url.replace(
        &format!(":{}/", cluster().port),
        &format!(":{}/", counter.port()),
    );
    every_command_within_budget(&fx, &counter, &database);
}

#[test]
fn each_command_costs_pgbouncer_a_few_round_trips() {
    let fx = Fixture::new();
    let url = bounced_database();
    let counter = WireCounter::start(bouncer().port());
    let database = url.replace(
        &format!(":{}/", bouncer().port()),
        &format!(":{}/", counter.port()),
    );
    every_command_within_budget(&fx, &counter, &database);
}
