//! Listening: the original's `OpenListener`, accepting without ever stopping on a failed
//! `accept`, peer addresses as the original printed them, and the [`Shutdown`] that stops the
//! accept loops.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

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

/// A peer address as the original prints it (`inet_ntoa(addr):port`); IPv4 clients of the
/// dual-stack socket appear as plain IPv4.
pub(super) fn peer_display(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => v6.to_string(),
        },
        SocketAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_as_the_original() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:46142".parse().unwrap();
        assert_eq!(peer_display(mapped), "127.0.0.1:46142");
        let v6: SocketAddr = "[::1]:8081".parse().unwrap();
        assert_eq!(peer_display(v6), "[::1]:8081");
    }

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
