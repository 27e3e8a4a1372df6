//! `--proxy-protocol-from`: the server behind a load balancer. The tests play the balancer:
//! from 127.0.0.1 they send a PROXY header (built with the `ppp` crate, or the exact v1 line)
//! on a plain TCP connection and then do TLS over the same connection. The address in the
//! header is then the client's for the console, the logs, the per-address cap and login
//! throttling; from other addresses, or without the option, a header is never believed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::SslStream;
use ppp::{v1, v2};

use crate::common::*;

/// The server, trusting PROXY headers from 127.0.0.1 only, with the demo account.
fn behind_proxy(fx: &Fixture, extra: &[&str]) -> Server {
    let mut args = vec!["--demo", "--proxy-protocol-from", "127.0.0.1/32"];
    args.extend(extra);
    fx.server(&args)
}

/// A v2 PROXY header for a connection from `client` to the server.
fn v2_header(client: &str, server: &Server) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let to: SocketAddr = match client {
        SocketAddr::V4(_) => server.addr().parse().unwrap(),
        SocketAddr::V6(_) => format!("[2001:db8::1]:{}", server.port).parse().unwrap(),
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, to),
    )
    .build()
    .unwrap()
}

/// A v2 LOCAL header, as HAProxy's health checks send (`check-send-proxy`): no addresses.
fn v2_local() -> Vec<u8> {
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Local,
        v2::Protocol::Unspecified,
        v2::Addresses::Unspecified,
    )
    .build()
    .unwrap()
}

/// A v1 header for a connection from `client` (IPv4) to the server.
fn v1_header(client: &str, server: &Server) -> Vec<u8> {
    let client: std::net::SocketAddrV4 = client.parse().unwrap();
    let to: std::net::SocketAddrV4 = server.addr().parse().unwrap();
    v1::Addresses::new_tcp4(*client.ip(), *to.ip(), client.port(), to.port())
        .to_string()
        .into_bytes()
}

/// A connection from 127.0.0.1 that has sent `header`.
fn send_header(server: &Server, header: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.write_all(header).unwrap();
    tcp
}

/// TLS through the "balancer": `header`, then the handshake on the same connection.
fn through_proxy(server: &Server, header: &[u8]) -> SslStream<TcpStream> {
    tls_over(send_header(server, header))
}

/// A legacy exchange through the "balancer"; gives the reply.
fn legacy_through_proxy(server: &Server, header: &[u8]) -> Vec<u8> {
    let mut ssl = through_proxy(server, header);
    ssl.write_all(&request("aticle", "123")).unwrap();
    read_to_close(&mut ssl)
}

fn login(user: &str, password: &str) -> String {
    format!("<login><username>{user}</username><password>{password}</password></login>")
}

/// A connection from 127.0.0.1 that has sent `junk`, which the server may refuse before it
/// is all sent.
fn send_junk(server: &Server, junk: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    let _ = tcp.write_all(junk);
    tcp
}

