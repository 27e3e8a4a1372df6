//! Signing in with an enrolled client certificate, and the sign-in history, through the real
//! client, server and operator's tool: on SQLite and on PostgreSQL, resumed TLS sessions,
//! two instances behind HAProxy, and the legacy exchange left byte for byte as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::pg::cluster;
use crate::common::*;

/// `scripts/gencert.sh NAME.pem ec NAME` in the fixture's directory, as
/// `make client-cert NAME=...` runs it: a self-signed client certificate and its key.
fn client_cert(fx: &Fixture, name: &str) -> PathBuf {
    let path = fx.path().join(format!("{name}.pem"));
    let out = gencert_script()
        .arg(&path)
        .args(["ec", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    path
}

/// The SHA-256 fingerprint of the public key of the certificate in `cert`, as OpenSSL's own
/// tools compute it (docs/PROTOCOL.md gives this command).
fn fingerprint(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform DER \
             | openssl dgst -sha256 -r",
            cert.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}

/// Runs `client ARGS 127.0.0.1 PORT COMMAND AFTER...` against `server` with `stdin`.
fn client_run(
    fx: &Fixture,
    server: &impl Listening,
    args: &[&str],
    command: &[&str],
    stdin: &str,
) -> Output {
    let port = server.port_arg();
    let mut all = args.to_vec();
    all.extend(["127.0.0.1", &port]);
    all.extend(command);
    fx.client(&all, stdin.as_bytes())
}

/// Runs `admin --db DB ARGS` in the fixture's directory.
fn admin(fx: &Fixture, db: &str, args: &[&str]) -> Output {
    run_with_input(
        Command::new(env!("CARGO_BIN_EXE_admin"))
            .args(["--db", db])
            .args(args)
            .current_dir(fx.path()),
        b"",
    )
}

/// A server on the store `db` (a SQLite file in the fixture's directory, or a PostgreSQL
/// URL), with `extra` arguments.
fn server_on(fx: &Fixture, db: &str, extra: &[&str]) -> Server {
    fx.server(&[&["--db", db][..], extra].concat())
}

/// A fresh store of each kind: the SQLite file `users.db`, and a new PostgreSQL database.
fn stores() -> [String; 2] {
    ["users.db".to_string(), cluster().new_database()]
}

/// The client's options to log in as `user` by the certificate in `cert`.
fn cert_login<'a>(user: &'a str, cert: &'a str) -> Vec<&'a str> {
    vec!["--cert", cert, "--user", user, "--cert-login"]
}

/// The columns of a line of `history`: time, address, method, outcome.
fn columns(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn certlogin(user: &str) -> String {
    format!("<certlogin><username>{user}</username></certlogin>")
}

fn login(user: &str, password: &str) -> String {
    format!("<login><username>{user}</username><password>{password}</password></login>")
}

#[test]
fn an_enrolled_certificate_signs_in_without_a_password_on_both_stores() {
    for db in stores() {
        certificate_sign_in(&db);
    }
}

fn certificate_sign_in(db: &str) {
    let fx = Fixture::new();
    let server = server_on(&fx, db, &[]);
    let (alice, other) = (client_cert(&fx, "alice"), client_cert(&fx, "other"));
    let (alice_pem, other_pem) = (alice.display().to_string(), other.display().to_string());
    let fp = fingerprint(&alice);
    let user = ["--user", "alice"];
    let out = fx.command(&server, &user, "signup", "alice-secret\n");
    assert!(out.status.success(), "{out:?}");

    // A certificate file that is not there is said plainly.
    let missing = client_run(
        &fx,
        &server,
        &cert_login("alice", "nope.pem"),
        &["view"],
        "",
    );
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        texts(&missing).1.ends_with(
            "cannot read client certificate nope.pem: No such file or directory (os error 2)\n"
        ),
        "{missing:?}"
    );
    // Before it is enrolled, the certificate is refused like a wrong password.
    let with = |cert| cert_login("alice", cert);
    let refused = client_run(&fx, &server, &with(&alice_pem), &["view"], "");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        texts(&refused)
            .1
            .contains("2200 authentication failed: the certificate is not enrolled"),
        "{refused:?}"
    );

    // Enrolled by a session that logged in with the password and presented it.
    let enroll_args = [&["--cert", &alice_pem][..], &user, &["--label", "laptop"]].concat();
    let out = client_run(&fx, &server, &enroll_args, &["enroll"], "alice-secret\n");
    assert!(out.status.success(), "{out:?}");
    assert!(
        texts(&out)
            .0
            .starts_with(&format!("certificate {fp} enrolled")),
        "{out:?}"
    );
    let again = client_run(&fx, &server, &enroll_args, &["enroll"], "alice-secret\n");
    assert!(texts(&again).1.contains("2302"), "{again:?}");

    // Now it signs in with no password read at all (standard input is empty), and says the
    // last sign-in.
    let out = client_run(&fx, &server, &with(&alice_pem), &["view"], "");
    assert!(out.status.success(), "{out:?}");
    let (stdout, stderr) = texts(&out);
    assert!(stdout.starts_with("username: alice\n"), "{stdout}");
    assert!(
        stderr.starts_with("Last sign-in: ")
            && stderr.ends_with(" from 127.0.0.1 (password); 0 failed attempts since.\n"),
        "{stderr}"
    );
    // Another certificate is refused.
    let out = client_run(&fx, &server, &with(&other_pem), &["view"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A connection without a certificate cannot use certlogin at all.
    let mut ssl = tls_connect(&server.addr());
    let reply = call(&mut ssl, &certlogin("alice"));
    assert!(
        reply.contains("code=\"2002\"") && reply.contains("presented no client certificate"),
        "{reply}"
    );
    drop(ssl);

    // A resumed TLS session keeps the certificate: it signs in too.
    let session = fx.path().join("session.der").display().to_string();
    let resuming = [&["-v", "--reuse-session", &session][..], &with(&alice_pem)].concat();
    let first = client_run(&fx, &server, &resuming, &["view"], "");
    assert!(first.status.success(), "{first:?}");
    let second = client_run(&fx, &server, &resuming, &["view"], "");
    assert!(second.status.success(), "{second:?}");
    assert!(
        texts(&second).1.contains("TLS session resumed"),
        "{second:?}"
    );

    // certs lists it with its label and last use; unenroll removes it, and it is refused
    // again.
    let out = client_run(&fx, &server, &with(&alice_pem), &["certs"], "");
    let (listed, _) = texts(&out);
    assert!(
        listed.starts_with(&format!("{fp}  enrolled 20"))
            && listed.contains("  last used 20")
            && listed.ends_with("  laptop\n")
            && listed.lines().count() == 1,
        "{listed}"
    );
    let colons: String = fp
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let out = client_run(&fx, &server, &with(&alice_pem), &["unenroll", &colons], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(texts(&out).0, format!("certificate {fp} removed\n"));
    let out = client_run(&fx, &server, &with(&alice_pem), &["view"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = client_run(&fx, &server, &user, &["unenroll", "not-hex"], "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The history says it all, newest first.
    let out = client_run(&fx, &server, &user, &["history"], "alice-secret\n");
    assert!(out.status.success(), "{out:?}");
    let outcomes: Vec<String> = texts(&out)
        .0
        .lines()
        .map(|line| columns(line)[2..].join("/"))
        .collect();
    let signed_in = "certificate/signed in";
    let unknown = "certificate/certificate not enrolled";
    assert_eq!(
        outcomes,
        [
            "password/signed in",
            unknown,
            signed_in,
            signed_in,
            signed_in,
            signed_in,
            unknown,
            signed_in,
            "password/signed in",
            "password/signed in",
            unknown,
        ],
        "{out:?}"
    );
}

#[test]
fn locks_resets_and_passwd_end_certificate_sessions_and_delete_removes_certificates() {
    for db in stores() {
        certificate_sessions_end(&db);
    }
}

fn certificate_sessions_end(db: &str) {
    let fx = Fixture::new();
    let server = server_on(&fx, db, &[]);
    let cert = client_cert(&fx, "bob");
    let fp = fingerprint(&cert);
    let pem = cert.display().to_string();
    let out = fx.command(&server, &["--user", "bob"], "signup", "bob-secret\n");
    assert!(out.status.success(), "{out:?}");
    let out = fx.command(
        &server,
        &["--cert", &pem, "--user", "bob"],
        "enroll",
        "bob-secret\n",
    );
    assert!(out.status.success(), "{out:?}");
    let signed_in = || {
        let mut ssl = tls_connect_with_cert_from("127.0.0.1", &server.addr(), &cert);
        let reply = call(&mut ssl, &certlogin("bob"));
        assert!(reply.contains("code=\"1000\""), "{reply}");
        ssl
    };
    let ended = |ssl: &mut openssl::ssl::SslStream<std::net::TcpStream>, why: &str| {
        let reply = call(ssl, "<view/>");
        assert!(
            reply.contains("code=\"1500\"") && reply.contains(why),
            "{reply}"
        );
    };

    // The operator's lock ends it, and refuses the certificate as locked.
    let mut session = signed_in();
    let out = admin(&fx, db, &["lock", "bob"]);
    assert!(out.status.success(), "{out:?}");
    ended(&mut session, "locked by the operator");
    let mut ssl = tls_connect_with_cert_from("127.0.0.1", &server.addr(), &cert);
    assert!(call(&mut ssl, &certlogin("bob")).contains("the account is locked"));
    assert!(admin(&fx, db, &["unlock", "bob"]).status.success());

    // A password reset by the operator, and the owner's passwd elsewhere, end it too.
    let mut session = signed_in();
    let out = run_with_input(
        Command::new(env!("CARGO_BIN_EXE_admin"))
            .args(["--db", db, "reset-password", "bob"])
            .current_dir(fx.path()),
        b"bob-secret-2\n",
    );
    assert!(out.status.success(), "{out:?}");
    ended(&mut session, "the password was changed or reset");
    let mut session = signed_in();
    let mut owner = tls_connect(&server.addr());
    assert!(call(&mut owner, &login("bob", "bob-secret-2")).contains("code=\"1000\""));
    let passwd = "<passwd><password>bob-secret-2</password>\
                  <new_password>bob-secret-3</new_password></passwd>";
    assert!(call(&mut owner, passwd).contains("code=\"1000\""));
    ended(&mut session, "the password was changed or reset");
    // The session that changed it goes on.
    assert!(call(&mut owner, "<view/>").contains("code=\"1000\""));

    // show lists the certificate and the last sign-ins; the operator removes it.
    let shown = texts(&admin(&fx, db, &["show", "bob"])).0;
    assert!(
        shown.contains(&format!("certificates:\n  {fp}  enrolled ")),
        "{shown}"
    );
    assert!(
        shown.contains("last sign-ins (newest first, of 50 kept):\n"),
        "{shown}"
    );
    let (_, events) = shown.split_once("last sign-ins").unwrap();
    assert_eq!(
        events
            .lines()
            .filter(|l| l.contains("  127.0.0.1  "))
            .count(),
        5,
        "{shown}"
    );
    let out = admin(&fx, db, &["unenroll", "bob", &fp]);
    assert!(out.status.success(), "{out:?}");
    let out = admin(&fx, db, &["unenroll", "bob", &fp]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        texts(&admin(&fx, db, &["show", "bob"]))
            .0
            .contains("certificates: none\n")
    );

    // Deleting the account removes its certificates: a new account of the same name does
    // not sign in with the old one's certificate.
    let out = fx.command(
        &server,
        &["--cert", &pem, "--user", "bob"],
        "enroll",
        "bob-secret-3\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(admin(&fx, db, &["delete", "bob"]).status.success());
    let out = fx.command(&server, &["--user", "bob"], "signup", "bob-secret-4\n");
    assert!(out.status.success(), "{out:?}");
    let mut ssl = tls_connect_with_cert_from("127.0.0.1", &server.addr(), &cert);
    assert!(call(&mut ssl, &certlogin("bob")).contains("code=\"2200\""));
}

#[test]
fn the_history_shows_each_address_method_and_outcome_and_keeps_fifty() {
    for db in stores() {
        history_of_two_addresses(&db);
    }
}

fn history_of_two_addresses(db: &str) {
    let fx = Fixture::new();
    let server = server_on(&fx, db, &["--max-logins-per-account", "1000"]);
    let out = fx.command(&server, &["--user", "carol"], "signup", "carol-secret\n");
    assert!(out.status.success(), "{out:?}");
    let mut ssl = tls_connect_from("127.0.8.1", &server.addr());
    assert!(call(&mut ssl, &login("carol", "wrong-secret")).contains("code=\"2200\""));
    let mut ssl = tls_connect_from("127.0.8.2", &server.addr());
    let reply = call(&mut ssl, &login("carol", "carol-secret"));
    assert!(
        reply.contains("<last_sign_in><failed_since>1</failed_since></last_sign_in>"),
        "{reply}"
    );
    // The legacy exchange's wrong password counts too, its bytes as ever.
    let mut ssl = tls_connect_from("127.0.8.3", &server.addr());
    std::io::Write::write_all(&mut ssl, &request("carol", "wrong-secret")).unwrap();
    assert_eq!(read_to_close(&mut ssl), b"Invalid Message");

    let out = fx.command(&server, &["--user", "carol"], "history", "carol-secret\n");
    assert!(out.status.success(), "{out:?}");
    let (stdout, stderr) = texts(&out);
    assert!(
        stderr.ends_with(" from 127.0.8.2 (password); 1 failed attempt since.\n"),
        "{stderr}"
    );
    let rows: Vec<String> = stdout
        .lines()
        .map(|line| columns(line)[1..].join("/"))
        .collect();
    assert_eq!(
        rows,
        [
            "127.0.0.1/password/signed in",
            "127.0.8.3/legacy exchange/wrong password",
            "127.0.8.2/password/signed in",
            "127.0.8.1/password/wrong password",
        ],
        "{stdout}"
    );

    // 60 sign-ins keep the newest 50 events.
    for n in 0..60 {
        let mut ssl = tls_connect_from(&format!("127.0.9.{}", n + 1), &server.addr());
        let reply = call(&mut ssl, &login("carol", "carol-secret"));
        assert!(reply.contains("code=\"1000\""), "{reply}");
    }
    let mut ssl = tls_connect_from("127.0.9.200", &server.addr());
    assert!(call(&mut ssl, &login("carol", "carol-secret")).contains("code=\"1000\""));
    let history = call(&mut ssl, "<history/>");
    assert_eq!(history.matches("<event>").count(), 50, "{history}");
    assert!(
        history.contains("<event><at>")
            && history.contains("<address>127.0.9.200</address>")
            && history.contains("<address>127.0.9.12</address>")
            && !history.contains("<address>127.0.9.11</address>"),
        "{history}"
    );
}

#[test]
fn the_legacy_exchange_with_a_client_certificate_is_byte_for_byte_the_original() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let cert = client_cert(&fx, "dora");
    let pem = cert.display().to_string();
    let out = fx.client(
        &["--cert", &pem, "127.0.0.1", &server.port_arg()],
        b"aticle\n123\n",
    );
    assert_transcript(&out, VALID_REPLY);
    let console = server
        .stdout
        .wait_for("Client msg", |t| t.contains("Client msg"));
    let (_, rest) = console.split_once('\n').unwrap();
    assert_eq!(
        rest,
        "Server certificates:\nSubject: /CN=dora\nIssuer: /CN=dora\nClient msg: \"<Body>                               <UserName>aticle\
         <UserName>                 <Password>***<Password>                 <\\Body>\"\n"
    );
    // openssl s_client with the certificate: the original's request in, its reply out.
    let out = s_client(
        &server.addr(),
        &["-cert", &pem, "-key", &pem, "-tls1_2"],
        &request("aticle", "123"),
    );
    assert_eq!(out.stdout, VALID_REPLY, "{out:?}");
}

#[test]
fn certificates_sign_in_through_haproxy_on_either_instance_and_resumed() {
    let fx = Fixture::new();
    let db = cluster().new_database();
    let key = fx.path().join("ticket.key");
    let made = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ticketkey.sh"))
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let key = key.display().to_string();
    let args = [
        "--db",
        db.as_str(),
        "--ticket-key-file",
        key.as_str(),
        "--proxy-protocol-from",
        "127.0.0.1/32",
    ];
    let (one, two) = (fx.server(&args), fx.server(&args));
    let fleet = Haproxy::start(&[&one, &two]);
    let cert = client_cert(&fx, "erin");
    let pem = cert.display().to_string();
    let out = fx.command(&fleet, &["--user", "erin"], "signup", "erin-secret\n");
    assert!(out.status.success(), "{out:?}");
    let out = fx.command(
        &fleet,
        &["--cert", &pem, "--user", "erin"],
        "enroll",
        "erin-secret\n",
    );
    assert!(out.status.success(), "{out:?}");
    // Round robin: a full handshake on one instance, then the session resumed on the other;
    // both sign in by the certificate.
    let session = fx.path().join("session.der").display().to_string();
    let args = [
        "-v",
        "--reuse-session",
        &session,
        "--cert",
        &pem,
        "--user",
        "erin",
        "--cert-login",
    ];
    for round in 0..4 {
        let out = fx.command(&fleet, &args, "view", "");
        assert!(out.status.success(), "round {round}: {out:?}");
        if round > 0 {
            assert!(texts(&out).1.contains("TLS session resumed"), "{out:?}");
        }
    }
    for instance in [&one, &two] {
        instance.stderr.wait_for("a certificate sign-in", |t| {
            t.contains("certlogin as erin: 1000")
        });
    }
    // Each instance sees the client's own address behind the PROXY header.
    let mut ssl = tls_connect_with_cert_from("127.0.10.1", &fleet.addr(), &cert);
    assert!(call(&mut ssl, &certlogin("erin")).contains("code=\"1000\""));
    let history = call(&mut ssl, "<history/>");
    assert!(
        history.contains("<address>127.0.10.1</address><method>certificate</method>"),
        "{history}"
    );
}
