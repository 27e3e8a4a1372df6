//! Every account command through the scripted client against the real server: success and
//! each failure code, and what the database holds.

use std::thread;

use crate::common::*;

/// Signs up `user` with `password` and the given `--set` values; asserts success.
fn signup(fx: &Fixture, server: &impl Listening, user: &str, password: &str, sets: &[&str]) {
    let mut args = vec!["--user", user];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = fx.command(server, &args, "signup", &format!("{password}\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        texts(&out).0,
        format!("account {user} created; log in to use it\n")
    );
}

/// Asserts a refusal: exit status 1, `code` and `words` on stderr, nothing on stdout.
fn assert_refused(out: &std::process::Output, code: u16, words: &str) {
    let (stdout, stderr) = texts(out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(": {code} ")) && stderr.contains(words),
        "wanted {code} {words:?} in {stderr}"
    );
}

fn view_lines(fx: &Fixture, server: &impl Listening, user: &str, password: &str) -> Vec<String> {
    let out = fx.command(server, &["--user", user], "view", &format!("{password}\n"));
    assert!(out.status.success(), "{out:?}");
    texts(&out).0.lines().map(String::from).collect()
}

fn field<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
}

#[test]
fn signup_and_its_refusals() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(
        &fx,
        &server,
        "alice",
        "alice-secret",
        &["email=alice@example.org"],
    );
    let again = fx.command(&server, &["--user", "ALICE"], "signup", "another-secret\n");
    assert_refused(&again, 2302, "taken");
    for (user, password, sets, words) in [
        ("al", "long-enough", &[][..], "username"),
        ("al ice", "long-enough", &[], "username"),
        ("bob", "short", &[], "password"),
        ("bob", "long-enough", &["email=not-an-address"], "email"),
        ("bob", "long-enough", &["phone=call me"], "phone"),
        ("bob", "long-enough", &["full_name= padded"], "full_name"),
    ] {
        let mut args = vec!["--user", user];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = fx.command(&server, &args, "signup", &format!("{password}\n"));
        assert_refused(&out, 2004, words);
    }
}

#[test]
fn login_says_the_same_for_a_wrong_password_and_an_unknown_user() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "alice", "alice-secret", &[]);
    let ok = fx.command(&server, &["--user", "alice"], "login", "alice-secret\n");
    assert!(ok.status.success());
    assert_eq!(texts(&ok).0, "logged in as alice\n");
    let wrong = fx.command(&server, &["--user", "alice"], "login", "alice-secreT\n");
    let unknown = fx.command(&server, &["--user", "nobody"], "login", "alice-secret\n");
    assert_refused(&wrong, 2200, "wrong user name or password");
    assert_eq!(texts(&wrong).1, texts(&unknown).1);
}

#[test]
fn view_shows_every_field() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(
        &fx,
        &server,
        "alice",
        "alice-secret",
        &[
            "full_name=Alice Liddell",
            "email=alice@example.org",
            "address=1 Rabbit Hole\nWonderland",
        ],
    );
    let lines = view_lines(&fx, &server, "alice", "alice-secret");
    let names: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "username",
            "full_name",
            "email",
            "phone",
            "address",
            "created_at",
            "updated_at",
            "last_login_at",
            "version"
        ]
    );
    assert_eq!(field(&lines, "username"), "alice");
    assert_eq!(field(&lines, "full_name"), "Alice Liddell");
    assert_eq!(field(&lines, "phone"), "");
    assert_eq!(field(&lines, "address"), "1 Rabbit Hole\\nWonderland");
    assert_eq!(field(&lines, "version"), "1");
    assert!(field(&lines, "last_login_at").ends_with('Z'));

    let xml = fx.command(
        &server,
        &["--user", "alice", "--xml"],
        "view",
        "alice-secret\n",
    );
    let (doc, _) = texts(&xml);
    assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><reply code=\"1000\">"));
    assert!(
        doc.contains("<address>1 Rabbit Hole\nWonderland</address>"),
        "{doc}"
    );
    assert!(!doc.contains("pbkdf2") && !doc.contains("alice-secret"));
}

#[test]
fn update_and_its_refusals() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "alice", "alice-secret", &[]);
    let out = fx.command(
        &server,
        &[
            "--user",
            "alice",
            "--set",
            "phone=+1 555 0100",
            "--if-version",
            "1",
        ],
        "update",
        "alice-secret\n",
    );
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = texts(&out).0.lines().map(String::from).collect();
    assert_eq!(field(&lines, "phone"), "+1 555 0100");
    assert_eq!(field(&lines, "version"), "2");

    let stale = fx.command(
        &server,
        &[
            "--user",
            "alice",
            "--set",
            "phone=999 999",
            "--if-version",
            "1",
        ],
        "update",
        "alice-secret\n",
    );
    assert_refused(&stale, 2304, "changed");
    let bad = fx.command(
        &server,
        &["--user", "alice", "--set", "email=nope"],
        "update",
        "alice-secret\n",
    );
    assert_refused(&bad, 2004, "email");
    let lines = view_lines(&fx, &server, "alice", "alice-secret");
    assert_eq!(field(&lines, "phone"), "+1 555 0100");
    assert_eq!(field(&lines, "email"), "");
    // An empty value clears a field.
    let out = fx.command(
        &server,
        &["--user", "alice", "--set", "phone="],
        "update",
        "alice-secret\n",
    );
    assert!(out.status.success());
    assert_eq!(
        field(&view_lines(&fx, &server, "alice", "alice-secret"), "phone"),
        ""
    );
}

