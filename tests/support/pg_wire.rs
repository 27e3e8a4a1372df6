//! A counting proxy for the PostgreSQL wire protocol, for the library's unit tests and the
//! integration tests (each includes this file with `#[path]`): [`WireCounter::start`] listens
//! on a free loopback port and relays every connection to a PostgreSQL server on another
//! loopback port, counting what the client sends. A test connects through it and reads how
//! many round trips (`Sync` and simple `Query` messages) and named `Parse` messages its code
//! cost.
//!
//! [`WireCounter::freeze`] makes it hang as a stopped server does: connections stay open and
//! new ones are accepted (by the kernel), and nothing is answered.
//!
//! Each message is counted before any of its bytes are forwarded, so a count is exact and
//! visible as soon as the server can have seen the message. The proxy needs a plain-text
//! connection (the postgres crate's `NoTls`): a connection the server agrees to encrypt is
//! relayed uncounted, and [`WireCounter::counts`] then panics rather than return numbers that
//! miss it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::Sub;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The code of an SSLRequest in the startup phase.
const SSL_REQUEST: u32 = 80877103;
/// The code of a GSSENCRequest in the startup phase.
const GSSENC_REQUEST: u32 = 80877104;
/// The code of a CancelRequest in the startup phase.
const CANCEL_REQUEST: u32 = 80877102;
/// The largest startup-phase message relayed (PostgreSQL's own limit is 10000 bytes).
const MAX_STARTUP_LENGTH: u32 = 10_000;
/// How much of the simple Queries' text a counter keeps.
const MAX_QUERY_TEXT: usize = 16 << 20;
/// How long [`WireCounter::settle`] waits for a quiet moment before it fails.
const SETTLE_PATIENCE: Duration = Duration::from_secs(60);

/// What clients sent through a [`WireCounter`], counted by message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireCounts {
    /// `Sync` messages: the end of an extended-query flight, each one a wait for the server.
    pub syncs: u64,
    /// Simple `Query` messages (`simple_query`, `batch_execute`), each one a wait too.
    pub queries: u64,
    /// `Parse` messages with a statement name: statements prepared to be kept.
    pub named_parses: u64,
    /// `Close` messages (of a statement or a portal).
    pub closes: u64,
    /// Simple `Query` messages that prepare a statement (or may: their text holds `PREPARE `).
    pub prepares: u64,
}

impl WireCounts {
    /// How many times a client waited for the server: `Sync`s plus simple `Query`s.
    pub fn round_trips(&self) -> u64 {
        self.syncs + self.queries
    }

    /// What was counted after `earlier`, an earlier reading of the same counter.
    pub fn since(&self, earlier: WireCounts) -> WireCounts {
        *self - earlier
    }
}

impl Sub for WireCounts {
    type Output = WireCounts;

    fn sub(self, earlier: WireCounts) -> WireCounts {
        let minus = |now: u64, then: u64, what: &str| {
            now.checked_sub(then).unwrap_or_else(|| {
                panic!("WireCounts subtraction: {then} {what} earlier but only {now} now")
            })
        };
        WireCounts {
            syncs: minus(self.syncs, earlier.syncs, "syncs"),
            queries: minus(self.queries, earlier.queries, "queries"),
            named_parses: minus(self.named_parses, earlier.named_parses, "named parses"),
            closes: minus(self.closes, earlier.closes, "closes"),
            prepares: minus(self.prepares, earlier.prepares, "prepares"),
        }
    }
}

