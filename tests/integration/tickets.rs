//! Session-ticket keys shared by several servers (`--ticket-key-file`): servers with the same
//! key resume each other's sessions, rotation keeps old tickets working and renews them,
//! the files are reread, and bad files stop the start. Each server is the real binary, in
//! its own process; sessions go through the real client's `--reuse-session`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

/// Runs `scripts/ticketkey.sh FILE` in `dir` with `env` set.
fn ticketkey(dir: &Path, file: &str, env: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ticketkey.sh");
    Command::new(script)
        .arg(file)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("run scripts/ticketkey.sh")
}

/// A new key file `name` in the fixture's directory, as `make ticket-key` writes it.
fn new_key(fx: &Fixture, name: &str) {
    let out = ticketkey(fx.path(), name, &[("FORCE", "1")]);
    assert!(out.status.success(), "{out:?}");
}

/// A `--demo` server with these session-ticket key files, in this order.
fn server_with_keys(fx: &Fixture, files: &[&str]) -> Server {
    let mut args = vec!["--demo"];
    for file in files {
        args.extend(["--ticket-key-file", file]);
    }
    fx.server(&args)
}

/// The legacy exchange with `client -v --reuse-session SESSION`: checks the transcript and
/// tells whether the handshake resumed the saved session.
fn resumed(fx: &Fixture, server: &Server, session: &str) -> bool {
    let port = server.port_arg();
    let out = fx.client(
        &["-v", "--reuse-session", session, "127.0.0.1", &port],
        b"aticle\n123\n",
    );
    assert_transcript(&out, VALID_REPLY);
    let (_, log) = texts(&out);
    assert!(
        log.contains("TLS session resumed") != log.contains("TLS session new"),
        "{log}"
    );
    log.contains("TLS session resumed")
}

#[test]
fn two_servers_with_one_key_file_resume_each_others_sessions() {
    let fx = Fixture::new();
    new_key(&fx, "shared.key");
    let first = server_with_keys(&fx, &["shared.key"]);
    let second = server_with_keys(&fx, &["shared.key"]);
    assert!(!resumed(&fx, &first, "session.der"));
    assert!(resumed(&fx, &second, "session.der"));
    assert!(resumed(&fx, &first, "session.der"));
    // Without the option each server has its own keys: no resumption across them.
    let own_keys = fx.server(&["--demo"]);
    assert!(!resumed(&fx, &own_keys, "session.der"));
}

#[test]
fn rotated_keys_resume_and_renew_old_tickets_and_unrelated_keys_do_not() {
    let fx = Fixture::new();
    for key in ["old.key", "new.key", "unrelated.key"] {
        new_key(&fx, key);
    }
    let before = server_with_keys(&fx, &["old.key"]);
    assert!(!resumed(&fx, &before, "session.der"));
    drop(before);
    // Copies of the session under the old key (each client run saves over the one it used).
    for copy in ["under-old.der", "offered.der"] {
        std::fs::copy(fx.path().join("session.der"), fx.path().join(copy)).unwrap();
    }

    // [new, old]: the ticket under the old key resumes, and comes back under the new key.
    let rotated = server_with_keys(&fx, &["new.key", "old.key"]);
    assert!(resumed(&fx, &rotated, "session.der"));
    drop(rotated);
    let new_only = server_with_keys(&fx, &["new.key"]);
    assert!(resumed(&fx, &new_only, "session.der"));
    // The ticket under the old key alone does not resume where the old key is gone.
    assert!(!resumed(&fx, &new_only, "under-old.der"));

    let unrelated = server_with_keys(&fx, &["unrelated.key"]);
    assert!(!resumed(&fx, &unrelated, "offered.der"));
}

/// How many renewals that reread the key files `server` has logged.
fn rereads(server: &Server) -> usize {
    server
        .stderr
        .text()
        .matches("session-ticket keys reread from --ticket-key-file")
        .count()
}

#[test]
fn renewals_reread_the_key_files_and_keep_the_old_keys_when_one_is_bad() {
    let fx = Fixture::new();
    new_key(&fx, "ticket.key");
    let server = fx.server(&[
        "--demo",
        "--ticket-key-lifetime",
        "1",
        "--ticket-key-file",
        "ticket.key",
    ]);
    assert!(!resumed(&fx, &server, "session.der"));

    // Replaced by a file of the wrong size (renamed over it, as the script does): the error
    // is logged, the old keys stay, and renewals stop until the file is good again.
    let short = fx.path().join("short.tmp");
    std::fs::write(&short, [0u8; 79]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&short, fx.path().join("ticket.key")).unwrap();
    let log = server.stderr.wait_for("the error", |t| {
        t.contains("cannot renew the TLS context, keeping the old")
    });
    assert!(log.contains("ticket.key holds 79 bytes"), "{log}");
    let good_renewals = rereads(&server);
    assert!(resumed(&fx, &server, "session.der"));

    // A new key: the first renewal that succeeds has read it, and the old tickets are gone.
    new_key(&fx, "ticket.key");
    server.stderr.wait_for("a renewal with the new key", |_| {
        rereads(&server) > good_renewals
    });
    assert!(!resumed(&fx, &server, "session.der"));
    assert!(resumed(&fx, &server, "session.der"));
}

