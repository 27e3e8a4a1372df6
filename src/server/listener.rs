//! Listening: the original's `OpenListener`, the service port's accept loop ([`Listener`]:
//! admission, eviction, their logs and metrics, a client thread for each connection), accepting
//! without ever stopping on a failed `accept`, and the [`Shutdown`] that stops the accept
//! loops.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::connections::{Admission, ConnectionSlot, Connections};
use super::flood_log::FloodEvent;
use super::proxy_protocol::TrustedProxies;
use super::servlet::{Arrival, Shared, servlet};
use super::workers::ClientThreads;
use crate::address::ClientAddress;
use crate::error::{Error, Result};

/// Pending connections the kernel queues for `accept` (the original asked for 10).
const LISTEN_BACKLOG: i32 = 1024;

/// How long an accept loop pauses after a failed `accept`.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Ports `OpenListener(port)`: a listening TCP socket on `port`, on `bind` or on every
/// interface (IPv6 and IPv4 on one socket; IPv4 alone where IPv6 is off).
pub fn open_listener(bind: Option<IpAddr>, port: u16) -> Result<TcpListener> {
    match bind {
        Some(ip) => listen_on(SocketAddr::new(ip, port)),
        None => listen_on(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)).or_else(|e| {
            log::info!("IPv6 unavailable ({e}); listening on IPv4 only");
            listen_on(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
        }),
    }
}

fn listen_on(addr: SocketAddr) -> Result<TcpListener> {
    let fail = |e: io::Error| Error::io(format!("cannot listen on port {}", addr.port()), e);
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        // Unspecified: serve IPv4 too; a given IPv6 address: only it.
        socket
            .set_only_v6(!addr.ip().is_unspecified())
            .map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// The next connection on `listener`, the `port` named in the log; `None` when `accept`
/// fails (out of file descriptors and the like), which is logged and followed by a pause of
/// [`ACCEPT_PAUSE`] that gives connections time to end. The loop goes on either way.
pub(super) fn accept_next(listener: &TcpListener, port: &str) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept() {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            log::warn!("accept failed on the {port}: {e}");
            thread::sleep(ACCEPT_PAUSE);
            None
        }
    }
}

/// The service port's accept loop, as mini-redis's `Listener`: takes each connection, admits it
/// under the caps (closing the connection that has waited longest to make room, or refusing
/// it), logs and counts what it decides, and hands the connection to a client thread, which
/// does everything else (the console's line included), so a slow client or a slow stdout never
/// stalls `accept`.
pub(super) struct Listener {
    listener: TcpListener,
    /// The connections served, and their caps.
    connections: Arc<Connections>,
    /// Where connections are served.
    threads: ClientThreads,
    /// What the client threads share.
    shared: Arc<Shared>,
    /// The load balancers whose connections begin with a PROXY header.
    proxies: TrustedProxies,
}

impl Listener {
    /// The accept loop on `listener`, with the client threads' `shared` state; connections
    /// from `proxies` begin with a PROXY header.
    pub(super) fn new(
        listener: TcpListener,
        shared: Arc<Shared>,
        proxies: TrustedProxies,
    ) -> Listener {
        Listener {
            listener,
            connections: Arc::new(Connections::new(shared.connection_limits)),
            threads: ClientThreads::new(),
            shared,
            proxies,
        }
    }

    /// Accepts connections until `shutdown`; then closes the port, so that new connections
    /// are refused at once instead of left queued, and gives back the connections still
    /// served.
    pub(super) fn run(self, shutdown: &Shutdown) -> Arc<Connections> {
        loop {
            let accepted = accept_next(&self.listener, "service port");
            if shutdown.is_requested() {
                return self.connections;
            }
            let Some((tcp, socket)) = accepted else {
                continue;
            };
            // From a trusted proxy, the client's address comes in the PROXY header, read on
            // the client's thread: until then the connection counts under the proxy's.
            let arrival = if self.proxies.trusts(socket.ip()) {
                Arrival::ViaProxy(ClientAddress::new(socket))
            } else {
                Arrival::Direct(ClientAddress::new(socket))
            };
            let Some(slot) = self.admit(&tcp, arrival) else {
                continue;
            };
            self.shared.metrics.accepted.inc();
            let shared = Arc::clone(&self.shared);
            let served = self
                .threads
                .serve(Box::new(move || servlet(tcp, arrival, &shared, &slot)));
            if let Err(e) = served {
                log::error!("cannot start a thread for a client: {e}");
            }
        }
    }