/// Waits until the server closes `tcp`; gives how long after `since` it did.
fn closed_after(tcp: &mut TcpStream, since: Instant) -> Duration {
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn a_v2_header_gives_the_client_address() {
    let fx = Fixture::new();
    let server = behind_proxy(&fx, &[]);
    let reply = legacy_through_proxy(&server, &v2_header("192.0.2.10:5555", &server));
    assert_eq!(reply, VALID_REPLY);
    let reply = legacy_through_proxy(&server, &v2_header("[2001:db8::7]:6000", &server));
    assert_eq!(reply, VALID_REPLY);
    let console = server.stdout.wait_for("both exchanges", |t| {
        t.contains("Connection: 192.0.2.10:5555\n")
            && t.contains("Connection: [2001:db8::7]:6000\n")
            && t.matches("Client msg: ").count() == 2
    });
    assert!(!console.contains("Connection: 127.0.0.1"), "{console}");
    assert_eq!(console.matches("Client msg: ").count(), 2, "{console}");
    // The logs name the client too.
    server.stderr.wait_for("the login's log line", |t| {
        t.contains("192.0.2.10:5555: \"aticle\" logged in")
    });
}

#[test]
fn a_v1_header_gives_the_client_address() {
    let fx = Fixture::new();
    let server = behind_proxy(&fx, &[]);
    let header = v1_header("192.0.2.11:5556", &server);
    assert_eq!(
        header,
        format!("PROXY TCP4 192.0.2.11 127.0.0.1 5556 {}\r\n", server.port).as_bytes()
    );
    assert_eq!(legacy_through_proxy(&server, &header), VALID_REPLY);
    let console = server
        .stdout
        .wait_for("the connection", |t| t.contains("Client msg: "));
    assert!(
        console.starts_with("Connection: 192.0.2.11:5556\n"),
        "{console}"
    );
}

#[test]
fn a_local_header_is_served_as_the_proxy_itself() {
    let fx = Fixture::new();
    let server = behind_proxy(&fx, &[]);
    let local = v2_local();
    assert_eq!(local, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    let tcp = send_header(&server, &local);
    let port = tcp.local_addr().unwrap().port();
    let mut ssl = tls_over(tcp);
    ssl.write_all(&request("aticle", "123")).unwrap();
    assert_eq!(read_to_close(&mut ssl), VALID_REPLY);
    // v1's health check says UNKNOWN: the same.
    let tcp = send_header(&server, b"PROXY UNKNOWN\r\n");
    let v1_port = tcp.local_addr().unwrap().port();
    let mut ssl = tls_over(tcp);
    ssl.write_all(&request("aticle", "123")).unwrap();
    assert_eq!(read_to_close(&mut ssl), VALID_REPLY);
    server.stdout.wait_for("the proxy's own address", |t| {
        t.contains(&format!("Connection: 127.0.0.1:{port}\n"))
            && t.contains(&format!("Connection: 127.0.0.1:{v1_port}\n"))
    });
    // A health check closes after its header: neither a console line nor a failure to log.
    let check = send_header(&server, &local);
    let check_port = check.local_addr().unwrap().port();
    drop(check);
    thread::sleep(Duration::from_millis(1500)); // past a summary's period
    assert!(!server.stdout.text().contains(&format!(":{check_port}\n")));
    let log = server.stderr.text();
    assert!(!log.contains("TLS handshake failed"), "{log}");
}

#[test]
fn a_trusted_proxy_without_a_valid_header_is_closed_and_summarised() {
    let fx = Fixture::new();
    let server = behind_proxy(&fx, &[]);
    // TLS at once, as a client that bypassed the balancer would.
    let refused = try_tls_over(TcpStream::connect(server.addr()).unwrap());
    assert!(refused.is_err(), "served without a header");
    server.stderr.wait_for("the summary", |t| {
        t.contains(
            "no valid PROXY header: no PROXY protocol signature (1 connection from 1 address)",
        )
    });
    // A v1 line that does not end within 107 bytes, closed as soon as it is seen.
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(200, b'1');
    let mut tcp = send_junk(&server, &long);
    assert!(closed_after(&mut tcp, Instant::now()) < PATIENCE);
    server.stderr.wait_for("the summary", |t| {
        t.contains("no valid PROXY header: a v1 header without CRLF in 107 bytes")
    });
    // A v2 header with more TLVs than accepted: closed before they are read.
    let client: SocketAddr = "192.0.2.12:5557".parse().unwrap();
    let to: SocketAddr = server.addr().parse().unwrap();
    let bloated = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, to),
    )
    .write_tlv(v2::Type::NoOp, &[0u8; 600])
    .unwrap()
    .build()
    .unwrap();
    assert!(try_tls_over(send_junk(&server, &bloated)).is_err());
    // A v1 header that names no valid address.
    let bad = b"PROXY TCP4 192.0.2.300 127.0.0.1 5558 8081\r\n";
    assert!(try_tls_over(send_junk(&server, bad)).is_err());
    let log = server.stderr.wait_for("the summaries", |t| {
        t.contains("no valid PROXY header: more than 512 bytes of TLVs in a v2 header")
            && t.contains("no valid PROXY header: v1: Header contains invalid IP address")
    });
    let lines = log.lines().filter(|l| l.contains("PROXY header")).count();
    assert_eq!(lines, 4, "one summary line each: {log}");
    assert!(!server.stdout.text().contains("Connection:"));
}

#[test]
fn the_per_address_cap_applies_to_the_addresses_in_the_headers() {
    let fx = Fixture::new();
    let server = behind_proxy(&fx, &["--max-per-address", "2"]);
    // Two connections of one client, in their handshake's wait for a request.
    let held: Vec<_> = [5001, 5002]
        .iter()
        .map(|port| through_proxy(&server, &v2_header(&format!("192.0.2.20:{port}"), &server)))
        .collect();
    // A third from the same client is refused...
    let third = try_tls_over(send_junk(&server, &v2_header("192.0.2.20:5003", &server)));
    assert!(
        third.is_err(),
        "a third connection from 192.0.2.20 was served"
    );
    // ...while another client, behind the same balancer address, is served.
    let reply = legacy_through_proxy(&server, &v2_header("192.0.2.21:5004", &server));
    assert_eq!(reply, VALID_REPLY);
    server.stderr.wait_for("the refusal's summary", |t| {
        t.contains(
            "refused 1 connection from 1 address: each address may hold 2 connections at once \
             (--max-per-address)",
        )
    });
    let console = server.stdout.text();
    assert!(
        console.contains("Connection: 192.0.2.20:5002\n"),
        "{console}"
    );
    assert!(!console.contains("192.0.2.20:5003"), "{console}");
    drop(held);
}

