//! What an idle connection holds: sessions that wait past the point where their thread gives
//! back its unused stack go on as before, and the server limits glibc's thread caches unless
//! the operator set glibc's tunables himself.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// The server's environment once it listens, started with `tunables` as GLIBC_TUNABLES (or
/// without it).
fn environment_of_server(fx: &Fixture, tunables: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
    command
        .args(["--bind", "127.0.0.1", "--cert", &fx.cert_arg(), "0"])
        .current_dir(fx.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("GLIBC_TUNABLES");
    if let Some(value) = tunables {
        command.env("GLIBC_TUNABLES", value);
    }
    let mut child = command.spawn().expect("start server");
    let stderr = Captured::collect_from(child.stderr.take().unwrap());
    stderr.wait_for("the start line", |t| t.contains("listening on"));
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&environ).replace('\0', "\n")
}

#[test]
fn the_server_keeps_only_small_chunks_in_thread_caches_unless_told_otherwise() {
    let fx = Fixture::new();
    let own = environment_of_server(&fx, None);
    assert!(
        own.lines()
            .any(|l| l == "GLIBC_TUNABLES=glibc.malloc.tcache_max=64"),
        "{own}"
    );
    // The operator's setting stands, even an empty one.
    for theirs in ["", "glibc.malloc.tcache_count=3"] {
        let environ = environment_of_server(&fx, Some(theirs));
        let set: Vec<&str> = environ
            .lines()
            .filter(|l| l.starts_with("GLIBC_TUNABLES="))
            .collect();
        assert_eq!(set, [format!("GLIBC_TUNABLES={theirs}")], "{environ}");
    }
}

#[test]
fn sessions_that_wait_between_commands_go_on() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let mut sessions: Vec<_> = (0..4).map(|_| tls_connect(&server.addr())).collect();
    let login = "<login><username>aticle</username><password>123</password></login>";
    for ssl in &mut sessions {
        assert!(call(ssl, login).contains("code=\"1000\""));
    }
    // Longer than a session waits before its thread gives back its unused stack, twice.
    for _ in 0..2 {
        let started = Instant::now();
        thread::sleep(Duration::from_millis(600));
        for ssl in &mut sessions {
            let view = call(ssl, "<view/>");
            assert!(view.contains("<username>aticle</username>"), "{view}");
        }
        assert!(started.elapsed() >= Duration::from_millis(600));
    }
    // Two commands sent at once are both answered, the second from what was read ahead.
    let ssl = &mut sessions[0];
    let both = [frame("<hello/>"), frame("<view/>")].concat();
    std::io::Write::write_all(ssl, &both).unwrap();
    assert!(read_reply(ssl).contains("<message>hello</message>"));
    assert!(read_reply(ssl).contains("<username>aticle</username>"));
}
