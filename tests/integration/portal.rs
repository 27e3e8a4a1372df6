//! The Login / Signup portal end to end at a pseudo-terminal (tests/support/pty_run.py):
//! sign up, log in, view, update, change the password, delete, as a person would.

use std::process::Command;

use crate::common::*;

/// Runs `client --portal` at a terminal, answering each prompt in turn.
fn portal(fx: &Fixture, server: &impl Listening, steps: &[(&str, &str)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_run.py");
    let mut command = Command::new("python3");
    command.arg(script);
    for (expect, send) in steps {
        command.args([expect, send]);
    }
    command
        .args(["--", env!("CARGO_BIN_EXE_client"), "--portal", "127.0.0.1"])
        .arg(server.port_arg())
        .current_dir(fx.path());
    let out = run_with_input(&mut command, b"");
    let shown = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "{shown}\n{}", texts(&out).1);
    shown
}

#[test]
fn sign_up_log_in_view_update_change_password_delete() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    let shown = portal(
        &fx,
        &server,
        &[
            ("Choose: ", "2"),
            ("User name: ", "carol"),
            ("New password: ", "carol-secret-1"),
            ("New password again: ", "carol-secret-1"),
            ("full_name: ", "Carol Danvers"),
            ("email: ", "carol@example.org"),
            ("phone: ", ""),
            ("address: ", "1 Main St\\nSpringfield"),
            ("Choose: ", "1"),
            ("User name: ", "carol"),
            ("Password: ", "carol-secret-1"),
            ("Choose: ", "1"),
            ("Choose: ", "2"),
            ("full_name [Carol Danvers]: ", "Carol D."),
            ("email [carol@example.org]: ", ""),
            ("phone: ", "+1 555 0199"),
            ("address [1 Main St\\nSpringfield]: ", "-"),
            ("Choose: ", "1"),
            ("Choose: ", "3"),
            ("Current password: ", "carol-secret-1"),
            ("New password: ", "carol-secret-2"),
            ("New password again: ", "carol-secret-2"),
            ("Choose: ", "4"),
            ("Type yes to confirm: ", "yes"),
            ("Password: ", "carol-secret-2"),
            ("Choose: ", "q"),
        ],
    );
    for said in [
        "Account carol created; log in to use it.",
        "Logged in as carol.",
        "full_name: Carol Danvers\n",
        "address: 1 Main St\\nSpringfield\n",
        "Updated.",
        "full_name: Carol D.\n",
        "phone: +1 555 0199\n",
        "address: \n",
        "version: 2\n",
        "Password changed.",
        "Account deleted; ending session.",
        "Bye.",
    ] {
        assert!(shown.contains(said), "{said:?} not shown in:\n{shown}");
    }
    assert!(
        !shown.contains("carol-secret"),
        "a password was echoed:\n{shown}"
    );
    let gone = fx.command(&server, &["--user", "carol"], "login", "carol-secret-2\n");
    assert_eq!(gone.status.code(), Some(1));
}

#[test]
fn mistakes_are_explained_and_end_of_input_leaves_cleanly() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    let shown = portal(
        &fx,
        &server,
        &[
            ("Choose: ", "7"),
            ("Choose: ", "1"),
            ("User name: ", "nobody"),
            ("Password: ", "whatever-pw"),
            ("Choose: ", "2"),
            ("User name: ", "x"),
            ("New password: ", "long-enough"),
            ("New password again: ", "different!"),
            ("New password: ", "long-enough"),
            ("New password again: ", "long-enough"),
            ("full_name: ", ""),
            ("email: ", "not-an-address"),
            ("phone: ", ""),
            ("address: ", ""),
            // End of input (Ctrl-D) at the menu.
            ("Choose: ", "\u{4}"),
        ],
    );
    for said in [
        "There is no choice \"7\"",
        "Refused (2200): authentication failed: wrong user name or password.",
        "The two passwords differ; try again.",
        "Refused (2004): username: must be 3 to 32 characters long.",
        "Bye.",
    ] {
        assert!(shown.contains(said), "{said:?} not shown in:\n{shown}");
    }
}