#[test]
fn failed_logins_are_throttled_by_the_address_in_the_header() {
    let fx = Fixture::new();
    // Three failures close an address (the account's own limit, 5, is not reached).
    let server = behind_proxy(&fx, &["--max-address-failures", "3"]);
    let mut guesser = through_proxy(&server, &v2_header("192.0.2.30:6001", &server));
    for _ in 0..3 {
        let reply = call(&mut guesser, &login("aticle", "guess"));
        assert!(reply.contains("code=\"2200\""), "{reply}");
    }
    // Refused for a second from the guesser's address, even with the right password...
    let reply = call(&mut guesser, &login("aticle", "123"));
    assert!(reply.contains("too many failed logins"), "{reply}");
    // ...but not from another client behind the same balancer.
    let mut owner = through_proxy(&server, &v2_header("192.0.2.31:6002", &server));
    let reply = call(&mut owner, &login("aticle", "123"));
    assert!(reply.contains("code=\"1000\""), "{reply}");
}

#[test]
fn a_header_from_an_untrusted_address_is_not_believed() {
    let fx = Fixture::new();
    let server = behind_proxy(&fx, &[]);
    // From 127.0.0.2: the header is junk before the TLS handshake, which fails.
    let mut tcp = connect_from("127.0.0.2", &server.addr()).unwrap();
    let port = tcp.local_addr().unwrap().port();
    tcp.write_all(&v2_header("192.0.2.40:7001", &server))
        .unwrap();
    assert!(try_tls_over(tcp).is_err(), "served after a PROXY header");
    // Without a header, the client at 127.0.0.2 is served as itself.
    let mut ssl = tls_connect_from("127.0.0.2", &server.addr());
    let plain_port = ssl.get_ref().local_addr().unwrap().port();
    ssl.write_all(&request("aticle", "123")).unwrap();
    assert_eq!(read_to_close(&mut ssl), VALID_REPLY);
    let console = server.stdout.wait_for("both connections", |t| {
        t.contains(&format!("Connection: 127.0.0.2:{port}\n"))
            && t.contains(&format!("Connection: 127.0.0.2:{plain_port}\n"))
    });
    assert!(!console.contains("192.0.2.40"), "{console}");

    // Without the option, not even from 127.0.0.1.
    let plain = fx.server(&["--demo"]);
    let tcp = send_header(&plain, &v1_header("192.0.2.41:7002", &plain));
    let port = tcp.local_addr().unwrap().port();
    assert!(try_tls_over(tcp).is_err(), "served after a PROXY header");
    let console = plain.stdout.wait_for("the connection", |t| {
        t.contains(&format!("Connection: 127.0.0.1:{port}\n"))
    });
    assert!(!console.contains("192.0.2.41"), "{console}");
    assert_eq!(
        exchange(&plain.addr(), &request("aticle", "123")),
        VALID_REPLY
    );
}

#[test]
fn an_unfinished_header_is_closed_within_the_handshake_timeout() {
    let fx = Fixture::new();
    let server = behind_proxy(&fx, &["--handshake-timeout", "1"]);
    let started = Instant::now();
    // Half a v2 header, and then nothing.
    let header = v2_header("192.0.2.50:8001", &server);
    let mut half = send_header(&server, &header[..20]);
    // A v1 header trickled a byte every 200 ms: 8 s to finish, were it let.
    let mut trickled = TcpStream::connect(server.addr()).unwrap();
    let line = v1_header("192.0.2.51:8002", &server);
    let mut writer = trickled.try_clone().unwrap();
    let trickler = thread::spawn(move || {
        for byte in &line {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let half_took = closed_after(&mut half, started);
    let trickled_took = closed_after(&mut trickled, started);
    trickler.join().unwrap();
    for took in [half_took, trickled_took] {
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );
    }
    server.stderr.wait_for("the summary", |t| {
        t.contains("no valid PROXY header: timed out")
    });
    assert!(!server.stdout.text().contains("Connection:"));
}

#[test]
fn a_range_with_host_bits_is_a_usage_error_naming_its_network() {
    let empty = tempfile::tempdir().unwrap();
    for (given, network) in [("10.0.0.5/8", "10.0.0.0/8"), ("::1/64", "::/64")] {
        let out = server_in(
            empty.path(),
            &["--proxy-protocol-from", given, "--bind", "127.0.0.1", "0"],
        );
        assert_eq!(out.status.code(), Some(2), "{given}: {out:?}");
        let (_, err) = texts(&out);
        assert!(
            err.contains(&format!(
                "--proxy-protocol-from: {given:?} has host bits set: did you mean the network \
                 {network}, or the one address"
            )),
            "{err}"
        );
    }
}

#[test]
fn trusting_every_address_is_warned_about() {
    let fx = Fixture::new();
    let server = fx.server(&[
        "--proxy-protocol-from",
        "0.0.0.0/0",
        "--proxy-protocol-from",
        "::/0",
    ]);
    let log = server.stderr.wait_for("the warnings", |log| {
        log.contains("listening on") && log.matches("trusts every client").count() == 2
    });
    for net in ["0.0.0.0/0", "::/0"] {
        assert!(
            log.contains(&format!(
                "--proxy-protocol-from {net} trusts every client: any of them can forge its \
                 address"
            )),
            "{log}"
        );
    }
}
