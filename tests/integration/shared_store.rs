//! Several server instances on one PostgreSQL database: what one does, the other sees;
//! failed logins are counted across them; a stopped database gives clean errors, then the
//! servers recover by themselves.

use std::time::{Duration, Instant};

use crate::common::pg::{Cluster, cluster};
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
