//! `./admin` on the store of a running server, on SQLite and on PostgreSQL: every command, what
//! the server makes of a lock and of a password reset in both protocols, exit statuses, and no
//! password in any output but a generated one.

use std::process::{Command, Output};

use crate::common::*;

/// Runs `admin [--db URL] args` in the fixture's directory with `stdin`.
fn admin(fx: &Fixture, db: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_admin"));
    if let Some(url) = db {
        command.args(["--db", url]);
    }
    run_with_input(command.args(args).current_dir(fx.path()), stdin.as_bytes())
}

/// Signs `user` up through the real client; asserts success.
fn signup(fx: &Fixture, server: &impl Listening, user: &str, password: &str) {
    let out = fx.command(
        server,
        &["--user", user],
        "signup",
        &format!("{password}\n"),
    );
    assert!(out.status.success(), "{out:?}");
}

fn login_document(user: &str, password: &str) -> String {
    format!("<login><username>{user}</username><password>{password}</password></login>")
}

/// A new account-protocol connection logged in as `user`.
fn logged_in(
    server: &impl Listening,
    user: &str,
    password: &str,
) -> openssl::ssl::SslStream<std::net::TcpStream> {
    let mut ssl = tls_connect(&server.addr());
    let reply = call(&mut ssl, &login_document(user, password));
    assert!(reply.contains("code=\"1000\""), "{reply}");
    ssl
}

/// The reply to one login on a new connection.
fn login_reply(server: &impl Listening, user: &str, password: &str) -> String {
    let mut ssl = tls_connect(&server.addr());
    call(&mut ssl, &login_document(user, password))
}