/// A running proxy. Dropping it stops accepting and cuts the connections still open.
pub struct WireCounter {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the proxy's threads share with the [`WireCounter`].
struct Shared {
    target_port: u16,
    syncs: AtomicU64,
    queries: AtomicU64,
    named_parses: AtomicU64,
    closes: AtomicU64,
    prepares: AtomicU64,
    connections: AtomicU64,
    /// When the proxy started: [`Shared::last_activity`] counts from it.
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last bytes relayed in either direction.
    last_activity: AtomicU64,
    stopping: AtomicBool,
    /// Whether nothing is relayed for now ([`WireCounter::freeze`]).
    frozen: AtomicBool,
    /// The client and server sockets of the open connections, to cut them at the end.
    open: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    /// Why the counts cannot be trusted, if something made them so.
    trouble: Mutex<Option<String>>,
    /// The text of every simple `Query`, one after another, up to [`MAX_QUERY_TEXT`] bytes.
    query_text: Mutex<Vec<u8>>,
}

impl WireCounter {
    /// A proxy on a free port of 127.0.0.1 that relays every connection to
    /// `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> WireCounter {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("a loopback port for the wire counter");
        let port = listener
            .local_addr()
            .expect("the wire counter's listening address")
            .port();
        let epoch = Instant::now();
        let shared = Arc::new(Shared {
            target_port,
            syncs: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            named_parses: AtomicU64::new(0),
            closes: AtomicU64::new(0),
            prepares: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            epoch,
            last_activity: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            trouble: Mutex::new(None),
            query_text: Mutex::new(Vec::new()),
        });
        let for_acceptor = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("wire counter :{port}"))
            .spawn(move || accept_loop(listener, for_acceptor))
            .expect("a thread for the wire counter to accept on");
        WireCounter {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Hangs (`true`) as a stopped server does, or resumes: while frozen, nothing is relayed
    /// in either direction, connections stay open, and new ones are accepted and not
    /// answered.
    pub fn freeze(&self, frozen: bool) {
        self.shared.frozen.store(frozen, Ordering::SeqCst);
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What all connections sent so far. Panics if a connection could not be followed (an
    /// encrypted one, or bytes that are not the protocol), as its messages would be missing.
    pub fn counts(&self) -> WireCounts {
        if let Some(trouble) = self.shared.trouble.lock().unwrap().as_ref() {
            panic!("the wire counter's counts are incomplete: {trouble}");
        }
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        WireCounts {
            syncs: load(&self.shared.syncs),
            queries: load(&self.shared.queries),
            named_parses: load(&self.shared.named_parses),
            closes: load(&self.shared.closes),
            prepares: load(&self.shared.prepares),
        }
    }

    /// Whether the text of any simple `Query` sent so far contains `needle` (what a server
    /// writes into its statements' text, PostgreSQL may log).
    pub fn query_text_contains(&self, needle: &[u8]) -> bool {
        let text = self.shared.query_text.lock().unwrap();
        assert!(
            text.len() < MAX_QUERY_TEXT,
            "more than {MAX_QUERY_TEXT} bytes of queries: the text kept is incomplete"
        );
        text.windows(needle.len()).any(|w| w == needle)
    }

    /// Waits until nothing has passed in either direction for `quiet`, then returns
    /// [`WireCounter::counts`]: a stable reading after work whose last messages (a `Close` a
    /// dropped statement queues, say) may still be on their way. Panics if the traffic never
    /// pauses that long within a minute.
    pub fn settle(&self, quiet: Duration) -> WireCounts {
        let started = Instant::now();
        loop {
            let last = Duration::from_nanos(self.shared.last_activity.load(Ordering::SeqCst));
            let idle = self.shared.epoch.elapsed().saturating_sub(last);
            if idle >= quiet {
                return self.counts();
            }
            assert!(
                started.elapsed() < SETTLE_PATIENCE,
                "the wire counter on port {} never saw {quiet:?} without traffic in {:?}",
                self.port,
                SETTLE_PATIENCE
            );
            thread::sleep(quiet - idle);
        }
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, client, server) in self.shared.open.lock().unwrap().drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    /// Returns once the proxy is not frozen, or stops.
    fn wait_while_frozen(&self) {
        while self.frozen.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_activity.fetch_max(now, Ordering::SeqCst);
    }

    fn report(&self, trouble: String) {
        eprintln!("wire counter: {trouble}");
        let mut slot = self.trouble.lock().unwrap();
        if slot.is_none() {
            *slot = Some(trouble);
        }
    }

    fn forget(&self, id: u64) {
        self.open.lock().unwrap().retain(|(open, _, _)| *open != id);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                // Out of descriptors, say: the client sees a refused connection; go on.
                eprintln!("wire counter: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst);
        shared.touch();
        let for_connection = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("wire counter #{id}"))
            .spawn(move || connection(id, client, for_connection));
        if let Err(e) = spawned {
            shared.report(format!("no thread for connection #{id}: {e}"));
        }
    }
}

/// Relays one connection: the startup phase here, then a thread per direction.
fn connection(id: u64, mut client: TcpStream, shared: Arc<Shared>) {
    shared.wait_while_frozen();
    let mut server = match TcpStream::connect(("127.0.0.1", shared.target_port)) {
        Ok(server) => server,
        Err(e) => {
            // The client sees its connection closed, as it would see the server down.
            eprintln!(
                "wire counter: connection #{id}: cannot reach 127.0.0.1:{}: {e}",
                shared.target_port
            );
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clone = || {
        client
            .try_clone()
            .and_then(|c| Ok((c, server.try_clone()?)))
    };
    let ((client_back, server_back), (client_kept, server_kept)) =
        match clone().and_then(|back| Ok((back, clone()?))) {
            Ok(clones) => clones,
            Err(e) => {
                shared.report(format!("connection #{id}: cannot clone its sockets: {e}"));
                return;
            }
        };
    shared
        .open
        .lock()
        .unwrap()
        .push((id, client_kept, server_kept));
    let counted = match startup(id, &mut client, &mut server, &shared) {
        Ok(Some(counted)) => counted,
        Ok(None) => {
            shared.forget(id);
            return;
        }
        Err(e) => {
            eprintln!("wire counter: connection #{id} ended in its startup phase: {e}");
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            shared.forget(id);
            return;
        }
    };
    let for_backend = Arc::clone(&shared);
    let backend = thread::Builder::new()
        .name(format!("wire counter #{id} back"))
        .spawn(move || relay(server_back, client_back, None, &for_backend));
    let backend = match backend {
        Ok(backend) => backend,
        Err(e) => {
            shared.report(format!("no thread for connection #{id}'s answers: {e}"));
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            shared.forget(id);
            return;
        }
    };
    let mut parser = counted.then(Frontend::default);
    relay(client, server, parser.as_mut().map(|p| (p, id)), &shared);
    let _ = backend.join();
    shared.forget(id);
}

/// Relays the client's startup-phase messages (and the server's one-byte answers to its
/// encryption requests) until the StartupMessage. Returns whether the rest can be counted
/// (not if the server agreed to encrypt), or `None` if the connection is done (a
/// CancelRequest, or the client gave up).
fn startup(
    id: u64,
    client: &mut TcpStream,
    server: &mut TcpStream,
    shared: &Shared,
) -> io::Result<Option<bool>> {
    loop {
        let mut header = [0u8; 8];
        if let Err(e) = client.read_exact(&mut header) {
            return if e.kind() == io::ErrorKind::UnexpectedEof {
                Ok(None)
            } else {
                Err(e)
            };
        }
        shared.touch();
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let code = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if !(8..=MAX_STARTUP_LENGTH).contains(&length) {
            shared.report(format!(
                "connection #{id}: a startup message of {length} bytes (code {code})"
            ));
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not PostgreSQL"));
        }
        let mut message = header.to_vec();
        message.resize(length as usize, 0);
        client.read_exact(&mut message[8..])?;
        server.write_all(&message)?;
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                let mut answer = [0u8; 1];
                server.read_exact(&mut answer)?;
                shared.touch();
                client.write_all(&answer)?;
                if answer[0] != b'N' {
                    shared.report(format!(
                        "connection #{id} is encrypted (the server answered {:?} to {}): its \
                         messages are relayed uncounted; connect with NoTls",
                        answer[0] as char,
                        if code == SSL_REQUEST {
                            "SSLRequest"
                        } else {
                            "GSSENCRequest"
                        }
                    ));
                    return Ok(Some(false));
                }
            }
            CANCEL_REQUEST => {
                // The server closes; let the client see that.
                let mut rest = Vec::new();
                let _ = server.read_to_end(&mut rest);
                let _ = client.write_all(&rest);
                let _ = client.shutdown(Shutdown::Both);
                return Ok(None);
            }
            _ => return Ok(Some(true)),
        }
    }
}

/// Copies `from` to `to` until either side closes; with a parser, counts the messages first.
fn relay(
    mut from: TcpStream,
    mut to: TcpStream,
    mut parser: Option<(&mut Frontend, u64)>,
    shared: &Shared,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        shared.wait_while_frozen();
        shared.touch();
        if let Some((frontend, id)) = parser.as_mut()
            && let Err(trouble) = frontend.feed(&buffer[..n], shared)
        {
            shared.report(format!("connection #{id}: {trouble}"));
            parser = None;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    // The other direction ends when its reader sees this.
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Where the frontend parser is within the stream of typed messages.
#[derive(Default)]
struct Frontend {
    /// The type byte of the message being read, once read.
    kind: Option<u8>,
    /// Bytes of the length field read so far.
    length: Vec<u8>,
    /// Bytes of the current message's body still to come, once its length is known.
    remaining: Option<usize>,
    /// Whether the current message's first body byte is still to come.
    at_body_start: bool,
    /// The text of the current simple `Query`, while it is read (up to [`MAX_QUERY_TEXT`]).
    query: Option<Vec<u8>>,
}

impl Frontend {
    /// Counts the messages whose type (or, for `Parse`, whose first body byte) is in `bytes`.
    fn feed(&mut self, mut bytes: &[u8], shared: &Shared) -> Result<(), String> {
        while !bytes.is_empty() {
            let Some(kind) = self.kind else {
                let kind = bytes[0];
                bytes = &bytes[1..];
                self.kind = Some(kind);
                let counter = match kind {
                    b'S' => Some(&shared.syncs),
                    b'Q' => Some(&shared.queries),
                    b'C' => Some(&shared.closes),
                    _ => None,
                };
                if let Some(counter) = counter {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                continue;
            };
            let Some(remaining) = self.remaining else {
                let take = (4 - self.length.len()).min(bytes.len());
                self.length.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.length.len() == 4 {
                    let length = u32::from_be_bytes([
                        self.length[0],
                        self.length[1],
                        self.length[2],
                        self.length[3],
                    ]);
                    if length < 4 {
                        return Err(format!(
                            "a message {:?} of length {length}: not PostgreSQL's protocol",
                            kind as char
                        ));
                    }
                    self.length.clear();
                    self.remaining = Some(length as usize - 4);
                    self.at_body_start = true;
                    self.query = (kind == b'Q').then(Vec::new);
                    self.finish_if_done();
                }
                continue;
            };
            if self.at_body_start {
                self.at_body_start = false;
                // A Parse's body opens with the statement name, NUL-terminated.
                if kind == b'P' && bytes[0] != 0 {
                    shared.named_parses.fetch_add(1, Ordering::SeqCst);
                }
            }
            let take = remaining.min(bytes.len());
            if kind == b'Q' {
                self.read_query(&bytes[..take], remaining == take, shared);
            }
            bytes = &bytes[take..];
            self.remaining = Some(remaining - take);
            self.finish_if_done();
        }
        Ok(())
    }

    /// Reads part of a simple `Query`'s text (`last`: the end of it); at its end, keeps it
    /// and counts it if it prepares a statement.
    fn read_query(&mut self, bytes: &[u8], last: bool, shared: &Shared) {
        let Some(query) = self.query.as_mut() else {
            return;
        };
        let room = MAX_QUERY_TEXT - query.len().min(MAX_QUERY_TEXT);
        query.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if last {
            if query.windows(8).any(|w| w == b"PREPARE ") {
                shared.prepares.fetch_add(1, Ordering::SeqCst);
            }
            let mut text = shared.query_text.lock().unwrap();
            let room = MAX_QUERY_TEXT - text.len().min(MAX_QUERY_TEXT);
            text.extend_from_slice(&query[..query.len().min(room)]);
            self.query = None;
        }
    }

    fn finish_if_done(&mut self) {
        if self.remaining == Some(0) {
            self.kind = None;
            self.remaining = None;
            self.at_body_start = false;
        }
    }
}
