//! `--metrics`: the figures in Prometheus's text format, `/healthz` following the store, and
//! the listener's bounds under clients that hold sockets, never end a request, or pipeline
//! requests without reading the answers.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::pg::{Cluster, cluster};
use crate::common::pg_wire::WireCounter;
use crate::common::*;

/// Where `server`'s metrics listener listens: it was given port 0, and its log line names the
/// port the system chose.
fn metrics_addr(server: &Server) -> String {
    const LINE: &str = "metrics on http://";
    let text = server
        .stderr
        .wait_for("the metrics address", |t| t.contains(LINE));
    let (_, rest) = text.split_once(LINE).unwrap();
    rest.split_once("/metrics").unwrap().0.to_string()
}

/// `GET path` over HTTP/1.0: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    ask(TcpStream::connect(addr).unwrap(), &get_request(path))
}

/// The request [`get`] sends.
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")
}

/// Sends `request` over `tcp`, a new connection to the metrics port, and reads the answer to
/// the end: the status code and the body.
fn ask(tcp: TcpStream, request: &str) -> (u16, String) {
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let answer = ask_raw(tcp, request);
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

/// As [`ask`], the whole answer as it came (empty if the server closed without one, or
/// none came within `tcp`'s read timeout).
fn ask_raw(mut tcp: TcpStream, request: &str) -> String {
    // A server that closes at once may refuse the write: the answer (none) says so.
    let _ = tcp.write_all(request.as_bytes());
    String::from_utf8_lossy(&read_to_close(&mut tcp)).into_owned()
}

#[test]
fn the_figures_count_what_the_server_did() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
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
    let post = "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(ask(TcpStream::connect(&metrics).unwrap(), post).0, 405);
    assert!(
        !server.stderr.text().contains(EXPOSED),
        "on loopback: no warning"
    );
}

/// The start of the warning for a metrics port on an address other than loopback.
const EXPOSED: &str = "--metrics is not on a loopback address";

#[test]
fn a_metrics_port_beyond_loopback_is_warned_of() {
    let fx = Fixture::new();
    let server = fx.server(&["--metrics", "0.0.0.0:0"]);
    server
        .stderr
        .wait_for("the warning", |t| t.contains(EXPOSED));
    let port = metrics_addr(&server)
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(get(&format!("127.0.0.1:{port}"), "/healthz").0, 200);
}

