//! Slow, silent, broken and hostile peers: each is closed, and the server keeps serving.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

/// Whether the server closes `tcp` within `within` (EOF or reset), rather than leaving it open.
fn closed_by_server(tcp: &mut TcpStream, within: Duration) -> bool {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert, say
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn assert_still_serving(server: &mut Server) {
    assert!(server.child.try_wait().unwrap().is_none(), "server exited");
    assert_eq!(
        exchange(&server.addr(), &request("aticle", "123")),
        VALID_REPLY
    );
}

#[test]
fn a_silent_client_does_not_hold_up_another() {
    let fx = Fixture::new();
    let mut server = fx.server(&["--demo", "--timeout", "300"]);
    let _silent_tcp = TcpStream::connect(server.addr()).unwrap();
    let _silent_tls = tls_connect(&server.addr());
    let started = Instant::now();
    assert_still_serving(&mut server);
    // The server's timeout is 300 s: an answer well before it means nobody waited for the
    // silent ones (a serial server would never answer here).
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn junk_instead_of_a_client_hello_is_closed() {
    let fx = Fixture::new();
    let mut server = fx.server(&["--demo"]);
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(closed_by_server(&mut tcp, PATIENCE));
    server.stderr.wait_for("the failed handshake", |t| {
        t.contains("TLS handshake failed")
    });
    assert_still_serving(&mut server);
}

/// The start of a TLS 1.2 ClientHello record: header, then a third of the body.
fn half_a_client_hello() -> Vec<u8> {
    let mut bytes = vec![
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    bytes.extend_from_slice(&[0x42; 60]);
    bytes
}

#[test]
fn a_handshake_cut_half_way_is_closed() {
    let fx = Fixture::new();
    let mut server = fx.server(&["--demo", "--timeout", "2"]);

    // The peer closes half way.
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.write_all(&half_a_client_hello()).unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut tcp, PATIENCE));

    // The peer stops half way and waits: closed when the exchange's time is up.
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.write_all(&half_a_client_hello()).unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut tcp, PATIENCE));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    server.stderr.wait_for("the timeout", |t| {
        t.contains("TLS handshake failed: timed out")
    });
    assert_still_serving(&mut server);
}

#[test]
fn a_trickling_client_gets_the_handshake_timeout_for_the_whole_handshake() {
    let fx = Fixture::new();
    let mut server = fx.server(&["--demo", "--handshake-timeout", "2"]);
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    let started = Instant::now();
    // One byte every half second: each read is quick, the whole is too slow.
    for byte in half_a_client_hello() {
        if tcp.write_all(&[byte]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(500));
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    assert!(closed_by_server(&mut tcp, PATIENCE));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not cut at 2 s"
    );
    assert_still_serving(&mut server);
}

#[test]
fn an_empty_request_is_closed() {
    let fx = Fixture::new();
    let mut server = fx.server(&["--demo"]);
    let mut ssl = tls_connect(&server.addr());
    ssl.shutdown().unwrap();
    assert_eq!(read_to_close(&mut ssl), b"");
    server
        .stdout
        .wait_for("the empty message", |t| t.contains("Client msg: \"\"\n"));
    assert_still_serving(&mut server);
}

#[test]
fn a_one_mebibyte_request_is_refused_and_closed() {
    let fx = Fixture::new();
    let mut server = fx.server(&["--demo"]);
    let mut ssl = tls_connect(&server.addr());
    // A legacy request (first byte '<') of 1 MiB: the server reads 1024 bytes, answers and
    // closes; the rest of our write may fail.
    let mut huge = b"<Body>".to_vec();
    huge.resize(1 << 20, b'A');
    let _ = ssl.write_all(&huge);
    let reply = read_to_close(&mut ssl);
    assert!(
        reply.is_empty() || reply == b"Invalid Message",
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let stdout = server
        .stdout
        .wait_for("Client msg", |t| t.contains("Client msg"));
    let shown = stdout
        .lines()
        .find(|l| l.starts_with("Client msg"))
        .unwrap();
    assert!(shown.len() <= 1024 + 14, "showed {} bytes", shown.len());
    assert_still_serving(&mut server);
}

#[test]
fn the_password_appears_in_no_output() {
    const SECRET: &str = "Zebra-Quartz-91";
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "-vv"]);
    let port = server.port_arg();
    let input = format!("aticle\n{SECRET}\n");
    let out = fx.client(&["127.0.0.1", &port], input.as_bytes());
    assert!(!contains(&out.stdout, SECRET.as_bytes()));
    assert!(!contains(&out.stderr, SECRET.as_bytes()));
    s_client(&server.addr(), &["-tls1_2"], &request("aticle", SECRET));
    // A user name that holds the tag does not let the password out.
    s_client(
        &server.addr(),
        &["-tls1_2"],
        &request("x<Password>y", SECRET),
    );
    // Not of the original's form: still masked.
    s_client(
        &server.addr(),
        &["-tls1_2"],
        format!("<Password>{SECRET} and more").as_bytes(),
    );
    let stdout = server
        .stdout
        .wait_for("four requests", |t| t.matches("Client msg").count() == 4);
    assert_eq!(stdout.matches("<Password>***").count(), 4, "{stdout}");
    let everything = server.all_output();
    assert!(
        !contains(&everything, SECRET.as_bytes()),
        "{}",
        String::from_utf8_lossy(&everything)
    );
}

