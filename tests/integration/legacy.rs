//! The legacy exchange, byte for byte, between the real binaries and openssl's own tools.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

/// Server lines for one exchange, with the client's port left out.
fn server_lines_after_connection(stdout: &str) -> (String, String) {
    let (first, rest) = stdout.split_once('\n').expect("a Connection line");
    (first.to_string(), rest.to_string())
}

#[test]
fn client_and_server_transcripts_match_the_original() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let out = fx.client(&["127.0.0.1", &server.port_arg()], b"aticle\n123\n");
    assert_transcript(&out, VALID_REPLY);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stdout = server
        .stdout
        .wait_for("Client msg", |t| t.contains("Client msg"));
    let (connection, rest) = server_lines_after_connection(&stdout);
    assert!(
        connection.starts_with("Connection: 127.0.0.1:"),
        "{connection}"
    );
    assert_eq!(
        rest,
        "No certificates.\nClient msg: \"<Body>                               <UserName>aticle\
         <UserName>                 <Password>***<Password>                 <\\Body>\"\n"
    );
    assert!(server.stderr.text().contains("weak password"));
}

#[test]
fn the_console_shows_every_exchange_with_the_password_masked() {
    // In-process, the console is a buffer: the exact lines of several exchanges at once.
    let fx = Fixture::new();
    let server = fx.in_process(&["--demo"]);
    let ports: Vec<u16> = std::thread::scope(|s| {
        let exchanges: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut ssl = tls_connect(&server.addr());
                    let port = ssl.get_ref().local_addr().unwrap().port();
                    ssl.write_all(&request("aticle", "123")).unwrap();
                    assert_eq!(read_to_close(&mut ssl), VALID_REPLY);
                    port
                })
            })
            .collect();
        exchanges.into_iter().map(|e| e.join().unwrap()).collect()
    });
    let console = server
        .console
        .wait_for("four requests", |t| t.matches("Client msg").count() == 4);
    let mut lines: Vec<String> = console.lines().map(String::from).collect();
    let masked = "Client msg: \"<Body>                               <UserName>aticle\
                  <UserName>                 <Password>***<Password>                 <\\Body>\"";
    let mut expected: Vec<String> = ports
        .iter()
        .flat_map(|port| {
            [
                format!("Connection: 127.0.0.1:{port}"),
                "No certificates.".to_string(),
                masked.to_string(),
            ]
        })
        .collect();
    lines.sort();
    expected.sort();
    assert_eq!(lines, expected);
}

#[test]
fn wrong_password_and_unknown_user_get_invalid_message() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    for input in [&b"aticle\n1234\n"[..], b"nobody\n123\n", b"ATICLE\n12\n"] {
        let out = fx.client(&["localhost", &server.port_arg()], input);
        assert_transcript(&out, b"Invalid Message");
    }
}

#[test]
fn s_client_sending_the_original_bytes_gets_the_original_reply() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let out = s_client(&server.addr(), &["-tls1_2"], &request("aticle", "123"));
    assert_eq!(out.stdout, VALID_REPLY);

    let out = s_client(&server.addr(), &["-tls1_2"], &request("aticle", "12"));
    assert_eq!(out.stdout, b"Invalid Message");
    // A request with a trailing newline is not the original's request.
    let mut with_newline = request("aticle", "123");
    with_newline.push(b'\n');
    let out = s_client(&server.addr(), &["-tls1_2"], &with_newline);
    assert_eq!(out.stdout, b"Invalid Message");
    let out = s_client(&server.addr(), &["-tls1_2"], b"<hello>");
    assert_eq!(out.stdout, b"Invalid Message");
    // A first byte other than '<' starts the account protocol: "hell" is no frame length.
    let out = s_client(&server.addr(), &["-tls1_2"], b"hello");
    assert!(contains(&out.stdout, b"<reply code=\"2001\">"));
}

#[test]
fn without_demo_no_account_exists() {
    let fx = Fixture::new();
    let server = fx.server(&[]);
    assert_eq!(
        exchange(&server.addr(), &request("aticle", "123")),
        b"Invalid Message"
    );
    assert!(!server.stderr.text().contains("weak password"));
}

