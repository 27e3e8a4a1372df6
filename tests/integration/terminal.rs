//! The client at a terminal (a pseudo-terminal driven by tests/support/pty_run.py): the user
//! name is echoed, the password is not, and the transcript is the original's.

use std::process::Command;

use crate::common::*;

/// Runs the client on a terminal, answering its two prompts; gives what the terminal showed
/// and the exit status.
fn client_on_terminal(fx: &Fixture, port: &str, user: &str, password: &str) -> (String, i32) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_run.py");
    let out = run_with_input(
        Command::new("python3")
            .arg(script)
            .args(["User Name : ", user, "Password : ", password, "--"])
            .args([env!("CARGO_BIN_EXE_client"), "127.0.0.1", port])
            .current_dir(fx.path()),
        b"",
    );
    let shown = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    (shown, out.status.code().unwrap_or(-1))
}

#[test]
fn the_password_is_read_without_echo() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let (shown, status) = client_on_terminal(&fx, &server.port_arg(), "aticle", "Quartz-77");
    // Invalid Message: status 1, and nothing but the original's transcript on the terminal.
    assert_eq!(status, 1, "{shown}");
    assert!(!shown.contains("Quartz-77"), "{shown}");
    // The original's transcript; the terminal echoes the user name and each Enter.
    let expected = client_transcript(b"Invalid Message").replacen(
        "Enter the User Name : \n\nEnter the Password : \n\n",
        "Enter the User Name : aticle\n\n\nEnter the Password : \n\n\n",
        1,
    );
    assert_eq!(shown, expected);

    let (shown, status) = client_on_terminal(&fx, &server.port_arg(), "aticle", "123");
    assert_eq!(status, 0, "{shown}");
    assert!(shown.ends_with(&format!(
        "Received: \"{}\"\n",
        String::from_utf8_lossy(VALID_REPLY)
    )));
}
