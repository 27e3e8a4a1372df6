//! An ECDSA certificate beside the RSA one: the server given `--cert mycert.pem --cert
//! mycert-ec.pem` presents the one each client's suites ask for, the client and `./bench`
//! trust several `--cafile`s, the configuration errors, and `gencert.sh FILE ec` with
//! `make cert KEY=ec`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use openssl::x509::X509;

use crate::common::*;

/// The two certificates, their keys in their files.
const BOTH: [&str; 4] = ["--cert", "mycert.pem", "--cert", "mycert-ec.pem"];

/// What `openssl s_client -tls1_2 EXTRA` got from a server when it sent the legacy request
/// for aticle/123: the suite, the server's certificate and the application bytes.
struct Served {
    suite: String,
    certificate: X509,
    stdout: Vec<u8>,
}

fn served(server: &Server, extra: &[&str]) -> Served {
    // Without -quiet s_client prints the certificate and the suite; -ign_eof keeps it
    // reading after its input ends, until the server has answered and closed.
    let out = run_with_input(
        Command::new("openssl")
            .args([
                "s_client",
                "-tls1_2",
                "-ign_eof",
                "-connect",
                &server.addr(),
            ])
            .args(extra),
        &request("aticle", "123"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let suite = text
        .lines()
        .find_map(|l| l.strip_prefix("New, TLSv1.2, Cipher is "))
        .unwrap_or_else(|| panic!("no suite in:\n{text}\n{}", texts(&out).1))
        .to_string();
    // The first PEM block of the output is the server's certificate.
    let certificate = X509::from_pem(&out.stdout).expect("the server's certificate");
    Served {
        suite,
        certificate,
        stdout: out.stdout,
    }
}

/// The certificate at the head of `file`.
fn certificate_in(file: &Path) -> X509 {
    X509::from_pem(&std::fs::read(file).unwrap()).unwrap()
}

#[test]
fn each_client_gets_the_certificate_its_suites_ask_for() {
    let fx = Fixture::with_ecdsa();
    let mut args = vec!["--demo"];
    args.extend(BOTH);
    let server = fx.server(&args);
    let (rsa, ec) = (certificate_in(&fx.cert()), certificate_in(&fx.ec_cert()));

    let got = served(&server, &["-cipher", RSA_SUITE]);
    assert_eq!(got.suite, RSA_SUITE);
    assert!(got.certificate == rsa, "not the RSA certificate");
    assert!(contains(&got.stdout, VALID_REPLY));

    let got = served(&server, &["-cipher", ECDSA_SUITE]);
    assert_eq!(got.suite, ECDSA_SUITE);
    assert!(got.certificate == ec, "not the ECDSA certificate");
    assert!(contains(&got.stdout, VALID_REPLY));

    // Offering its default list, s_client gets the ECDSA certificate: OpenSSL's list puts
    // the ECDSA suites first and the server follows the client's order.
    let got = served(&server, &[]);
    assert_eq!(got.suite, ECDSA_SUITE);
    assert!(got.certificate == ec, "not the ECDSA certificate");
}

#[test]
fn the_default_rsa_server_negotiates_the_suite_it_always_has() {
    // The transcripts of legacy.rs assert the same suite through our client.
    let fx = Fixture::with_ecdsa();
    let server = fx.server(&["--demo"]);
    let got = served(&server, &[]);
    assert_eq!(got.suite, RSA_SUITE);
    assert!(got.certificate == certificate_in(&fx.cert()));
    assert!(contains(&got.stdout, VALID_REPLY));
    let out = fx.client(&["127.0.0.1", &server.port_arg()], b"aticle\n123\n");
    assert_transcript(&out, VALID_REPLY);
}

#[test]
fn our_client_trusting_both_files_completes_the_legacy_exchange() {
    let fx = Fixture::with_ecdsa();
    let mut args = vec!["--demo"];
    args.extend(BOTH);
    let server = fx.server(&args);
    let port = server.port_arg();
    let both = [
        "--cafile",
        "mycert.pem",
        "--cafile",
        "mycert-ec.pem",
        "127.0.0.1",
        &port,
    ];

    // Our client offers OpenSSL's default list too: the ECDSA certificate and suite.
    let out = fx.client(&both, b"aticle\n123\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        client_transcript_with(ECDSA_SUITE, VALID_REPLY)
    );
    assert!(out.stderr.is_empty(), "{}", texts(&out).1);
    let out = fx.client(&both, b"aticle\n12\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        client_transcript_with(ECDSA_SUITE, b"Invalid Message")
    );

    // The ECDSA file alone is enough for it; the RSA one alone, given or the default
    // ./mycert.pem, is not, and the hint names the other file.
    let out = fx.client(
        &["--cafile", "mycert-ec.pem", "127.0.0.1", &port],
        b"aticle\n123\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        client_transcript_with(ECDSA_SUITE, VALID_REPLY)
    );
    for rsa_only in [&["--cafile", "mycert.pem"][..], &[]] {
        let mut args = rsa_only.to_vec();
        args.extend(["127.0.0.1", &port]);
        let out = fx.client(&args, b"aticle\n123\n");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = texts(&out).1;
        assert!(err.contains("certificate verification failed"), "{err}");
        assert!(
            err.contains("mycert-ec.pem") && err.contains("--cafile FILE (repeatable)"),
            "{err}"
        );
    }

    // ./bench shares the client's options.
    let bench = run_with_input(
        Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(["--mode", "full", "-c", "2", "-n", "6"])
            .args(both)
            .current_dir(fx.path()),
        b"",
    );
    let (stdout, stderr) = texts(&bench);
    assert!(bench.status.success(), "{stderr}");
    assert!(stdout.contains("operations    6 in"), "{stdout}");
    assert!(stdout.contains("errors        none"), "{stdout}");
}

#[test]
fn a_renewal_reloads_both_certificates() {
    let fx = Fixture::with_ecdsa();
    let mut args = vec!["--demo", "--ticket-key-lifetime", "1"];
    args.extend(BOTH);
    let server = fx.server(&args);
    let renewals = || server.stderr.text().matches("new TLS context").count();

    // A new ECDSA certificate: the renewals after it serve it, and the RSA one still. The
    // first renewal logged after the write may have read the files before it; the second
    // began after the first had ended.
    let before = renewals();
    let out = gencert_of(&fx.ec_cert(), "ec", &[("FORCE", "1")]);
    assert!(out.status.success(), "{out:?}");
    server
        .stderr
        .wait_for("two renewals", |_| renewals() >= before + 2);
    let got = served(&server, &["-cipher", ECDSA_SUITE]);
    assert!(
        got.certificate == certificate_in(&fx.ec_cert()),
        "still the old ECDSA certificate"
    );
    assert!(contains(&got.stdout, VALID_REPLY));
    let got = served(&server, &["-cipher", RSA_SUITE]);
    assert!(got.certificate == certificate_in(&fx.cert()));
    assert!(contains(&got.stdout, VALID_REPLY));
}

#[test]
fn two_certificates_of_one_key_type_are_refused_naming_both() {
    let fx = Fixture::with_ecdsa();
    for (file, kind) in [("other.pem", "rsa"), ("other-ec.pem", "ec")] {
        assert!(
            gencert_of(&fx.path().join(file), kind, &[])
                .status
                .success()
        );
    }
    for (args, cause) in [
        (
            &["--cert", "mycert.pem", "--cert", "other.pem"][..],
            "mycert.pem and other.pem are both RSA certificates; give at most one \
             certificate per key type",
        ),
        (
            &[
                "--cert",
                "mycert-ec.pem",
                "--cert",
                "mycert.pem",
                "--cert",
                "other-ec.pem",
            ],
            "mycert-ec.pem and other-ec.pem are both ECDSA certificates",
        ),
        (
            &["--cert", "mycert-ec.pem", "--cert", "mycert-ec.pem"],
            "mycert-ec.pem is given twice as --cert; give at most one certificate per key type",
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--bind", "127.0.0.1", "0"]);
        assert_fails_with(&server_in(fx.path(), &args), cause);
    }
}

#[test]
fn a_key_that_is_not_its_certificates_is_refused() {
    let fx = Fixture::with_ecdsa();
    assert!(gencert(&fx.path().join("other.pem"), &[]).status.success());
    for (args, key, cert) in [
        // Of the same type.
        (
            &["--cert", "mycert.pem", "--key", "other.pem"][..],
            "other.pem",
            "mycert.pem",
        ),
        // Of the other type: alone, and when it is the other certificate's own key.
        (
            &["--cert", "mycert-ec.pem", "--key", "mycert.pem"],
            "mycert.pem",
            "mycert-ec.pem",
        ),
        (
            &[
                "--cert",
                "mycert.pem",
                "--cert",
                "mycert-ec.pem",
                "--key",
                "mycert.pem",
                "--key",
                "mycert.pem",
            ],
            "mycert.pem",
            "mycert-ec.pem",
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--bind", "127.0.0.1", "0"]);
        assert_fails_with(
            &server_in(fx.path(), &args),
            &format!("the private key in {key} does not match the certificate in {cert}"),
        );
    }
}

#[test]
fn more_keys_than_certificates_is_a_usage_error() {
    let fx = Fixture::with_ecdsa();
    let server = env!("CARGO_BIN_EXE_server");
    for args in [
        &[
            "--cert",
            "mycert.pem",
            "--key",
            "mycert.pem",
            "--key",
            "mycert-ec.pem",
        ][..],
        &["--key", "mycert.pem", "--key", "mycert-ec.pem"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--bind", "127.0.0.1", "0"]);
        let out = server_in(fx.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let (stdout, stderr) = texts(&out);
        assert_eq!(stdout, format!("Usage: {server} <portnum>\n"));
        assert_eq!(
            stderr,
            format!(
                "{server}: more --key than --cert: 2 keys for 1 certificate (mycert.pem); the \
                 first --key is the first --cert's, the second the second's (--help lists the \
                 options)\n"
            )
        );
    }
}

#[test]
fn gencert_ec_writes_a_private_p256_certificate_once() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("mycert-ec.pem");
    let out = gencert_of(&pem, "ec", &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        texts(&out).0,
        format!(
            "wrote {} (self-signed ECDSA P-256, CN=localhost, valid 365 days)\n",
            pem.display()
        )
    );
    let mode = std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&pem).unwrap();
    assert!(text.contains("BEGIN PRIVATE KEY") && text.contains("BEGIN CERTIFICATE"));

    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .arg(&pem)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let key = openssl(&["pkey", "-noout", "-text", "-in"]);
    for wanted in [
        "Private-Key: (256 bit)",
        "ASN1 OID: prime256v1",
        "NIST CURVE: P-256",
    ] {
        assert!(key.contains(wanted), "{wanted:?} not in {key}");
    }
    let details = openssl(&["x509", "-noout", "-subject", "-text", "-in"]);
    for wanted in [
        "Public Key Algorithm: id-ecPublicKey",
        "Signature Algorithm: ecdsa-with-SHA256",
        "CN = localhost",
        "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(details.contains(wanted), "{wanted:?} not in {details}");
    }

    // Kept unless FORCE=1, as the RSA one.
    assert!(gencert_of(&pem, "ec", &[]).status.success());
    assert_eq!(std::fs::read_to_string(&pem).unwrap(), text);
    assert!(gencert_of(&pem, "ec", &[("FORCE", "1")]).status.success());
    assert_ne!(std::fs::read_to_string(&pem).unwrap(), text);

    // `rsa` is the default's type; anything else is refused, and so is a key type where the
    // file belongs.
    let rsa = dir.path().join("rsa.pem");
    assert!(gencert_of(&rsa, "rsa", &[]).status.success());
    assert!(
        std::fs::read_to_string(&rsa)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    for args in [
        &["x.pem", "dsa"][..],
        &["ec"],
        &["x.pem", "ec", "me", "more"],
        &["x.pem", "ec", "no/name"],
    ] {
        let out = gencert_script()
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            texts(&out)
                .1
                .contains("usage: scripts/gencert.sh [FILE] [rsa|ec]")
        );
    }
    assert!(!dir.path().join("x.pem").exists() && !dir.path().join("ec").exists());
}

#[test]
fn make_cert_writes_mycert_and_with_key_ec_mycert_ec() {
    // Dry runs (make -n) in the repository: what `make cert` would run, writing nothing.
    let make = |args: &[&str]| {
        let out = Command::new("make")
            .args(["--no-print-directory", "-n", "cert"])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // Not the flags or the key type of a `make test` around this test.
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .env_remove("KEY")
            .output()
            .expect("make");
        let (stdout, stderr) = texts(&out);
        (out.status.code(), stdout, stderr)
    };
    let ok = |stdout: &str| (Some(0), stdout.to_string(), String::new());
    assert_eq!(make(&[]), ok("scripts/gencert.sh mycert.pem\n"));
    assert_eq!(make(&["KEY=rsa"]), ok("scripts/gencert.sh mycert.pem\n"));
    assert_eq!(
        make(&["KEY=ec"]),
        ok("scripts/gencert.sh mycert-ec.pem ec\n")
    );
    for bad in ["KEY=dsa", "KEY="] {
        let (status, stdout, stderr) = make(&[bad]);
        assert_eq!(status, Some(2), "{bad}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains(&format!(
                "make cert: {bad} is not a key type: KEY=rsa (the default) writes mycert.pem, \
                 KEY=ec writes mycert-ec.pem"
            )),
            "{stderr}"
        );
    }
}