/// Every command against a running server on the store at `db` (`None`: the default
/// `users.db` in the fixture's directory).
fn every_command(fx: &Fixture, server: &impl Listening, db: Option<&str>) {
    let mut outputs = Vec::new();
    let mut run = |args: &[&str], stdin: &str| {
        let out = admin(fx, db, args, stdin);
        outputs.push(out.clone());
        out
    };
    signup(fx, server, "alice", "alice-secret");
    signup(fx, server, "Bob", "bob-secret-1");

    // list, text and JSON.
    let out = run(&["list"], "");
    assert!(out.status.success(), "{out:?}");
    let text = texts(&out).0;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAME ") && lines[0].ends_with("STATE"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("alice ") && lines[1].contains(" never "),
        "{text}"
    );
    assert!(lines[1].ends_with("  active"), "{text}");
    assert!(lines[2].starts_with("Bob "), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&run(&["list", "--json"], "").stdout).expect("JSON");
    assert_eq!(json[1]["name"], "Bob");
    assert_eq!(json[1]["state"], "active");

    // lock: an open session ends at its next command; logins are refused in both protocols,
    // and only the right password learns why.
    let mut session = logged_in(server, "alice", "alice-secret");
    assert_eq!(
        texts(&run(&["lock", "ALICE"], "")).0,
        "account alice locked; its logins are refused and its sessions end\n"
    );
    let reply = call(&mut session, "<view/>");
    assert!(
        reply.contains("code=\"1500\"") && reply.contains("the account was locked"),
        "{reply}"
    );
    let right = login_reply(server, "alice", "alice-secret");
    assert!(
        right.contains("code=\"2200\"")
            && right.contains("the account is locked; ask the operator"),
        "{right}"
    );
    let wrong = login_reply(server, "alice", "wrong-secret");
    assert!(
        wrong.contains("code=\"2200\"") && wrong.contains("wrong user name or password"),
        "{wrong}"
    );
    assert_eq!(
        exchange(&server.addr(), &request("alice", "alice-secret")),
        b"Invalid Message"
    );
    let locked = texts(&run(&["list", "--locked"], "")).0;
    assert_eq!(locked.lines().count(), 2, "{locked}");
    assert!(
        locked.contains("locked by the operator since 20"),
        "{locked}"
    );
    assert!(
        texts(&run(&["show", "alice"], ""))
            .0
            .contains("state          locked")
    );

    // unlock: logins work again, in both protocols.
    let out = run(&["unlock", "alice"], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        exchange(&server.addr(), &request("alice", "alice-secret")),
        VALID_REPLY
    );

    // reset-password: the open session ends; only the new password logs in.
    let mut session = logged_in(server, "alice", "alice-secret");
    let out = run(&["reset-password", "alice"], "alice-new-secret\n");
    assert!(out.status.success(), "{out:?}");
    let reply = call(&mut session, "<view/>");
    assert!(
        reply.contains("code=\"1500\"") && reply.contains("the password was changed or reset"),
        "{reply}"
    );
    assert!(login_reply(server, "alice", "alice-secret").contains("code=\"2200\""));
    let mut session = logged_in(server, "alice", "alice-new-secret");
    assert!(call(&mut session, "<view/>").contains("code=\"1000\""));
    // Refused by the policy: nothing changes.
    let out = run(&["reset-password", "alice"], "short\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(texts(&out).1.contains("password: must be"), "{out:?}");
    assert!(call(&mut session, "<view/>").contains("code=\"1000\""));
    // --generate prints the new password, once.
    let out = admin(fx, db, &["reset-password", "--generate", "bob"], "");
    assert!(out.status.success(), "{out:?}");
    let generated = texts(&out)
        .0
        .lines()
        .find_map(|l| l.strip_prefix("new password: ").map(String::from))
        .expect("the generated password");
    assert_eq!(generated.len(), 24);
    logged_in(server, "bob", &generated);

    // show: every field but the hash, the throttle and the known addresses.
    let shown = texts(&run(&["show", "alice"], "")).0;
    for words in [
        "name           alice\n",
        "email          \n",
        "state          active\n",
        // The old password's failure; the successes after it take back only their own.
        "failed logins  1 (last ",
        "known addresses:\n  127.0.0.1 ",
    ] {
        assert!(shown.contains(words), "{words:?} in {shown}");
    }
    assert!(!shown.contains("pbkdf2"), "{shown}");

    // Throttled by failures, then unthrottled by name, and by address.
    for _ in 0..5 {
        login_reply(server, "bob", "guess-word");
    }
    // The refusal lasts a second (on a loaded machine it may be over by now); the count is
    // not: a right password here would clear it, so none is tried before unthrottle.
    let listed = texts(&run(&["list"], "")).0;
    assert!(
        listed.contains("throttled until 20") || listed.contains("  active\n"),
        "{listed}"
    );
    let shown = texts(&run(&["show", "bob"], "")).0;
    assert!(shown.contains("failed logins  5 (last 20"), "{shown}");
    let stats = texts(&run(&["stats"], "")).0;
    let stat = |label: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label}:")))
            .map(|rest| {
                rest.trim()
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no {label} in {stats}"))
    };
    assert_eq!(stat("accounts"), "2");
    assert_eq!(stat("locked"), "0");
    assert_eq!(stat("logins, last day"), "2");
    assert!(
        stat("failures, last day").parse::<u32>().unwrap() >= 5,
        "{stats}"
    );
    assert!(
        ["bob", "none"].contains(&stat("throttled names").as_str()),
        "{stats}"
    );
    assert_eq!(
        texts(&run(&["unthrottle", "BOB"], "")).0,
        "3 throttle counts of the name BOB cleared\n"
    );
    assert!(login_reply(server, "bob", &generated).contains("code=\"1000\""));
    assert_eq!(
        texts(&run(&["unthrottle", "--address", "127.0.0.1"], "")).0,
        "3 throttle counts of the address 127.0.0.1 cleared\n"
    );

    // delete, and refusals.
    assert_eq!(
        texts(&run(&["delete", "bob"], "")).0,
        "account Bob deleted\n"
    );
    let out = run(&["show", "bob"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        texts(&out).1.contains("no account named \"bob\""),
        "{out:?}"
    );
    assert_eq!(run(&["lock", "nobody"], "").status.code(), Some(1));
    for usage in [
        &[][..],
        &["frobnicate"],
        &["show"],
        &["list", "x"],
        &["lock", "a", "--json"],
    ] {
        assert_eq!(run(usage, "").status.code(), Some(2), "{usage:?}");
    }

    for out in &outputs {
        let (stdout, stderr) = texts(out);
        for password in ["alice-secret", "alice-new-secret", "bob-secret-1", "short"] {
            assert!(
                !stdout.contains(password) && !stderr.contains(password),
                "{password} in {out:?}"
            );
        }
    }
}

#[test]
fn every_command_on_sqlite_beside_a_running_server() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    every_command(&fx, &server, None);
}

#[test]
fn every_command_on_postgres_beside_a_running_server() {
    let fx = Fixture::new();
    let url = crate::common::pg::cluster().new_database();
    let server = fx.in_process(&["--db", &url]);
    every_command(&fx, &server, Some(&url));
}