#[test]
fn the_password_is_masked_whatever_the_letter_case_of_its_tags() {
    const SECRET: &str = "Zebra-Quartz-92";
    let fx = Fixture::new();
    let server = fx.in_process(&["--demo"]);
    for request in [
        format!("<Body><UserName>aticle<UserName><password>{SECRET}<password><\\Body>"),
        format!("<PASSWORD>{SECRET}</PASSWORD>"),
        format!("<pAsSwOrD x=\"1\">{SECRET}"),
    ] {
        assert_eq!(
            exchange(&server.addr(), request.as_bytes()),
            b"Invalid Message"
        );
    }
    let console = server
        .console
        .wait_for("three requests", |t| t.matches("Client msg").count() == 3);
    assert!(!console.contains(SECRET), "{console}");
    assert_eq!(console.matches("***").count(), 3, "{console}");
}

#[test]
fn connections_beyond_max_clients_are_closed_at_once() {
    let fx = Fixture::new();
    let mut server = fx.server(&["--demo", "--max-clients", "1", "--timeout", "300"]);
    // A session past its first request holds the one place: nothing can be closed for room.
    let mut holder = tls_connect(&server.addr());
    assert!(call(&mut holder, "<hello/>").contains("code=\"1000\""));
    let mut extra = TcpStream::connect(server.addr()).unwrap();
    assert!(closed_by_server(&mut extra, Duration::from_secs(10)));
    server.stderr.wait_for("the refusal", |t| {
        t.contains("refused") && t.contains("--max-clients")
    });
    drop(holder);
    // Its thread ends when it sees the close; then the place is free again.
    let started = Instant::now();
    loop {
        let mut ssl_attempt = TcpStream::connect(server.addr()).unwrap();
        ssl_attempt
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut probe = [0u8; 1];
        let refused = matches!(ssl_attempt.read(&mut probe), Ok(0));
        if !refused {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the place never came free");
        thread::sleep(Duration::from_millis(100));
    }
    assert_still_serving(&mut server);
}

/// A console whose every write waits until it is opened: a stdout that nobody reads.
#[derive(Clone, Default)]
struct StalledConsole(Arc<(Mutex<bool>, Condvar)>);

impl StalledConsole {
    fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

impl Write for StalledConsole {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (open, opened) = &*self.0;
        drop(
            opened
                .wait_while(open.lock().unwrap(), |open| !*open)
                .unwrap(),
        );
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stalled_console_never_stalls_accept() {
    let fx = Fixture::new();
    let stalled = StalledConsole::default();
    let server = fx.in_process_writing(&["--max-per-address", "1"], stalled.clone());
    // The first connection is admitted; its thread waits to write its `Connection:` line.
    let first = TcpStream::connect(server.addr()).unwrap();
    // The accept loop still takes the next one, and refuses it: the address's one place is
    // taken.
    let mut second = TcpStream::connect(server.addr()).unwrap();
    let refused = closed_by_server(&mut second, Duration::from_secs(10));
    stalled.open();
    assert!(refused, "the accept loop waited for the console");
    drop(first);
}

#[test]
fn many_clients_at_once_are_all_served() {
    let fx = Fixture::new();
    // Eight wrong passwords at once must not throttle the right ones: this is about serving.
    let server = fx.server(&["--demo", "--max-login-failures", "1000"]);
    let addr = server.addr();
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                let password = if i % 2 == 0 { "123" } else { "wrong" };
                exchange(&addr, &request("aticle", password))
            })
        })
        .collect();
    for (i, worker) in workers.into_iter().enumerate() {
        let expected: &[u8] = if i % 2 == 0 {
            VALID_REPLY
        } else {
            b"Invalid Message"
        };
        assert_eq!(worker.join().unwrap(), expected);
    }
}

#[test]
fn sigterm_lets_the_exchange_in_flight_finish_then_exits_0() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--timeout", "20"]);
    let addr = server.addr();
    let mut in_flight = tls_connect(&addr);
    server
        .stdout
        .wait_for("the handshake", |t| t.contains("No certificates."));
    signal(&server.child, "TERM");
    server
        .stderr
        .wait_for("the stop", |t| t.contains("stopping"));
    // No new connections once stopping.
    let started = Instant::now();
    while TcpStream::connect(&addr).is_ok() {
        assert!(started.elapsed() < PATIENCE, "still accepting");
        thread::sleep(Duration::from_millis(50));
    }
    in_flight.write_all(&request("aticle", "123")).unwrap();
    assert_eq!(read_to_close(&mut in_flight), VALID_REPLY);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0));
    // The database was closed cleanly: its write-ahead log checkpointed and removed.
    assert!(fx.path().join("users.db").exists());
    assert!(
        !fx.path().join("users.db-wal").exists(),
        "the WAL was left behind"
    );
}

#[test]
fn sigterm_waits_for_a_silent_client_no_longer_than_the_timeout() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--timeout", "2"]);
    let _silent = TcpStream::connect(server.addr()).unwrap();
    server
        .stdout
        .wait_for("the connection", |t| t.contains("Connection: "));
    let started = Instant::now();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(15));
}