/// A figure of /proc/PID/status (`VmRSS`, `Threads`), as a number (kB for sizes).
fn status_figure(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Until `stop`, a client at `source` connects to `metrics`, sends `opening` and then
/// `again` over and over, never reading; when the server closes the connection (or a write
/// waits a second), it connects again after a short pause. Gives how many connections it
/// made.
fn keep_attacking(
    stop: &Arc<AtomicBool>,
    source: &'static str,
    metrics: &str,
    opening: &'static [u8],
    again: Vec<u8>,
) -> thread::JoinHandle<usize> {
    let (stop, metrics) = (Arc::clone(stop), metrics.to_string());
    thread::spawn(move || {
        let mut connections = 0;
        let attack = |connections: &mut usize| -> std::io::Result<()> {
            let mut tcp = connect_from(source, &metrics)?;
            *connections += 1;
            tcp.set_write_timeout(Some(Duration::from_secs(1)))?;
            tcp.write_all(opening)?;
            while !stop.load(Ordering::SeqCst) {
                tcp.write_all(&again)?;
            }
            Ok(())
        };
        while !stop.load(Ordering::SeqCst) {
            let _ = attack(&mut connections);
            thread::sleep(Duration::from_millis(2));
        }
        connections
    })
}

#[test]
fn healthz_answers_while_idle_sockets_an_endless_header_and_a_pipeliner_press_on() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let pid = server.child.id();
    let login = request("aticle", "123");
    let timed_exchange = || {
        let started = Instant::now();
        assert_eq!(exchange(&server.addr(), &login), VALID_REPLY);
        started.elapsed()
    };
    // The balancer's probe, from an address of its own: how long it took, and whether it
    // got `200 ok`.
    let probe = || {
        let started = Instant::now();
        let tcp = connect_from("127.0.0.2", &metrics).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let answer = ask_raw(tcp, &get_request("/healthz"));
        let ok = answer.split_whitespace().nth(1) == Some("200") && answer.ends_with("\nok\n");
        (started.elapsed(), ok)
    };
    assert!(probe().1, "/healthz before the attack");
    let baseline = timed_exchange();
    let (rss_before, threads_before) = (status_figure(pid, "VmRSS"), status_figure(pid, "Threads"));

    let stop = Arc::new(AtomicBool::new(false));
    // 2,000 sockets that say nothing, from eight addresses, held to the end.
    let opened = Arc::new(AtomicUsize::new(0));
    let idle = {
        let (stop, metrics, opened) = (Arc::clone(&stop), metrics.clone(), Arc::clone(&opened));
        thread::spawn(move || {
            let mut held = Vec::new();
            for n in 0..2000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(tcp) = connect_from(&format!("127.0.1.{}", n % 8 + 1), &metrics) {
                    held.push(tcp);
                }
                opened.fetch_add(1, Ordering::SeqCst);
            }
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            held.len()
        })
    };
    // A request head that never ends.
    let opening = b"GET /metrics HTTP/1.1\r\nX-Endless: ";
    let endless = keep_attacking(&stop, "127.0.0.3", &metrics, opening, vec![b'a'; 1024]);
    // `GET /metrics` pipelined as fast as it goes, no answer ever read.
    let pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(256);
    let pipeliner = keep_attacking(&stop, "127.0.0.4", &metrics, b"", pipelined);

    // The probes come once the sockets are held (while they are being opened, each newcomer
    // makes room by closing the connection that waited longest without a whole request: on a
    // machine slow enough, that may be a probe's, which a balancer would ask again).
    let started = Instant::now();
    while opened.load(Ordering::SeqCst) < 2000 && started.elapsed() < PATIENCE {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
    let mut probes = Vec::new();
    let mut rss_most = rss_before;
    let mut threads_most = threads_before;
    // A few places and their threads, each answer a few KiB: nothing grows with the attack.
    // 100 MB leaves room for the allocator's arenas of short-lived threads. (tiny_http, here
    // before, grew by gigabytes a second: the attack stops at the bound.)
    let rss_bound = rss_before + 100 * 1024;
    for _ in 0..8 {
        probes.push(probe());
        rss_most = rss_most.max(status_figure(pid, "VmRSS"));
        threads_most = threads_most.max(status_figure(pid, "Threads"));
        if rss_most > rss_bound {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let under_attack = timed_exchange();
    rss_most = rss_most.max(status_figure(pid, "VmRSS"));
    stop.store(true, Ordering::SeqCst);
    let held = idle.join().unwrap();
    let (endless, pipelined) = (endless.join().unwrap(), pipeliner.join().unwrap());
    println!(
        "metrics port under attack ({held} idle sockets opened, {endless} endless heads, \
         {pipelined} pipelining connections): /healthz in {probes:?}; resident memory \
         {rss_before} kB before, at most {rss_most} kB; threads {threads_before} before, at \
         most {threads_most}; a TLS exchange took {baseline:?} before, {under_attack:?} during"
    );
    assert_eq!(held, 2000, "every idle socket connected");
    for (took, ok) in &probes {
        assert!(
            *ok && *took < Duration::from_secs(1),
            "/healthz: {probes:?}"
        );
    }
    assert!(
        rss_most <= rss_bound,
        "resident memory grew from {rss_before} kB to {rss_most} kB"
    );
    assert!(
        threads_most < threads_before + 64,
        "threads grew from {threads_before} to {threads_most}"
    );
    assert!(
        under_attack < Duration::from_secs(3),
        "a TLS exchange took {under_attack:?} (before the attack: {baseline:?})"
    );
}

#[test]
fn healthz_follows_the_store() {
    let fx = Fixture::new();
    let own = Cluster::new();
    let url = own.new_database();
    let server = fx.server(&["--db", &url, "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    assert_eq!(get(&metrics, "/healthz").0, 200);
    own.stop_server();
    let started = Instant::now();
    let (status, why) = get(&metrics, "/healthz");
    assert_eq!(status, 503, "{why}");
    // Whoever asks learns that the store fails, not how: the driver's text goes to the log.
    assert!(
        [
            "the account store fails\n",
            "the account store does not answer\n"
        ]
        .contains(&why.as_str()),
        "{why:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let log = server
        .stderr
        .wait_for("the store's error in the log", |t| t.contains("/healthz:"));
    assert!(log.contains("the account store"), "{log}");
    own.start_server();
    // A ping that began while the store was down may end after it is back: a few tries.
    let started = Instant::now();
    while get(&metrics, "/healthz").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "still 503");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A store that hangs (connections open, nothing answered) makes `/healthz` say 503 within a
/// second, and 200 again once it answers.
#[test]
fn healthz_says_503_within_a_second_when_the_store_hangs() {
    let fx = Fixture::new();
    let url = cluster().new_database();
    let proxy = WireCounter::start(cluster().port);
    let url = url.replace(
        &format!("127.0.0.1:{}", cluster().port),
        &format!("127.0.0.1:{}", proxy.port()),
    );
    let server = fx.server(&["--db", &url, "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    assert_eq!(get(&metrics, "/healthz").0, 200);
    proxy.freeze(true);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, why) = get(&metrics, "/healthz");
        let took = started.elapsed();
        assert_eq!(status, 503, "{why}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    proxy.freeze(false);
    let started = Instant::now();
    while get(&metrics, "/healthz").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "still 503");
        thread::sleep(Duration::from_millis(100));
    }
}
