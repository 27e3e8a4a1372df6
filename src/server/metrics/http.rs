//! The HTTP listener of `--metrics`: `GET` only, one request per connection, everything
//! bounded, so that a load balancer's `/healthz` probe is answered whatever other clients of
//! the port do.
//!
//! - At most [`PLACES`] connections at once, [`PLACES_PER_ADDRESS`] of them from one address
//!   (an IPv6 /64 is one): a client at one address can never take every place. When every
//!   place is taken, the connection that has waited longest without sending a whole request
//!   head is closed to make room (the [`Connections`] of the service port); a new connection
//!   is closed at once only when every place is answering a request, or its address holds
//!   its share. So idle sockets and heads that never end cannot keep a probe out.
//! - One short-lived thread per admitted connection, so a slow client holds up no one else;
//!   at most [`MAX_THREADS`] alive, those of connections closed to make room that have not
//!   yet ended among them (past it, the loop accepts nothing until one ends).
//! - Each read and write within [`IO_TIMEOUT`], the whole connection within
//!   [`CONNECTION_TIME`] ([`DeadlineStream`]).
//! - A request head of at most [`HEAD_LIMIT`] bytes and [`MAX_HEADERS`] header lines, parsed
//!   by `httparse` into a fixed array (431 beyond either, 400 for what is not HTTP/1.x).
//! - One answer per connection, with `Connection: close`: a client that pipelines requests
//!   gets the first answered and the rest never read, so no work queues up behind it.
//! - A failed `accept` is logged and the loop goes on after a pause; a panic in the loop is
//!   logged as an error and the loop starts again: the listener never stops quietly.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use super::super::connections::{Admission, ConnectionLimits, ConnectionSlot, Connections};
use super::super::listener::{Shutdown, accept_next, open_listener};
use crate::address::ClientAddress;
use crate::deadline::DeadlineStream;
use crate::error::{Error, Result};

/// Connections served at once. A balancer's probe and a Prometheus scrape or two need a few;
/// each place is a thread and two descriptors at most.
const PLACES: usize = 8;

/// Of the [`PLACES`], how many one address may hold: half, so that a client at one address
/// leaves the other half to everyone else.
const PLACES_PER_ADDRESS: usize = PLACES / 2;

/// The longest request head read, request line and headers: a scraper's or a balancer's
/// is a few hundred bytes.
const HEAD_LIMIT: usize = 8 * 1024;

/// The most header lines a request head may have.
const MAX_HEADERS: usize = 32;

/// How long one read or one write may wait.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection may last, from its accept to the last byte of its answer: the head,
/// the wait for the store (a second at most) and the answer.
const CONNECTION_TIME: Duration = Duration::from_secs(10);

/// Connections' threads alive at once: a place's, and those of connections closed to make
/// room, which end as soon as they run again.
const MAX_THREADS: usize = 4 * PLACES;

/// Stack of a connection's thread: a head, its parse and an answer fit many times over;
/// only the pages a thread touches become resident.
const THREAD_STACK: usize = 256 * 1024;

/// How long the accept loop waits before it starts again after a panic.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// What answers a `GET` of a path.
pub(in crate::server) type Handler = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// An HTTP status this listener answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::server) enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeaderFieldsTooLarge,
    ServiceUnavailable,
}

impl Status {
    /// The status line's code and reason phrase (RFC 9110, RFC 6585 for 431).
    fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::HeaderFieldsTooLarge => (431, "Request Header Fields Too Large"),
            Status::ServiceUnavailable => (503, "Service Unavailable"),
        }
    }
}

/// An answer: its status, the type of its body, and the body.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::server) struct Answer {
    pub(in crate::server) status: Status,
    pub(in crate::server) content_type: &'static str,
    pub(in crate::server) body: String,
}

