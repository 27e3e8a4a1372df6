//! Several server instances on one PostgreSQL database: what one does, the other sees;
//! failed logins are counted across them; a stopped database gives clean errors, then the
//! servers recover by themselves.

use std::time::{Duration, Instant};

use crate::common::pg::{Cluster, cluster};
use crate::common::pg_wire::WireCounter;
use crate::common::*;

/// A scripted command's exit code and stderr.
fn run(fx: &Fixture, server: &Server, user: &str, command: &str, password: &str) -> (i32, String) {
    let out = fx.command(server, &["--user", user], command, &format!("{password}\n"));
    (out.status.code().unwrap_or(-1), texts(&out).1)
}

#[test]
fn two_instances_share_accounts_and_failure_counts() {
    let fx = Fixture::new();
    let url = cluster().new_database();
    let one = fx.server(&["--db", &url]);
    let two = fx.server(&["--db", &url]);
    assert!(one.stderr.text().contains("listening on"));

    // Made through one, used through the other, in either protocol.
    assert_eq!(run(&fx, &one, "shared", "signup", "shared-password").0, 0);
    assert_eq!(run(&fx, &two, "shared", "login", "shared-password").0, 0);
    assert_eq!(
        exchange(&two.addr(), &request("SHARED", "shared-password")),
        VALID_REPLY
    );

    // Failures through the first count on the second.
    for _ in 0..5 {
        let (code, err) = run(&fx, &one, "shared", "login", "guess-word");
        assert_eq!(code, 1, "{err}");
    }
    let (code, err) = run(&fx, &two, "shared", "login", "shared-password");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(": 2502 ") && err.contains("too many failed logins"),
        "{err}"
    );
}

#[test]
fn a_stopped_database_gives_clean_errors_then_service_resumes() {
    let fx = Fixture::new();
    let own = Cluster::new();
    let url = own.new_database();
    let server = fx.server(&["--db", &url]);
    assert_eq!(
        run(&fx, &server, "steady", "signup", "steady-password").0,
        0
    );

    own.stop_server();
    let started = Instant::now();
    let (code, err) = run(&fx, &server, "steady", "login", "steady-password");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(": 2400 "), "{err}");
    assert_eq!(
        exchange(&server.addr(), &request("steady", "steady-password")),
        b"Invalid Message"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "errors took {:?}",
        started.elapsed()
    );

    own.start_server();
    assert_eq!(run(&fx, &server, "steady", "login", "steady-password").0, 0);
    assert_eq!(
        exchange(&server.addr(), &request("steady", "steady-password")),
        VALID_REPLY
    );
}

/// A login in a session opened first: its reply's code and how long it took to come.
fn timed_login(server: &Server, user: &str, password: &str) -> (String, Duration) {
    let mut ssl = tls_connect(&server.addr());
    let login =
        format!("<login><username>{user}</username><password>{password}</password></login>");
    let asked = Instant::now();
    let reply = call(&mut ssl, &login);
    (code(&reply).to_string(), asked.elapsed())
}

/// A database that hangs (as a stopped server or a frozen machine: connections open, nothing
/// answered) is given up within the command's deadline, its connections are dropped, and a
/// second host in the URL takes over at once.
#[test]
fn a_hung_database_is_left_within_seconds_for_the_next_host() {
    let fx = Fixture::new();
    let url = cluster().new_database();
    let proxy = WireCounter::start(cluster().port);
    let direct = format!("127.0.0.1:{}", cluster().port);
    let proxied = format!("127.0.0.1:{}", proxy.port());
    let server = fx.server(&["--db", &url.replace(&direct, &proxied)]);
    assert_eq!(
        run(&fx, &server, "frozen", "signup", "frozen-password").0,
        0
    );
    proxy.freeze(true);
    for _ in 0..2 {
        let (code, took) = timed_login(&server, "frozen", "frozen-password");
        assert_eq!(code, "2400");
        assert!(took < Duration::from_secs(3), "refused after {took:?}");
    }
    proxy.freeze(false);
    assert_eq!(timed_login(&server, "frozen", "frozen-password").0, "1000");
    drop(server);

    // The hung host first in the URL, a live one second.
    let both = url.replace(&direct, &format!("{proxied},{direct}"));
    let server = fx.server(&["--db", &both]);
    assert_eq!(timed_login(&server, "frozen", "frozen-password").0, "1000");
    proxy.freeze(true);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        let (code, took) = timed_login(&server, "frozen", "frozen-password");
        slowest = slowest.max(took);
        if code == "1000" {
            break;
        }
        assert_eq!(code, "2400");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no login through the second host"
        );
    }
    assert!(
        slowest < Duration::from_secs(3),
        "an answer took {slowest:?}"
    );
    proxy.freeze(false);
}
