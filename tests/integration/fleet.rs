//! Two server instances on one PostgreSQL database, behind a real HAProxy with the PROXY
//! protocol: what the fleet looks like to its clients.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::pg::cluster;
use crate::common::*;
use crate::crash::{check, report, write_until};

/// Two instances on a fresh database, sharing one ticket key and trusting HAProxy's address
/// (127.0.0.1), with `extra` arguments; and HAProxy in front.
fn fleet(fx: &Fixture, extra: &[&str]) -> (Server, Server, Haproxy) {
    fleet_on(fx, &cluster().new_database(), extra)
}

/// [`fleet`] on the database at `url`.
fn fleet_on(fx: &Fixture, url: &str, extra: &[&str]) -> (Server, Server, Haproxy) {
    let key = fx.path().join("ticket.key");
    if !key.exists() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ticketkey.sh");
        let made = std::process::Command::new(script)
            .arg(&key)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
    }
    let key = key.display().to_string();
    let mut args = vec![
        "--db",
        url,
        "--ticket-key-file",
        key.as_str(),
        "--proxy-protocol-from",
        "127.0.0.1/32",
    ];
    args.extend(extra);
    let one = fx.server(&[&args[..], &["--demo"]].concat());
    let two = fx.server(&args);
    let haproxy = Haproxy::start(&[&one, &two]);
    (one, two, haproxy)
}

fn login(user: &str, password: &str) -> String {
    format!("<login><username>{user}</username><password>{password}</password></login>")
}

#[test]
fn the_fleet_shares_accounts_counts_and_sees_each_client() {
    let fx = Fixture::new();
    let (one, two, fleet) = fleet(&fx, &["--max-address-failures", "3"]);
    // An account made through the fleet is used through it, on both instances in turn.
    let mut ssl = tls_connect_from("127.0.6.1", &fleet.addr());
    let signup = "<signup><username>roamer</username><password>roamer-pass</password></signup>";
    assert_eq!(code(&call(&mut ssl, signup)), "1000");
    drop(ssl);
    for _ in 0..4 {
        let mut ssl = tls_connect_from("127.0.6.1", &fleet.addr());
        assert_eq!(
            code(&call(&mut ssl, &login("roamer", "roamer-pass"))),
            "1000"
        );
    }
    for instance in [&one, &two] {
        instance.stdout.wait_for("the client's own address", |t| {
            t.contains("Connection: 127.0.6.1:")
        });
        let console = instance.stdout.text();
        assert!(
            !console.contains("Connection: 127.0.0.1:"),
            "{console}\n{}",
            instance.stderr.text()
        );
    }
    // Failures from one client address, spread over both instances, are counted together,
    // under that address and not HAProxy's: the third starts a refusal (1 s, doubling with
    // each failure after it), so one of the next tries meets it however slow the machine.
    for n in 0..3 {
        let mut ssl = tls_connect_from("127.0.6.2", &fleet.addr());
        let reply = call(&mut ssl, &login(&format!("nobody{n}"), "guess"));
        assert_eq!(code(&reply), "2200", "{reply}");
    }
    let refused = (3..9).any(|n| {
        let mut ssl = tls_connect_from("127.0.6.2", &fleet.addr());
        code(&call(&mut ssl, &login(&format!("nobody{n}"), "guess"))) == "2502"
    });
    assert!(refused, "the address was never refused");
    let mut ssl = tls_connect_from("127.0.6.3", &fleet.addr());
    assert_eq!(
        code(&call(&mut ssl, &login("roamer", "roamer-pass"))),
        "1000"
    );
}

#[test]
fn the_fleet_works_through_pgbouncer_in_transaction_pooling() {
    let fx = Fixture::new();
    // Twenty logins of one account at once: each counts as a failure of the name until its
    // password is checked, so the default 5 would refuse most of them.
    let (_one, _two, fleet) = fleet_on(&fx, &bounced_database(), &["--max-login-failures", "100"]);
    let mut ssl = tls_connect(&fleet.addr());
    let signup = "<signup><username>pooled</username><password>pooled-pass</password></signup>";
    assert_eq!(code(&call(&mut ssl, signup)), "1000");
    drop(ssl);
    // Logins at once, from 20 addresses, through both instances: every one succeeds, on
    // whichever server connection PgBouncer lends each statement.
    let logins: Vec<_> = (1..=20)
        .map(|n| {
            let addr = fleet.addr();
            thread::spawn(move || {
                let mut ssl = tls_connect_from(&format!("127.0.7.{n}"), &addr);
                let reply = call(&mut ssl, &login("pooled", "pooled-pass"));
                let view = call(&mut ssl, "<view/>");
                let update = call(
                    &mut ssl,
                    &format!("<update><phone>555 {n:04}</phone></update>"),
                );
                (reply, view, update)
            })
        })
        .collect();
    for login in logins {
        let (reply, view, update) = login.join().unwrap();
        assert_eq!(code(&reply), "1000", "{reply}");
        assert_eq!(code(&view), "1000", "{view}");
        assert_eq!(code(&update), "1000", "{update}");
    }
    let mut ssl = tls_connect(&fleet.addr());
    assert_eq!(
        code(&call(&mut ssl, &login("pooled", "pooled-pass"))),
        "1000"
    );
    let view = call(&mut ssl, "<view/>");
    assert!(view.contains("<version>21</version>"), "{view}");
}

#[test]
fn a_tls_session_resumes_on_the_other_instance() {
    let fx = Fixture::new();
    let (one, two, fleet) = fleet(&fx, &[]);
    let saved = fx.path().join("session.der").display().to_string();
    let port = fleet.port_arg();
    let args = [
        "-v",
        "--reuse-session",
        saved.as_str(),
        "127.0.0.1",
        port.as_str(),
    ];
    let first = fx.client(&args, b"aticle\n123\n");
    assert_transcript(&first, VALID_REPLY);
    let second = fx.client(&args, b"aticle\n123\n");
    assert_transcript(&second, VALID_REPLY);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("TLS session resumed"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Round robin: one exchange on each instance.
    for instance in [&one, &two] {
        instance
            .stdout
            .wait_for("its exchange", |t| t.matches("Client msg").count() == 1);
    }
}

#[test]
fn killing_an_instance_under_writes_loses_nothing_and_the_fleet_serves_on() {
    let fx = Fixture::new();
    // Every signup comes from 127.0.0.1: no limit on them to wait out.
    let (victim, _survivor, fleet) = fleet(
        &fx,
        &[
            "--max-address-failures",
            "1000000",
            "--max-signups-per-address",
            "1000000",
        ],
    );
    let progress = write_until(&fx, &fleet, &victim, 0);
    drop(victim);
    // HAProxy takes the dead instance out; new work goes to the other.
    let started = Instant::now();
    loop {
        let out = fx.command(
            &fleet,
            &["--user", "after-kill"],
            "signup",
            "after-kill-pw\n",
        );
        if out.status.success() {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the fleet stopped serving: {out:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let (mut acknowledged, mut lost) = (0, Vec::new());
    check(&fx, &fleet, &progress, &mut acknowledged, &mut lost);
    report("fleet: one of two instances killed", acknowledged, &lost);
}