impl Answer {
    /// An answer of plain text.
    pub(in crate::server) fn text(status: Status, body: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The answer as sent: status line, headers and body.
    fn to_bytes(&self) -> Vec<u8> {
        let (code, reason) = self.status.line();
        // Only GET is served (RFC 9110 15.5.6: a 405 says which methods are).
        let allow = if self.status == Status::MethodNotAllowed {
            "Allow: GET\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Connection: close\r\n\r\n{}",
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// What the bytes a connection has sent so far make of its request head.
#[derive(Debug, PartialEq, Eq)]
enum Head<'a> {
    /// A whole head, of a `GET` of this target.
    Get(&'a str),
    /// Not the whole head yet.
    Partial,
    /// A whole head this listener does not serve, or bytes that cannot begin one: the
    /// answer's status.
    Unserved(Status),
}

/// Reads `bytes`, the start of a connection, as a request head.
fn parse_head(bytes: &[u8]) -> Head<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some("GET"), Some(path)) => Head::Get(path),
            _ => Head::Unserved(Status::MethodNotAllowed),
        },
        Ok(httparse::Status::Partial) if bytes.len() >= HEAD_LIMIT => {
            Head::Unserved(Status::HeaderFieldsTooLarge)
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::Unserved(Status::HeaderFieldsTooLarge),
        Err(_) => Head::Unserved(Status::BadRequest),
    }
}

/// Serves `handler` on `addr` until `shutdown`, from a thread of its own; gives the address
/// it listens on (port 0: a port the system chose). Fails only if the port cannot be had.
pub(in crate::server) fn serve(
    addr: SocketAddr,
    handler: Handler,
    shutdown: &Shutdown,
) -> Result<SocketAddr> {
    let listener = open_listener(Some(addr.ip()), addr.port())
        .map_err(|e| Error::Config(format!("--metrics: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the metrics port's address", e))?;
    shutdown.wake_on_stop(&listener)?;
    let places = Arc::new(Connections::new(ConnectionLimits {
        total: PLACES,
        per_address: PLACES_PER_ADDRESS,
    }));
    let shutdown = shutdown.clone();
    // Outside the loop, so that a loop started again still counts the threads alive.
    let live = Arc::new(LiveThreads::default());
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            keep_running("the metrics listener", || {
                accept_loop(&listener, &places, &live, &handler, &shutdown);
            });
            log::debug!("the metrics listener stopped");
        })
        .map(|_| bound)
        .map_err(|e| Error::io("cannot start the metrics thread", e))
}

/// Runs `body` until it returns. If it panics, logs an error and runs it again after
/// [`RESTART_PAUSE`].
fn keep_running(what: &str, mut body: impl FnMut()) {
    while panic::catch_unwind(AssertUnwindSafe(&mut body)).is_err() {
        log::error!(
            "{what} failed (see the panic above); starting it again in {} s",
            RESTART_PAUSE.as_secs()
        );
        thread::sleep(RESTART_PAUSE);
    }
}

/// How many connections' threads are alive.
#[derive(Default)]
struct LiveThreads {
    count: Mutex<usize>,
    ended: Condvar,
}

impl LiveThreads {
    /// One more thread, once fewer than [`MAX_THREADS`] are alive.
    fn start(self: &Arc<Self>) -> LiveThread {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count >= MAX_THREADS {
            count = self.ended.wait(count).unwrap_or_else(|e| e.into_inner());
        }
        *count += 1;
        LiveThread(Arc::clone(self))
    }
}

/// A connection's thread, counted alive until dropped.
struct LiveThread(Arc<LiveThreads>);

impl Drop for LiveThread {
    fn drop(&mut self) {
        *self.0.count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.ended.notify_one();
    }
}