#[test]
fn help_and_a_missing_database() {
    let fx = Fixture::new();
    let out = admin(&fx, None, &["--help"], "");
    assert!(out.status.success());
    assert!(texts(&out).0.contains("reset-password NAME"));
    let out = admin(&fx, None, &["list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        texts(&out).1.contains("no account database at users.db"),
        "{out:?}"
    );
}

/// `show NAME`'s text.
fn shown(fx: &Fixture, name: &str) -> String {
    let out = admin(fx, None, &["show", name], "");
    assert!(out.status.success(), "{out:?}");
    texts(&out).0
}

/// A user name that is also an address (`10.1.2.3`): `unthrottle` refuses it bare, naming
/// both forms, and clears the name's counts with `--user`, the address's with `--address`;
/// `unlock` clears the name's.
#[test]
fn a_name_that_looks_like_an_address() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "10.1.2.3", "dotted-secret");
    let guess = || {
        for _ in 0..3 {
            login_reply(&server, "10.1.2.3", "guess-word");
        }
        assert!(shown(&fx, "10.1.2.3").contains("failed logins  3 (last 20"));
    };
    guess();

    let out = admin(&fx, None, &["unthrottle", "10.1.2.3"], "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = texts(&out).1;
    assert!(
        said.contains("--user NAME") && said.contains("--address A"),
        "{said}"
    );
    assert!(shown(&fx, "10.1.2.3").contains("failed logins  3 (last 20"));
    let out = admin(&fx, None, &["unthrottle", "--address", "10.1.2.3"], "");
    assert_eq!(
        texts(&out).0,
        "0 throttle counts of the address 10.1.2.3 cleared\n",
        "{out:?}"
    );
    let out = admin(&fx, None, &["unthrottle", "--user", "10.1.2.3"], "");
    assert_eq!(
        texts(&out).0,
        "2 throttle counts of the name 10.1.2.3 cleared\n",
        "{out:?}"
    );
    assert!(shown(&fx, "10.1.2.3").contains("failed logins  none\n"));
    for usage in [
        &["unthrottle"][..],
        &["unthrottle", "--user", "a", "--address", "::1"],
        &["unthrottle", "--user", "a", "b"],
        &["unthrottle", "--address", "not-an-address"],
        &["show", "--user", "a"],
    ] {
        let out = admin(&fx, None, usage, "");
        assert_eq!(out.status.code(), Some(2), "{usage:?}: {out:?}");
    }

    guess();
    assert!(admin(&fx, None, &["lock", "10.1.2.3"], "").status.success());
    let out = admin(&fx, None, &["unlock", "10.1.2.3"], "");
    assert!(out.status.success(), "{out:?}");
    let after = shown(&fx, "10.1.2.3");
    assert!(
        after.contains("failed logins  none\n") && after.contains("state          active\n"),
        "{after}"
    );
}

/// The schema version of the SQLite file at `path`.
fn user_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

/// The version after "to " in `./admin migrate`'s report.
fn migrated_to(said: &str) -> i64 {
    said.rsplit("to ")
        .next()
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no version in {said:?}"))
}

