//! The load generator against the real server: every mode runs, errors are counted, and the
//! figures come out as text and JSON.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// A run of thousands of commands takes 17 s alone, and more while other tests run.
const LONG_RUN: Duration = Duration::from_secs(180);

fn bench(fx: &Fixture, server: &Server, args: &[&str]) -> (String, String, bool) {
    let out = run_within(
        Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(args)
            .args(["127.0.0.1", &server.port_arg()])
            .current_dir(fx.path()),
        b"",
        LONG_RUN,
    );
    let (stdout, stderr) = texts(&out);
    (stdout, stderr, out.status.success())
}

#[test]
fn every_mode_runs_against_the_server() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--max-login-failures", "1000"]);
    let pid = server.child.id().to_string();
    for mode in ["full", "resume", "login", "session", "update", "hash"] {
        let json = fx.path().join(format!("{mode}.json"));
        let json_arg = json.display().to_string();
        let (stdout, stderr, ok) = bench(
            &fx,
            &server,
            &[
                "--mode", mode, "-c", "2", "-n", "12", "--pid", &pid, "--json", &json_arg,
            ],
        );
        assert!(ok, "{mode}: {stderr}");
        assert!(stdout.contains("operations    12 in"), "{mode}: {stdout}");
        assert!(stdout.contains("errors        none"), "{mode}: {stdout}");
        assert!(stdout.contains("server CPU"), "{mode}: {stdout}");
        let figures = std::fs::read_to_string(&json).unwrap();
        assert!(
            figures.contains(&format!("\"mode\": \"{mode}\"")),
            "{figures}"
        );
        assert!(figures.contains("\"server_peak_rss_kib\""), "{figures}");
    }
    for mode in ["full", "resume"] {
        let (stdout, stderr, ok) = bench(
            &fx,
            &server,
            &["--mode", mode, "--handshake-only", "-c", "2", "-n", "12"],
        );
        assert!(ok, "{mode}: {stderr}");
        assert!(stdout.contains("operations    12 in"), "{mode}: {stdout}");
        assert!(stdout.contains("errors        none"), "{mode}: {stdout}");
        // The suite of every handshake is counted (one name here: one certificate).
        assert!(stdout.contains("cipher suite  ECDHE-"), "{mode}: {stdout}");
        assert!(stdout.contains(" (12 handshakes)\n"), "{mode}: {stdout}");
    }
    let (stdout, stderr, ok) = bench(
        &fx,
        &server,
        &["--mode", "idle", "-c", "4", "--connections", "100"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("held open     100 sessions"), "{stdout}");
    assert!(stdout.contains("operations    100 in"), "{stdout}");
}

#[test]
fn failures_are_counted_by_kind() {
    let fx = Fixture::new();
    let server = fx.server(&[]); // no demo account: every legacy login is refused
    let (stdout, _, ok) = bench(&fx, &server, &["--mode", "full", "-c", "2", "-n", "6"]);
    assert!(ok);
    assert!(stdout.contains("operations    0 in"), "{stdout}");
    assert!(stdout.contains("6 wrong reply"), "{stdout}");
}

#[test]
fn a_long_session_run_moves_to_a_new_session_before_the_limit() {
    // One client, more views than a session may send (10,000 commands): the bench logs out
    // and in again before the limit, so a healthy server shows no error.
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let (stdout, stderr, ok) = bench(
        &fx,
        &server,
        &["--mode", "session", "-c", "1", "-n", "10005"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("operations    10005 in"), "{stdout}");
    assert!(stdout.contains("errors        none"), "{stdout}");
    let log = server.stderr.wait_for("the second session", |t| {
        t.matches("login as aticle: 1000").count() >= 2
    });
    assert!(
        !log.contains("at most 10000 commands"),
        "the limit was reached"
    );
}

#[test]
fn pid_may_be_given_for_each_process_of_a_server() {
    // A server of several processes (nginx's master and workers) is watched whole: every
    // --pid counts. Here the same server twice, and a process that is not a number.
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let pid = server.child.id().to_string();
    let json = fx.path().join("two.json");
    let json_arg = json.display().to_string();
    let (stdout, stderr, ok) = bench(
        &fx,
        &server,
        &[
            "--mode",
            "full",
            "--handshake-only",
            "-c",
            "2",
            "-n",
            "12",
            "--pid",
            &pid,
            "--pid",
            &pid,
            "--json",
            &json_arg,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("server CPU"), "{stdout}");
    let figures = std::fs::read_to_string(&json).unwrap();
    assert!(figures.contains("\"server_cpu_seconds\": "), "{figures}");
    let (_, stderr, ok) = bench(&fx, &server, &["--pid", &pid, "--pid", "nginx"]);
    assert!(!ok);
    assert!(
        stderr.contains("--pid: \"nginx\" is not a process id"),
        "{stderr}"
    );
}