#[test]
fn two_clients_updating_one_account_one_wins_the_other_gets_2304() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "alice", "alice-secret", &[]);
    let seen = field(
        &view_lines(&fx, &server, "alice", "alice-secret"),
        "version",
    )
    .to_string();
    let outs: Vec<_> = thread::scope(|s| {
        let workers: Vec<_> = ["one@example.org", "two@example.org"]
            .into_iter()
            .map(|email| {
                let (fx, server, seen) = (&fx, &server, seen.as_str());
                s.spawn(move || {
                    let set = format!("email={email}");
                    let out = fx.command(
                        server,
                        &["--user", "alice", "--set", &set, "--if-version", seen],
                        "update",
                        "alice-secret\n",
                    );
                    (email, out)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let winners: Vec<_> = outs.iter().filter(|(_, o)| o.status.success()).collect();
    let losers: Vec<_> = outs.iter().filter(|(_, o)| !o.status.success()).collect();
    assert_eq!((winners.len(), losers.len()), (1, 1), "{outs:?}");
    assert_refused(&losers[0].1, 2304, "changed");
    let lines = view_lines(&fx, &server, "alice", "alice-secret");
    assert_eq!(field(&lines, "email"), winners[0].0);
    assert_eq!(field(&lines, "version"), "2");
}

#[test]
fn passwd_and_delete_need_the_password() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "alice", "alice-secret", &[]);
    let wrong = fx.command(
        &server,
        &["--user", "alice"],
        "passwd",
        "not-it-at-all\nnew-secret-1\n",
    );
    assert_refused(&wrong, 2200, "wrong");
    let short = fx.command(
        &server,
        &["--user", "alice"],
        "passwd",
        "alice-secret\nshort\n",
    );
    assert_refused(&short, 2004, "password");
    let ok = fx.command(
        &server,
        &["--user", "alice"],
        "passwd",
        "alice-secret\nnew-secret-1\n",
    );
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(
        texts(&ok).0,
        "password changed; your other sessions are ended\n"
    );
    let old = fx.command(&server, &["--user", "alice"], "login", "alice-secret\n");
    assert_refused(&old, 2200, "wrong");

    // --password-file instead of stdin.
    let file = fx.path().join("pw.txt");
    std::fs::write(&file, "new-secret-1\n").unwrap();
    let file_arg = file.display().to_string();
    let out = fx.command(
        &server,
        &["--user", "alice", "--password-file", &file_arg],
        "login",
        "",
    );
    assert!(out.status.success(), "{out:?}");

    let deleted = fx.command(&server, &["--user", "alice"], "delete", "new-secret-1\n");
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(texts(&deleted).0, "account deleted; ending session\n");
    let gone = fx.command(&server, &["--user", "alice"], "login", "new-secret-1\n");
    assert_refused(&gone, 2200, "wrong");
    // The name is free again.
    signup(&fx, &server, "alice", "alice-secret-2", &[]);
}

#[test]
fn a_command_too_large_to_frame_is_a_clear_error() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "alice", "alice-secret", &[]);
    let huge = format!("address={}", "&".repeat(20_000));
    let out = fx.command(
        &server,
        &["--user", "alice", "--set", &huge],
        "update",
        "alice-secret\n",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        texts(&out).1.contains("too large to send"),
        "{}",
        texts(&out).1
    );
}

#[test]
fn a_signed_up_account_gets_the_legacy_reply() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "bob.smith", "bob-secret", &[]);
    let out = fx.client(
        &["127.0.0.1", &server.port_arg()],
        b"bob.smith\nbob-secret\n",
    );
    assert_transcript(&out, VALID_REPLY);
    assert_eq!(
        exchange(&server.addr(), &request("bob.smith", "bob-secret")),
        VALID_REPLY
    );
    assert_eq!(
        exchange(&server.addr(), &request("bob.smith", "bob-secreT")),
        b"Invalid Message"
    );
}

#[test]
fn the_database_holds_no_password_and_no_unsalted_hash() {
    let fx = Fixture::new();
    let server = fx.server(&[]);
    let passwords = ["same-password-1", "same-password-1", "other-password-2"];
    for (i, password) in passwords.iter().enumerate() {
        signup(&fx, &server, &format!("user{i}"), password, &[]);
    }
    assert!(server.terminate().success());
    let mut bytes = std::fs::read(fx.path().join("users.db")).unwrap();
    bytes.extend(std::fs::read(fx.path().join("users.db-wal")).unwrap_or_default());
    for password in passwords {
        assert!(
            !contains(&bytes, password.as_bytes()),
            "{password} stored in clear"
        );
    }
    let out = std::process::Command::new("sqlite3")
        .arg(fx.path().join("users.db"))
        .arg("SELECT password_hash FROM accounts ORDER BY id")
        .output()
        .expect("sqlite3");
    let hashes: Vec<String> = texts(&out).0.lines().map(String::from).collect();
    assert_eq!(hashes.len(), 3);
    for hash in &hashes {
        let parts: Vec<&str> = hash.split('$').collect();
        assert_eq!(parts[..3], ["", "pbkdf2-sha512", "i=1000"], "{hash}");
        assert_eq!(parts[3].len(), 22, "a 16-byte salt: {hash}"); // base64 without padding
    }
    assert_ne!(hashes[0], hashes[1], "same password, same hash: no salt");
}
