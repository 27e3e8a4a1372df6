//! The Login / Signup portal end to end at a pseudo-terminal (tests/support/pty_run.py):
//! sign up, log in, view, update, change the password, delete, as a person would.

use std::process::Command;

use crate::common::*;

/// Runs `client --portal` at a terminal, answering each prompt in turn.
fn portal(fx: &Fixture, server: &impl Listening, steps: &[(&str, &str)]) -> String {
    portal_with(fx, server, &[], steps)
}

/// [`portal`], with the client's options `args`.
fn portal_with(
    fx: &Fixture,
    server: &impl Listening,
    args: &[&str],
    steps: &[(&str, &str)],
) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_run.py");
    let mut command = Command::new("python3");
    command.arg(script);
    for (expect, send) in steps {
        command.args([expect, send]);
    }
    command
        .args(["--", env!("CARGO_BIN_EXE_client"), "--portal"])
        .args(args)
        .arg("127.0.0.1")
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
            ("address: ", "1 Main St"),
            ("next line (Enter ends): ", "Springfield"),
            ("next line (Enter ends): ", ""),
            // Signed up and logged in: the account menu.
            ("Choose: ", "1"),
            ("Choose: ", "5"),
            // Logged in by another spelling of the name: greeted by the stored one.
            ("Choose: ", "1"),
            ("User name: ", "CAROL"),
            ("Password: ", "carol-secret-1"),
            ("Choose: ", "2"),
            ("full_name [Carol Danvers]: ", "Carol D."),
            ("email [carol@example.org]: ", ""),
            ("phone: ", "+1 555 0199"),
            ("address [Enter keeps it]: ", "-"),
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
        "end it with an empty line",
        "Account carol created.\nLogged in as carol.\nLast sign-in: none on record; 0 failed \
         attempts on record.\n\nAccount of carol:",
        "full_name: Carol Danvers\n",
        "address: 1 Main St\n         Springfield\n",
        "Logged out",
        "Logged in as carol.\nLast sign-in: ",
        "address now:\n  1 Main St\n  Springfield\n",
        "Updated.",
        "full_name: Carol D.\n",
        "phone: +1 555 0199\n",
        "address: \n",
        "version: 2\n",
        "Password changed; your other sessions are ended.",
        "Account deleted; ending session.",
        "Bye.",
    ] {
        assert!(shown.contains(said), "{said:?} not shown in:\n{shown}");
    }
    assert!(!shown.contains("CAROL."), "greeted as typed:\n{shown}");
    assert!(
        !shown.contains("carol-secret"),
        "a password was echoed:\n{shown}"
    );
    let gone = fx.command(&server, &["--user", "carol"], "login", "carol-secret-2\n");
    assert_eq!(gone.status.code(), Some(1));
}

#[test]
fn each_value_is_checked_as_typed_and_asked_again_alone() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    let shown = portal(
        &fx,
        &server,
        &[
            ("Choose: ", "2"),
            ("User name: ", "x"),
            ("again.\r\nUser name: ", "dave"),
            ("New password: ", "short"),
            ("again.\r\nNew password: ", "dave-secret-1"),
            ("New password again: ", "dave-secret-1"),
            ("full_name: ", " Dave"),
            ("again.\r\nfull_name: ", "Dave Bowman"),
            ("email: ", "not-an-address"),
            ("again.\r\nemail: ", "dave@example.org"),
            ("phone: ", "call me"),
            ("again.\r\nphone: ", "+1 555 0100"),
            ("address: ", "1 Pod Bay"),
            ("next line (Enter ends): ", "Discovery One\t"),
            ("next line (Enter ends): ", ""),
            ("again.\r\naddress: ", "1 Pod Bay"),
            ("next line (Enter ends): ", "Discovery One"),
            ("next line (Enter ends): ", ""),
            ("Choose: ", "1"),
            // End of input (Ctrl-D) at the menu.
            ("Choose: ", "\u{4}"),
        ],
    );
    for said in [
        "username: must be 3 to 32 characters long; try again.",
        "password: must be 8 to 1024 bytes long; try again.",
        "full_name: leading or trailing white space is not allowed; try again.",
        "email: not an e-mail address (name@domain.example); try again.",
        "phone: a telephone number has digits, spaces and + ( ) - . only; try again.",
        "address: control characters other than line breaks are not allowed; try again.",
        "Logged in as dave.",
        // Nothing typed before a mistake was lost.
        "full_name: Dave Bowman\nemail: dave@example.org\nphone: +1 555 0100\n\
         address: 1 Pod Bay\n         Discovery One\n",
        "Bye.",
    ] {
        assert!(shown.contains(said), "{said:?} not shown in:\n{shown}");
    }
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
            ("User name: ", "erin"),
            ("New password: ", "long-enough"),
            ("New password again: ", "different!"),
            ("New password: ", "long-enough"),
            ("New password again: ", "long-enough"),
            ("full_name: ", ""),
            ("email: ", ""),
            ("phone: ", ""),
            ("address: ", ""),
            ("Choose: ", "5"),
            // The name is taken, whatever its case: the server refuses.
            ("Choose: ", "2"),
            ("User name: ", "ERIN"),
            ("New password: ", "long-enough"),
            ("New password again: ", "long-enough"),
            ("full_name: ", ""),
            ("email: ", ""),
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
        "Logged in as erin.",
        "Refused (",
        "Bye.",
    ] {
        assert!(shown.contains(said), "{said:?} not shown in:\n{shown}");
    }
}

#[test]
fn enroll_the_certificate_sign_in_with_it_see_the_history_and_remove_it() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    let cert = fx.path().join("dave.pem");
    let made = gencert_script()
        .arg(&cert)
        .args(["ec", "dave"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let pem = cert.display().to_string();
    let shown = portal_with(
        &fx,
        &server,
        &["--cert", &pem],
        &[
            ("Choose: ", "2"),
            ("User name: ", "dave"),
            ("New password: ", "dave-secret-1"),
            ("New password again: ", "dave-secret-1"),
            ("full_name: ", ""),
            ("email: ", ""),
            ("phone: ", ""),
            ("address: ", ""),
            ("Choose: ", "8"),
            ("Label (laptop, say; Enter for none): ", "laptop"),
            ("Choose: ", "7"),
            ("Enter to keep them all: ", ""),
            ("Choose: ", "5"),
            // Signed in by the certificate: no password asked.
            ("Choose: ", "3"),
            ("User name: ", "dave"),
            ("Choose: ", "6"),
            ("Choose: ", "7"),
            ("Enter to keep them all: ", "1"),
            ("Choose: ", "5"),
            ("Choose: ", "3"),
            ("User name: ", "dave"),
            ("Choose: ", "q"),
        ],
    );
    for said in [
        "3) Sign in with this certificate",
        "Last sign-in: none on record; 0 failed attempts on record.",
        "8) Enroll this certificate",
        " enrolled; sign in with it as --cert-login.",
        "  laptop (this one)\n",
        " from 127.0.0.1 (password); 0 failed attempts since.",
        "  certificate      signed in\n",
        " removed.\n",
        "Refused (2200): authentication failed: the certificate is not enrolled for that user \
         name.",
        "Bye.",
    ] {
        assert!(shown.contains(said), "{said:?} not shown in:\n{shown}");
    }
}
