//! Command lines, start-up errors and the certificate script: one clear line and the right
//! exit status for each.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::common::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_print_the_original_usage_lines() {
    let server = env!("CARGO_BIN_EXE_server");
    let out = run_with_input(&mut Command::new(server), b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Usage: {server} <portnum>\n")
    );
    let client = env!("CARGO_BIN_EXE_client");
    for args in [
        &[][..],
        &["127.0.0.1"],
        &["a", "b", "c"],
        &["--bogus", "h", "1"],
    ] {
        let out = run_with_input(Command::new(client).args(args), b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("usage: {client} <hostname> <portnum>\n")
        );
    }
}

#[test]
fn help_and_version() {
    for program in [env!("CARGO_BIN_EXE_server"), env!("CARGO_BIN_EXE_client")] {
        let out = run_with_input(Command::new(program).arg("--help"), b"");
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--verbose") && help.contains("--timeout"),
            "{help}"
        );
        let out = run_with_input(Command::new(program).arg("-V"), b"");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn usage_errors_are_sentences_and_name_command_and_portal() {
    let client = env!("CARGO_BIN_EXE_client");
    let full = format!(
        "usage: {client} [options] [--portal] <hostname> <portnum> [COMMAND [FINGERPRINT]]"
    );
    for (args, why) in [
        (&[][..], "expects a host and a port;".to_string()),
        (
            &["127.0.0.1"],
            "expects a host and a port; got only \"127.0.0.1\";".into(),
        ),
        (
            &["h", "1", "view", "x", "y"],
            "expects a host and a port; got more: \"h\" \"1\" \"view\" \"x\" \"y\";".into(),
        ),
        (
            &["--user", "a", "h", "1", "view", "x"],
            "view takes no argument; \"x\" is one;".into(),
        ),
        (
            &["--user", "a", "h", "1", "unenroll"],
            "unenroll needs the certificate's FINGERPRINT after it (as certs lists them);".into(),
        ),
        (
            &["--user", "a", "h", "1", "view", "--cert-login"],
            "--cert-login needs --cert FILE: the certificate enrolled for --user;".into(),
        ),
        (&["--bogus", "h", "1"], "there is no option --bogus;".into()),
        (&["--cafile"], "option --cafile needs a value;".into()),
    ] {
        let out = run_with_input(Command::new(client).args(args), b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(
            err,
            format!("{client}: {} {full} (--help lists the options)\n", why),
            "{args:?}"
        );
    }
    let server = env!("CARGO_BIN_EXE_server");
    let out = run_with_input(Command::new(server).args(["1", "2"]), b"");
    assert_eq!(
        stderr(&out),
        format!(
            "{server}: expects a port number; got more: \"1\" \"2\" (--help lists the options)\n"
        )
    );
}

#[test]
fn bad_ports_are_usage_errors() {
    let fx = Fixture::new();
    for port in ["abc", "70000", "8081x", ""] {
        // Two lines: why on stderr, the original's usage line on stdout; exit status 2.
        let out = server_in(fx.path(), &[port]);
        assert_eq!(out.status.code(), Some(2), "{port:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "{}: {port:?} is not a port number (0-65535) (--help lists the options)\n",
                env!("CARGO_BIN_EXE_server")
            )
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("Usage: {} <portnum>\n", env!("CARGO_BIN_EXE_server"))
        );
    }
}

/// Every flag of the server that takes seconds, and the most it takes.
const LONGEST: [(&str, u64, &str); 7] = [
    ("--handshake-timeout", 3600, "an hour"),
    ("--timeout", 86_400, "a day"),
    ("--idle-timeout", 86_400, "a day"),
    ("--session-timeout", 604_800, "a week"),
    ("--ticket-key-lifetime", 604_800, "a week"),
    ("--grace-period", 86_400, "a day"),
    ("--hash-wait", 3600, "an hour"),
];

#[test]
fn durations_out_of_their_range_are_usage_errors() {
    let empty = tempfile::tempdir().unwrap();
    let server = env!("CARGO_BIN_EXE_server");
    for (flag, longest, words) in LONGEST {
        for value in [(longest + 1).to_string(), u64::MAX.to_string(), "0".into()] {
            let out = server_in(empty.path(), &[flag, &value, "--bind", "127.0.0.1", "0"]);
            assert_eq!(out.status.code(), Some(2), "{flag} {value}: {out:?}");
            assert_eq!(
                stderr(&out),
                format!(
                    "{server}: {flag}: {value:?} is not a number of seconds from 1 to {longest} \
                     ({words}) (--help lists the options)\n"
                )
            );
        }
    }
    let help = run_with_input(Command::new(server).arg("--help"), b"");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("at most a week"), "{help}");
    let out = run_with_input(
        Command::new(env!("CARGO_BIN_EXE_client")).args([
            "--timeout",
            &u64::MAX.to_string(),
            "127.0.0.1",
            "9",
        ]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("is not a number of seconds from 1 to 86400 (a day)"),
        "{out:?}"
    );
}

#[test]
fn the_longest_durations_serve_and_stop_without_a_panic() {
    let fx = Fixture::new();
    let longest: Vec<String> = LONGEST
        .iter()
        .flat_map(|(flag, secs, _)| [flag.to_string(), secs.to_string()])
        .collect();
    let args: Vec<&str> = longest.iter().map(String::as_str).collect();
    let server = fx.server(&args);
    // Every deadline of a connection, and the wait for a turn to hash.
    assert_eq!(
        exchange(&server.addr(), &request("x", "y")),
        b"Invalid Message"
    );
    let mut session = tls_connect(&server.addr());
    let signup = "<signup><username>ada</username><password>pw-ada-123</password></signup>";
    assert_eq!(code(&call(&mut session, signup)), "1000");
    session.shutdown().unwrap();
    drop(session);
    // A stop waits for nothing in flight, whatever its grace period.
    let (stdout, stderr) = (server.stdout.clone(), server.stderr.clone());
    assert!(server.terminate().success());
    stderr.wait_for_end();
    let output = [stdout.text(), stderr.text()].concat();
    assert!(!output.contains("panicked"), "{output}");
}

#[test]
fn a_port_in_use_is_named() {
    let fx = Fixture::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = server_in(fx.path(), &["--bind", "127.0.0.1", &port]);
    assert_fails_with(&out, &format!("cannot listen on port {port}"));
    assert!(stderr(&out).contains("in use"));
}

#[test]
fn a_missing_certificate_is_named() {
    let empty = tempfile::tempdir().unwrap();
    let out = server_in(empty.path(), &["--bind", "127.0.0.1", "0"]);
    assert_fails_with(&out, "cannot read certificate file mycert.pem");
    assert!(stderr(&out).contains("make cert"));
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let fx = Fixture::new();
    let other = Fixture::with_own_certificate();
    let key = other.cert_arg();
    let out = server_in(fx.path(), &["--key", &key, "--bind", "127.0.0.1", "0"]);
    assert_fails_with(&out, "does not match");
}

#[test]
fn a_weak_key_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-days", "1", "-newkey", "rsa:1024",
        ])
        .args([
            "-keyout",
            "weak.pem",
            "-out",
            "weak.pem",
            "-subj",
            "/CN=localhost",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success());
    let weak = dir.path().join("weak.pem");
    std::fs::set_permissions(&weak, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = server_in(
        dir.path(),
        &["--cert", "weak.pem", "--bind", "127.0.0.1", "0"],
    );
    assert_fails_with(&out, "too small");
}

#[test]
fn a_key_others_can_read_is_refused_with_the_fix() {
    let fx = Fixture::new();
    std::fs::set_permissions(fx.cert(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = server_in(fx.path(), &["--bind", "127.0.0.1", "0"]);
    assert_fails_with(&out, "can be read by others (mode 644)");
    assert!(stderr(&out).contains("chmod 600 mycert.pem"));
}

#[test]
fn the_key_is_read_from_the_file_whose_permissions_were_checked() {
    // A named pipe gives its bytes once, to the reader that opens it while the writer does:
    // a server that opened the key file to check it and again to read it waits for ever.
    let fx = Fixture::new();
    let pipe = fx.path().join("key.pipe");
    let made = Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    let pem = std::fs::read(fx.cert()).unwrap();
    let writer = std::thread::spawn(move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&pipe)
            .and_then(|mut key| key.write_all(&pem))
    });
    let server = Server::try_start(fx.path(), &["--cert", "mycert.pem", "--key", "key.pipe"])
        .unwrap_or_else(|log| panic!("the key through a pipe was refused: {log}"));
    writer.join().unwrap().unwrap();
    assert_eq!(
        exchange(&server.addr(), &request("x", "y")),
        b"Invalid Message"
    );
}

#[test]
fn a_database_others_can_read_is_used_with_a_warning() {
    let fx = Fixture::new();
    let db = fx.path().join("users.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = fx.server(&[]);
    let log = server
        .stderr
        .wait_for("the warning", |t| t.contains("users.db can be read"));
    assert!(
        log.contains("(mode 644)") && log.contains("chmod 600"),
        "{log}"
    );
    assert_eq!(
        exchange(&server.addr(), &request("x", "y")),
        b"Invalid Message"
    );
}

#[test]
fn the_client_names_a_server_that_is_not_there() {
    let fx = Fixture::new();
    let port = pg::free_port().to_string();
    let out = fx.client(&["127.0.0.1", &port], b"aticle\n123\n");
    assert_fails_with(&out, &format!("cannot connect to 127.0.0.1 port {port}"));
    let out = fx.client(&["no-such-host.invalid", "8081"], b"aticle\n123\n");
    assert_fails_with(&out, "cannot resolve no-such-host.invalid");
}

#[test]
fn the_client_refuses_an_end_of_input_instead_of_a_password() {
    let fx = Fixture::new();
    let out = fx.client(&["127.0.0.1", "9"], b"aticle\n");
    assert_fails_with(&out, "no password given");
    let long = format!("{}\n{}\n", "u".repeat(600), "p".repeat(600));
    let out = fx.client(&["127.0.0.1", "9"], long.as_bytes());
    assert_fails_with(&out, "too long");
}

#[test]
fn gencert_writes_a_private_verifiable_certificate_once() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("mycert.pem");
    let out = gencert(&pem, &[]);
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&pem).unwrap();
    assert!(text.contains("BEGIN PRIVATE KEY") && text.contains("BEGIN CERTIFICATE"));

    let details = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-text",
            "-in",
        ])
        .arg(&pem)
        .output()
        .unwrap();
    let details = String::from_utf8_lossy(&details.stdout);
    assert!(details.contains("CN = localhost"), "{details}");
    assert!(details.contains("DNS:localhost"), "{details}");
    assert!(details.contains("IP Address:127.0.0.1"), "{details}");
    assert!(details.contains("IP Address:0:0:0:0:0:0:0:1"), "{details}");
    assert!(details.contains("Public-Key: (2048 bit)"), "{details}");

    // Kept unless FORCE=1.
    assert!(gencert(&pem, &[]).status.success());
    assert_eq!(std::fs::read_to_string(&pem).unwrap(), text);
    assert!(gencert(&pem, &[("FORCE", "1")]).status.success());
    assert_ne!(std::fs::read_to_string(&pem).unwrap(), text);
}

#[test]
fn the_server_says_where_it_listens_and_what_a_stop_waits_for() {
    let fx = Fixture::new();
    let server = fx.server(&["--grace-period", "3"]);
    let line = server
        .stderr
        .text()
        .lines()
        .find(|l| l.starts_with("server: "))
        .expect("a start line")
        .to_string();
    assert_eq!(
        line,
        format!(
            "server: accounts in SQLite users.db; listening on 127.0.0.1:{}",
            server.port
        )
    );
    let _held = tls_connect(&server.addr());
    server
        .stdout
        .wait_for("the held connection", |t| t.contains("Connection: "));
    signal(&server.child, "TERM");
    let log = server
        .stderr
        .wait_for("the stop line", |t| t.contains("stopping: "));
    assert!(
        log.contains("stopping: waiting up to 3 s for 1 connection (signal again to stop now)"),
        "{log}"
    );
    assert!(server.wait_exit().success());
}