    /// A place for `tcp` among the connections served, or `None` if it is refused; what is
    /// decided is logged and counted.
    fn admit(&self, tcp: &TcpStream, arrival: Arrival) -> Option<ConnectionSlot> {
        let shared = &self.shared;
        let admission = match arrival {
            Arrival::Direct(client) => self.connections.admit(tcp, client),
            Arrival::ViaProxy(proxy) => self.connections.admit_via_proxy(tcp, proxy),
        };
        match admission {
            Admission::Admitted(slot) => Some(slot),
            Admission::AdmittedByEvicting(slot, victim) => {
                shared.metrics.evicted.inc();
                let why = format!(
                    "waited longest without sending a request when all {} places were taken \
                     (--max-clients)",
                    shared.connection_limits.total
                );
                log::debug!("a connection from {victim} {why}");
                shared.flood.record(FloodEvent::Evicted, &why, victim);
                Some(slot)
            }
            Admission::Refused(refusal) => {
                let (Arrival::Direct(from) | Arrival::ViaProxy(from)) = arrival;
                shared.refused(from, refusal);
                None
            }
        }
    }
}

/// Asks a running server to stop: it accepts no new connection and gives those in flight the
/// grace period. Clones share one request; any of them may make it, from any thread.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<ShutdownState>);

#[derive(Debug)]
struct ShutdownState {
    requested: Mutex<bool>,
    changed: Condvar,
    /// Where a connection wakes the accept loop.
    wake: SocketAddr,
}

impl Shutdown {
    /// A shutdown for the server that accepts on `listener`.
    pub fn new(listener: &TcpListener) -> Result<Shutdown> {
        Ok(Shutdown(Arc::new(ShutdownState {
            requested: Mutex::new(false),
            changed: Condvar::new(),
            wake: wake_address(listener)?,
        })))
    }

    /// Asks the server to stop, and wakes its accept loop with a connection; returns at once.
    pub fn request(&self) {
        *self.0.requested.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.changed.notify_all();
        wake(self.0.wake);
    }

    /// Wakes the accept loop of `listener`, another port of the server's, once a stop is
    /// asked for: a thread waits for it.
    pub(super) fn wake_on_stop(&self, listener: &TcpListener) -> Result<()> {
        let (shutdown, address) = (self.clone(), wake_address(listener)?);
        thread::Builder::new()
            .name("wake on stop".into())
            .spawn(move || {
                while !shutdown.wait(Duration::from_secs(3600)) {}
                wake(address);
            })
            .map(drop)
            .map_err(|e| Error::io("cannot start a thread", e))
    }

    /// Whether a stop was asked for.
    pub(super) fn is_requested(&self) -> bool {
        *self.0.requested.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `limit` for a stop; whether one was asked for.
    pub(super) fn wait(&self, limit: Duration) -> bool {
        let requested = self.0.requested.lock().unwrap_or_else(|e| e.into_inner());
        let (requested, _) = self
            .0
            .changed
            .wait_timeout_while(requested, limit, |requested| !*requested)
            .unwrap_or_else(|e| e.into_inner());
        *requested
    }
}

/// Where a connection reaches `listener`: its own address, or loopback if it listens on
/// every interface.
fn wake_address(listener: &TcpListener) -> Result<SocketAddr> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, local.port()))
}

/// Wakes the accept loop that listens on `address` with a connection.
fn wake(address: SocketAddr) {
    if let Err(e) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
        log::warn!("cannot wake the accept loop on {address}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_wakes_the_accept_loop_and_its_waiters() {
        let listener = open_listener(Some(Ipv4Addr::LOCALHOST.into()), 0).unwrap();
        let shutdown = Shutdown::new(&listener).unwrap();
        assert!(!shutdown.wait(Duration::from_millis(10)));
        let waiter = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.wait(Duration::from_secs(60)))
        };
        shutdown.request();
        assert!(listener.accept().is_ok(), "the accept loop is woken");
        assert!(waiter.join().unwrap());
        assert!(shutdown.is_requested());
    }
}
