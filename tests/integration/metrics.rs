//! `--metrics`: the figures in Prometheus's text format, and `/healthz` following the store.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::pg::Cluster;
use crate::common::*;

/// A free port on 127.0.0.1, as `ADDR:PORT`.
fn free_addr() -> String {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

/// `GET path` over HTTP/1.0: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn the_figures_count_what_the_server_did() {
    let fx = Fixture::new();
    let metrics = free_addr();
    let server = fx.server(&["--demo", "--metrics", &metrics]);
    assert_eq!(
        exchange(&server.addr(), &request("aticle", "123")),
        VALID_REPLY
    );
    assert_eq!(
        exchange(&server.addr(), &request("aticle", "nope")),
        b"Invalid Message"
    );
    let mut ssl = tls_connect(&server.addr());
    assert!(call(&mut ssl, "<hello/>").contains("code=\"1000\""));
    assert!(call(&mut ssl, "<view/>").contains("code=\"2002\""));
    drop(ssl);

    let (status, text) = get(&metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    for line in [
        "ssl_server_handshakes_total{result=\"ok\"} 3",
        "ssl_server_legacy_exchanges_total{reply=\"valid\"} 1",
        "ssl_server_legacy_exchanges_total{reply=\"invalid\"} 1",
        "ssl_server_commands_total{command=\"hello\",code=\"1000\"} 1",
        "ssl_server_commands_total{command=\"view\",code=\"2002\"} 1",
        "ssl_server_connections_accepted_total 3",
        "ssl_server_hash_queue 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(get(&metrics, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&metrics, "/nothing").0, 404);
}

#[test]
fn healthz_follows_the_store() {
    let fx = Fixture::new();
    let own = Cluster::new();
    let url = own.new_database();
    let metrics = free_addr();
    let _server = fx.server(&["--db", &url, "--metrics", &metrics]);
    assert_eq!(get(&metrics, "/healthz").0, 200);
    own.stop_server();
    let started = Instant::now();
    let (status, why) = get(&metrics, "/healthz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("account store"), "{why}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    own.start_server();
    assert_eq!(get(&metrics, "/healthz").0, 200);
}