/// Runs the server in `dir` with `args` (it should fail to start).
fn start_in(dir: &Path, args: &[&str]) -> Output {
    run_with_input(
        Command::new(env!("CARGO_BIN_EXE_server"))
            .args(args)
            .args(["--bind", "127.0.0.1", "0"])
            .current_dir(dir),
        b"",
    )
}

/// A failed start: exit status 1 and one line on stderr that contains every one of `says`.
fn assert_fails_saying(out: &Output, says: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (_, err) = texts(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    for part in says {
        assert!(err.contains(part), "wanted {part:?} in {err}");
    }
}

#[test]
fn a_key_file_missing_open_to_others_or_of_the_wrong_size_stops_the_start() {
    let fx = Fixture::new();
    let out = start_in(fx.path(), &["--ticket-key-file", "missing.key"]);
    assert_fails_saying(
        &out,
        &[
            "cannot read session-ticket key file missing.key",
            "make ticket-key",
        ],
    );

    new_key(&fx, "open.key");
    std::fs::set_permissions(
        fx.path().join("open.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Every file is checked, not only the first.
    new_key(&fx, "good.key");
    let out = start_in(
        fx.path(),
        &[
            "--ticket-key-file",
            "good.key",
            "--ticket-key-file",
            "open.key",
        ],
    );
    assert_fails_saying(
        &out,
        &[
            "the session-ticket key file open.key can be read by others (mode 644)",
            "chmod 600 open.key",
        ],
    );

    for (file, len, says) in [
        ("short.key", 79, "short.key holds 79 bytes"),
        ("long.key", 81, "long.key holds more than 80 bytes"),
    ] {
        let path = fx.path().join(file);
        std::fs::write(&path, vec![7u8; len]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = start_in(fx.path(), &["--ticket-key-file", file]);
        assert_fails_saying(&out, &[says, "exactly 80"]);
    }
}

#[test]
fn ticketkey_writes_a_private_80_byte_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = ticketkey(dir.path(), "ticket.key", &[]);
    assert!(out.status.success(), "{out:?}");
    let path = dir.path().join("ticket.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read(&path).unwrap();
    assert_eq!(key.len(), 80);

    // Kept unless FORCE=1; nothing else left in the directory.
    assert!(ticketkey(dir.path(), "ticket.key", &[]).status.success());
    assert_eq!(std::fs::read(&path).unwrap(), key);
    assert!(
        ticketkey(dir.path(), "ticket.key", &[("FORCE", "1")])
            .status
            .success()
    );
    assert_ne!(std::fs::read(&path).unwrap(), key);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn the_help_documents_the_option() {
    let out = run_with_input(
        Command::new(env!("CARGO_BIN_EXE_server")).arg("--help"),
        b"",
    );
    assert!(out.status.success());
    let (help, _) = texts(&out);
    assert!(
        help.contains("--ticket-key-file FILE") && help.contains("make ticket-key"),
        "{help}"
    );
}

#[test]
fn a_session_made_without_a_ca_check_is_not_resumed_where_one_is_required() {
    let fx = Fixture::new();
    new_key(&fx, "shared.key");
    let keys = ["--demo", "--ticket-key-file", "shared.key"];
    let open = fx.server(&keys);
    let strict = fx.server(&[&keys[..], &["--verify-client", "mycert.pem"]].concat());
    let port = |server: &Server| server.port_arg();
    let exchange = |server: &Server| {
        let out = fx.client(
            &[
                "-v",
                "--cert",
                "mycert.pem",
                "--reuse-session",
                "session.der",
                "127.0.0.1",
                &port(server),
            ],
            b"aticle\n123\n",
        );
        assert!(out.status.success(), "{out:?}");
        texts(&out).1.contains("TLS session resumed")
    };
    assert!(!exchange(&open));
    assert!(exchange(&open));
    // The same ticket key, but the certificate was never checked against a CA there.
    assert!(!exchange(&strict));
    assert!(exchange(&strict));
}