#[test]
fn accounts_persist_across_restarts() {
    let fx = Fixture::new();
    let first = fx.server(&["--demo"]);
    assert_eq!(
        exchange(&first.addr(), &request("aticle", "123")),
        VALID_REPLY
    );
    assert!(first.terminate().success());
    let second = fx.server(&[]);
    assert_eq!(
        exchange(&second.addr(), &request("aticle", "123")),
        VALID_REPLY
    );
    assert_eq!(
        exchange(&second.addr(), &request("aticle", "321")),
        b"Invalid Message"
    );
}

#[test]
fn our_client_against_s_server_playing_the_original_server() {
    let fx = Fixture::new();
    let mut s_server = Command::new("openssl")
        .args(["s_server", "-tls1_2", "-accept", "0", "-naccept", "1"])
        .args(["-cert", "mycert.pem", "-key", "mycert.pem"])
        .current_dir(fx.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let mut to_server = s_server.stdin.take().unwrap();
    let from_server = Captured::collect_from(s_server.stdout.take().unwrap());
    let accept = from_server.wait_for("ACCEPT", |t| t.contains("ACCEPT") && t.contains('\n'));
    let port = accept
        .lines()
        .find(|l| l.starts_with("ACCEPT"))
        .and_then(|l| l.rsplit(':').next())
        .unwrap()
        .to_string();

    let client = std::thread::spawn({
        let dir = fx.path().to_path_buf();
        move || {
            run_with_input(
                Command::new(env!("CARGO_BIN_EXE_client"))
                    .args(["127.0.0.1", &port])
                    .current_dir(dir),
                b"aticle\n123\n",
            )
        }
    });
    let sent = request("aticle", "123");
    from_server.wait_for("the request", |_| contains(&from_server.bytes(), &sent));
    to_server.write_all(VALID_REPLY).unwrap();
    to_server.flush().unwrap();
    let out = client.join().unwrap();
    assert_transcript(&out, VALID_REPLY);
    // Exactly the request, then the client's close: no byte more or less.
    from_server.wait_for("DONE", |t| t.contains("DONE"));
    assert!(contains(
        &from_server.bytes(),
        &[&sent[..], b"DONE"].concat()
    ));
    drop(to_server);
    let _ = wait_timeout(&mut s_server);
}

#[test]
fn tls_1_1_and_1_3_refused_tls_1_2_accepted() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let hello = request("aticle", "123");
    // SECLEVEL=0 lets OpenSSL 3's client offer TLS 1.1 at all, so the server is what refuses.
    for refused in [
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..],
        &["-tls1_3"],
    ] {
        let out = s_client(&server.addr(), refused, &hello);
        assert!(!out.status.success(), "{refused:?} was accepted");
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("alert protocol version"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = s_client(&server.addr(), &["-tls1_2"], &hello);
    assert_eq!(out.stdout, VALID_REPLY);
    // Failed handshakes are logged as a summary, once a second.
    server
        .stderr
        .wait_for("the reason", |log| log.contains("unsupported protocol"));

    // An option allows TLS 1.3; TLS 1.1 stays refused.
    let modern = fx.server(&["--demo", "--allow-tls13"]);
    let out = s_client(&modern.addr(), &["-tls1_3"], &hello);
    assert_eq!(out.stdout, VALID_REPLY);
    let out = s_client(
        &modern.addr(),
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        &hello,
    );
    assert!(!out.status.success());
}

#[test]
fn client_verifies_the_server_by_default() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let port = server.port_arg();

    // Another certificate as the only trusted one: refused, with the reason.
    let other = Fixture::with_own_certificate();
    let out = fx.client(
        &["--cafile", &other.cert_arg(), "127.0.0.1", &port],
        b"aticle\n123\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate verification failed"), "{err}");
    // Which file to trust, and the way back to the original's behaviour.
    for hint in ["mycert.pem", "--cafile FILE", "--insecure"] {
        assert!(err.contains(hint), "{hint:?} not in {err}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Received"));

    // No ./mycert.pem where the client runs: the system store does not know ours.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run_with_input(
        Command::new(env!("CARGO_BIN_EXE_client"))
            .args(["127.0.0.1", &port])
            .current_dir(elsewhere.path()),
        b"aticle\n123\n",
    );
    assert_eq!(out.status.code(), Some(1));

    // --insecure: the original's behaviour, with a warning.
    let out = run_with_input(
        Command::new(env!("CARGO_BIN_EXE_client"))
            .args(["--insecure", "127.0.0.1", &port])
            .current_dir(elsewhere.path()),
        b"aticle\n123\n",
    );
    assert_transcript(&out, VALID_REPLY);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure"));

    // The certificate names localhost, 127.0.0.1 and ::1; any other address is refused.
    let unnamed = fx.server(&["--demo", "--bind", "127.0.0.2"]);
    let out = fx.client(
        &["--cafile", &fx.cert_arg(), "127.0.0.2", &unnamed.port_arg()],
        b"aticle\n123\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // The names the certificate holds; trusting another file would not help.
    assert!(
        err.contains(
            "IP address mismatch: the certificate is for localhost, 127.0.0.1, ::1, not 127.0.0.2"
        ),
        "{err}"
    );
    assert!(!err.contains("--cafile"), "{err}");
}