/// `./admin` does not migrate: on an older schema it refuses, naming the versions, and the
/// file stays as it was; `./admin migrate` migrates and says from which version to which; on
/// a newer schema both refuse.
#[test]
fn an_older_sqlite_schema_is_migrated_only_when_asked() {
    let fx = Fixture::new();
    let path = fx.path().join("users.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE accounts (
                 id            INTEGER PRIMARY KEY,
                 username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
                 password_hash TEXT NOT NULL,
                 created_at    TEXT NOT NULL,
                 updated_at    TEXT NOT NULL,
                 last_login_at TEXT
             );
             INSERT INTO accounts (username, password_hash, created_at, updated_at)
             VALUES ('olduser', 'x', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let out = admin(&fx, None, &["list"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = texts(&out).1;
    assert!(
        said.contains("schema version 1,") && said.contains("admin migrate"),
        "{said}"
    );
    assert_eq!(user_version(&path), 1);

    let out = admin(&fx, None, &["migrate"], "");
    assert!(out.status.success(), "{out:?}");
    let said = texts(&out).0;
    assert!(said.contains("from schema version 1 to "), "{said}");
    let current = migrated_to(&said);
    assert!(current > 1, "{said}");
    assert_eq!(user_version(&path), current);
    let out = admin(&fx, None, &["list"], "");
    assert!(texts(&out).0.contains("olduser "), "{out:?}");
    let out = admin(&fx, None, &["migrate"], "");
    assert_eq!(
        texts(&out).0,
        format!(
            "the account database is at schema version {current}, this program's: nothing to do\n"
        ),
        "{out:?}"
    );

    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", current + 1)
        .unwrap();
    for command in ["list", "migrate"] {
        let out = admin(&fx, None, &[command], "");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let said = texts(&out).1;
        assert!(
            said.contains(&format!("schema version {}, newer", current + 1)),
            "{said}"
        );
    }
}

/// On PostgreSQL: a new database is refused (and left empty) until `./admin migrate` makes
/// the schema; a newer schema is refused.
#[test]
fn a_postgres_schema_is_migrated_only_when_asked() {
    let fx = Fixture::new();
    let url = crate::common::pg::cluster().new_database();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let out = admin(&fx, Some(&url), &["list"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = texts(&out).1;
    assert!(
        said.contains("no schema yet") && said.contains("admin migrate"),
        "{said}"
    );
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);

    let out = admin(&fx, Some(&url), &["migrate"], "");
    assert!(out.status.success(), "{out:?}");
    let current = migrated_to(&texts(&out).0);
    assert!(admin(&fx, Some(&url), &["list"], "").status.success());

    client
        .execute(
            "UPDATE schema_version SET version = $1",
            &[&i32::try_from(current + 1).unwrap()],
        )
        .unwrap();
    let out = admin(&fx, Some(&url), &["stats"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        texts(&out)
            .1
            .contains(&format!("schema version {}, newer", current + 1)),
        "{out:?}"
    );
}

/// Stored values with an escape sequence, a direction override or a C1 control (written into
/// the database, as no server takes them) reach the operator's terminal escaped, as the
/// client shows them; as JSON, escaped by JSON's rules, and read back as stored.
#[test]
fn stored_values_are_shown_escaped() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "carol", "carol-secret");
    let (red, evil) = (
        "x\u{1b}[31mred\u{202e}txt",
        "ev\u{1b}]0;owned\u{7}il\u{9b}2J",
    );
    rusqlite::Connection::open(fx.path().join("users.db"))
        .unwrap()
        .execute_batch(&format!(
            "UPDATE accounts SET full_name = '{red}', address = 'line 1\nline 2';
             INSERT INTO accounts (username, password_hash, created_at, updated_at)
             VALUES ('{evil}', 'x', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');"
        ))
        .unwrap();
    let text = shown(&fx, "carol");
    assert!(
        text.contains("full_name      x\\u{1b}[31mred\\u{202e}txt\n")
            && text.contains("address        line 1\\nline 2\n"),
        "{text}"
    );
    let out = admin(&fx, None, &["list"], "");
    let text = texts(&out).0;
    assert!(
        text.contains("ev\\u{1b}]0;owned\\u{7}il\\u{9b}2J  2026-01-01T00:00:00.000Z"),
        "{text}"
    );
    let out = admin(&fx, None, &["list", "--json"], "");
    for (what, text) in [("list", texts(&out).0), ("show", shown(&fx, "carol"))] {
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{what}: {text:?}"
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json[1]["name"], evil);
}

/// Runs `admin args` on a terminal (tests/support/pty_run.py), answering its prompts as
/// `answers` says; gives what the terminal showed and the exit status.
fn admin_on_terminal(fx: &Fixture, answers: &[&str], args: &[&str]) -> (String, i32) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_run.py");
    let out = run_with_input(
        Command::new("python3")
            .arg(script)
            .args(answers)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_admin"))
            .args(args)
            .current_dir(fx.path()),
        b"",
    );
    let shown = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    (shown, out.status.code().unwrap_or(-1))
}

/// On a terminal, `reset-password` asks twice, without echo, and changes nothing if the two
/// differ.
#[test]
fn reset_password_on_a_terminal_asks_twice() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    signup(&fx, &server, "tess", "tess-secret-1");
    let (shown, status) = admin_on_terminal(
        &fx,
        &[
            "new password: ",
            "tess-secret-2",
            "again: ",
            "tess-secret-3",
        ],
        &["reset-password", "tess"],
    );
    assert_eq!(status, 1, "{shown}");
    assert!(shown.contains("the two passwords differ"), "{shown}");
    assert!(!shown.contains("tess-secret"), "{shown}");
    assert!(login_reply(&server, "tess", "tess-secret-1").contains("code=\"1000\""));

    let (shown, status) = admin_on_terminal(
        &fx,
        &[
            "new password: ",
            "tess-secret-2",
            "again: ",
            "tess-secret-2",
        ],
        &["reset-password", "tess"],
    );
    assert_eq!(status, 0, "{shown}");
    assert!(!shown.contains("tess-secret"), "{shown}");
    assert!(login_reply(&server, "tess", "tess-secret-2").contains("code=\"1000\""));
}