/// Accepts connections on `listener` into `places`, each answered on a thread of its own
/// (counted in `live`), until `shutdown`.
fn accept_loop(
    listener: &TcpListener,
    places: &Arc<Connections>,
    live: &Arc<LiveThreads>,
    handler: &Handler,
    shutdown: &Shutdown,
) {
    loop {
        let alive = live.start();
        let accepted = accept_next(listener, "metrics port");
        if shutdown.is_requested() {
            return;
        }
        let Some((tcp, peer)) = accepted else {
            continue;
        };
        let peer = ClientAddress::new(peer);
        let slot = match places.admit(&tcp, peer) {
            Admission::Admitted(slot) => slot,
            Admission::AdmittedByEvicting(slot, victim) => {
                log::debug!("metrics: closed a connection from {victim} without a request");
                slot
            }
            Admission::Refused(refusal) => {
                log::debug!("metrics: {peer}: refused ({})", refusal.label());
                continue;
            }
        };
        let handler = Arc::clone(handler);
        let spawned = thread::Builder::new()
            .name("metrics client".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _alive = alive;
                if let Err(e) = answer_one(tcp, &slot, handler.as_ref()) {
                    log::debug!("metrics: {peer}: {e}");
                }
            });
        if let Err(e) = spawned {
            log::error!("metrics: cannot start a thread for a connection: {e}");
        }
    }
}

/// Reads one request head from `tcp` and answers it, within the deadlines; a connection that
/// ends (or is closed to make room) before a whole head is left without an answer.
fn answer_one(
    tcp: TcpStream,
    slot: &ConnectionSlot,
    handler: &(dyn Fn(&str) -> Answer + Send + Sync),
) -> io::Result<()> {
    let mut stream = DeadlineStream::new(tcp, IO_TIMEOUT, CONNECTION_TIME);
    let mut head = [0u8; HEAD_LIMIT];
    let mut filled = 0;
    let answer = loop {
        let n = stream.read(&mut head[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        match parse_head(&head[..filled]) {
            Head::Partial => continue,
            Head::Get(path) => {
                // Answering now: no longer closed to make room, unless it was already.
                if !slot.start() {
                    return Ok(());
                }
                break handler(path);
            }
            Head::Unserved(status) => break Answer::text(status, "GET /metrics or /healthz\n"),
        }
    };
    stream.write_all(&answer.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_whole_get_head_gives_its_target() {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        assert_eq!(parse_head(head), Head::Get("/metrics"));
        // What follows the head (a pipelined request) is not read.
        let pipelined = [&head[..], &head[..]].concat();
        assert_eq!(parse_head(&pipelined), Head::Get("/metrics"));
        for end in [0, 5, head.len() - 1] {
            assert_eq!(parse_head(&head[..end]), Head::Partial, "{end} bytes");
        }
    }

    #[test]
    fn other_methods_and_what_is_not_http_are_refused() {
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Head::Unserved(Status::MethodNotAllowed)
        );
        assert_eq!(
            parse_head(b"\x16\x03\x01\x02\x00\x01"),
            Head::Unserved(Status::BadRequest)
        );
    }

    #[test]
    fn a_head_too_long_or_with_too_many_lines_is_refused() {
        let mut endless = b"GET /metrics HTTP/1.1\r\nX-Long: ".to_vec();
        endless.resize(HEAD_LIMIT - 1, b'a');
        assert_eq!(parse_head(&endless), Head::Partial);
        endless.push(b'a');
        assert_eq!(
            parse_head(&endless),
            Head::Unserved(Status::HeaderFieldsTooLarge)
        );
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            parse_head(many.as_bytes()),
            Head::Unserved(Status::HeaderFieldsTooLarge)
        );
    }

    #[test]
    fn an_answer_closes_the_connection_and_a_405_says_what_is_allowed() {
        let ok = Answer::text(Status::Ok, "ok\n").to_bytes();
        assert_eq!(
            String::from_utf8(ok).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\nok\n"
        );
        let refused = Answer::text(Status::MethodNotAllowed, "").to_bytes();
        let refused = String::from_utf8(refused).unwrap();
        assert!(
            refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{refused}"
        );
        assert!(refused.contains("\r\nAllow: GET\r\n"), "{refused}");
    }

    #[test]
    fn a_loop_that_panics_starts_again() {
        let runs = AtomicUsize::new(0);
        keep_running("a test loop", || {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("the first run fails");
            }
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