#[test]
fn ipv6_loopback_works() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--bind", "::1"]);
    let out = fx.client(&["::1", &server.port_arg()], b"aticle\n123\n");
    assert_transcript(&out, VALID_REPLY);
    let stdout = server
        .stdout
        .wait_for("Connection", |t| t.contains("Client msg"));
    assert!(stdout.starts_with("Connection: [::1]:"), "{stdout}");
}

#[test]
fn mutual_tls_shows_the_client_certificate() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--verify-client", "mycert.pem"]);
    let port = server.port_arg();
    let out = fx.client(
        &["--cert", "mycert.pem", "127.0.0.1", &port],
        b"aticle\n123\n",
    );
    assert_transcript(&out, VALID_REPLY);
    let stdout = server
        .stdout
        .wait_for("Client msg", |t| t.contains("Client msg"));
    let (_, rest) = server_lines_after_connection(&stdout);
    assert!(
        rest.starts_with("Server certificates:\nSubject: /CN=localhost\nIssuer: /CN=localhost\n"),
        "{rest}"
    );

    // Without a client certificate the handshake is refused, and the client says why in
    // words, naming --cert; OpenSSL's own string only under -v.
    let out = fx.client(&["127.0.0.1", &port], b"aticle\n123\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server requires a client certificate") && err.contains("--cert FILE"),
        "{err}"
    );
    assert!(!err.contains("error:0A"), "{err}");
    server
        .stderr
        .wait_for("the refusal", |t| t.contains("TLS handshake failed"));
    let out = fx.client(&["-v", "127.0.0.1", &port], b"aticle\n123\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SSL routines"),
        "{out:?}"
    );

    // A certificate the server does not trust: said so, naming the file.
    let other = Fixture::with_own_certificate();
    let out = fx.client(
        &["--cert", &other.cert_arg(), "127.0.0.1", &port],
        b"aticle\n123\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the server does not accept the client certificate in {}",
            other.cert_arg()
        )) && err.contains("--cert FILE"),
        "{err}"
    );
    assert!(!err.contains("error:0A"), "{err}");
}

#[test]
fn the_client_resumes_a_saved_session_with_the_same_transcript() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let port = server.port_arg();
    let args = [
        "-v",
        "--reuse-session",
        "tls-session.der",
        "127.0.0.1",
        &port,
    ];
    let first = fx.client(&args, b"aticle\n123\n");
    assert_transcript(&first, VALID_REPLY);
    assert!(String::from_utf8_lossy(&first.stderr).contains("TLS session new"));
    let saved = fx.path().join("tls-session.der");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let second = fx.client(&args, b"aticle\n123\n");
    assert_transcript(&second, VALID_REPLY);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("TLS session resumed"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // A damaged file costs a full handshake, nothing more.
    std::fs::write(&saved, b"not a session").unwrap();
    assert_transcript(&fx.client(&args, b"aticle\n123\n"), VALID_REPLY);
}
