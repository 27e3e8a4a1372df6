//! Serving one client on its own thread, the original's `Servlet` and `ShowCerts`: the
//! console's `Connection:` line, the PROXY header that comes first from a trusted load
//! balancer, the handshake, the client's certificate, the first request, and the dispatch by
//! its first byte to the original's exchange ([`legacy`]) or to an account-protocol session
//! ([`session`]).

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;

use openssl::ssl::SslRef;

use super::config::Limits;
use super::connections::{ConnectionLimits, ConnectionSlot, Refusal};
use super::console::Console;
use super::flood_log::{FloodEvent, FloodLog};
use super::legacy::{self, Unanswered};
use super::metrics::{Active, Metrics};
use super::proxy_protocol::{ProxyHeader, read_proxy_header};
use super::session::{self, Session};
use super::tls_context::TlsContext;
use crate::address::ClientAddress;
use crate::db::AccountStore;
use crate::deadline::DeadlineStream;
use crate::tls;
use crate::xml::legacy::LEGACY_REQUEST_MAX;

/// Ports `ShowCerts(ssl)` of the server: prints the client's certificate, or `No certificates.`
pub(crate) fn show_certs(console: &Console, ssl: &SslRef) {
    console.write(&tls::peer_certificate_lines(ssl).unwrap_or_else(|| "No certificates.\n".into()));
}

/// What every client thread shares: the TLS context (and so its TLS session cache), the account
/// store and the limits.
pub(super) struct Shared {
    /// The TLS server context.
    pub(super) tls: Arc<TlsContext>,
    /// The account store.
    pub(super) store: Arc<AccountStore>,
    /// How long each wait may last.
    pub(super) limits: Limits,
    /// How many connections may be served at once, in all and per address.
    pub(super) connection_limits: ConnectionLimits,
    /// Where the original's console lines go.
    pub(super) console: Console,
    /// Refused, closed and failed connections, for the log's summaries.
    pub(super) flood: Arc<FloodLog>,
    /// The figures `--metrics` shows.
    pub(super) metrics: Arc<Metrics>,
}

impl Shared {
    /// Logs and counts the refusal of a connection from `client`: in the metrics, and in the
    /// log's summaries.
    pub(super) fn refused(&self, client: ClientAddress, refusal: Refusal) {
        Metrics::count(&self.metrics.refused, "reason", refusal.label());
        let why = refusal.reason(self.connection_limits);
        log::debug!("{client}: refused: {why}");
        self.flood.record(FloodEvent::Refused, &why, client.key());
    }

    /// Logs and counts, in the log's summaries, a connection from `client` that failed as
    /// `event` (`why`), unless it was closed to make room (`slot`): that closing was counted.
    fn failed(&self, slot: &ConnectionSlot, client: ClientAddress, event: FloodEvent, why: &str) {
        if !slot.evicted() {
            log::debug!("{client}: {why}");
            self.flood.record(event, why, client.key());
        }
    }
}

/// How a connection reached the server.
#[derive(Clone, Copy, Debug)]
pub(super) enum Arrival {
    /// From the client itself, at this address.
    Direct(ClientAddress),
    /// From a trusted load balancer at this address (`--proxy-protocol-from`), whose PROXY
    /// header names the client.
    ViaProxy(ClientAddress),
}

/// Ports `Servlet(ssl)`, run on the client's own thread: writes the console's `Connection:`
/// line, completes the handshake, shows the client's certificate, reads one request (at most
/// 1024 bytes, as the original), answers it and closes the connection. A first byte other
/// than `<` starts an account-protocol session instead ([`session::serve_session`]).
/// Failures are logged, never fatal; a connection closed to make room (`slot`) ends without a
/// word, as its closing was counted.
pub(super) fn servlet(tcp: TcpStream, arrival: Arrival, shared: &Shared, slot: &ConnectionSlot) {
    let _active = Active::of(&shared.metrics);
    // One deadline for the PROXY header, if any, and the TLS handshake after it.
    let mut stream = DeadlineStream::new(tcp, shared.limits.io, shared.limits.handshake)
        .with_connection_limit(shared.limits.connection);
    let client = match arrival {
        Arrival::Direct(client) => client,
        Arrival::ViaProxy(proxy) => match proxied_client(&mut stream, proxy, shared, slot) {
            Some(client) => client,
            None => return,
        },
    };
    shared.console.write(&format!("Connection: {client}\n"));
    serve(stream, client, shared, slot);
}

/// The client a trusted proxy at `proxy` connects for: read from the PROXY header, within the
/// handshake's deadline, so that the console's `Connection:` line, the logs, the per-address
/// cap (applied now, by [`ConnectionSlot::set_address`]) and login throttling all see the
/// client's address. A LOCAL header (a health check) is served as the proxy's own connection,
/// and ends quietly (`None`) if nothing follows it. Without a valid header the connection is
/// closed, and counted in the log's summaries.
fn proxied_client(
    stream: &mut DeadlineStream,
    proxy: ClientAddress,
    shared: &Shared,
    slot: &ConnectionSlot,
) -> Option<ClientAddress> {
    match read_proxy_header(stream) {
        Ok(ProxyHeader::Client(socket)) => {
            let client = ClientAddress::new(socket);
            if let Err(refusal) = slot.set_address(client) {
                shared.refused(client, refusal);
                return None;
            }
            log::debug!("{proxy}: PROXY header for {client}");
            Some(client)
        }
        Ok(ProxyHeader::Local) => {
            // HAProxy's health checks (`check-send-proxy`) close (or reset) right after the
            // header: not a failed handshake to report every second, nor a console line.
            if !matches!(stream.peek(&mut [0u8; 1]), Ok(n) if n > 0) {
                log::debug!("{proxy}: a health check (LOCAL header, then closed)");
                return None;
            }
            log::debug!("{proxy}: PROXY header without a client: served as the proxy");
            Some(proxy)
        }
        Err(e) => {
            shared.failed(slot, proxy, FloodEvent::NoProxyHeader, &e.reason());
            None
        }
    }
}

/// The servlet on `stream`, a connection from `client`: the handshake, the certificate, the
/// first request and the dispatch.
fn serve(stream: DeadlineStream, client: ClientAddress, shared: &Shared, slot: &ConnectionSlot) {
    let failed = |event: FloodEvent, why: String| shared.failed(slot, client, event, &why);
    let handshake = shared.tls.acceptor().accept(stream);
    let result = if handshake.is_ok() { "ok" } else { "failed" };
    Metrics::count(&shared.metrics.handshakes, "result", result);
    let mut ssl = match handshake {
        Ok(ssl) => ssl,
        Err(e) => {
            failed(
                FloodEvent::HandshakeFailed,
                tls::describe_handshake_error(&e),
            );
            return;
        }
    };
    // The first request, and the answer to it, within one --timeout.
    ssl.get_mut().start_phase(shared.limits.io);
    show_certs(&shared.console, ssl.ssl());
    let mut buf = [0u8; LEGACY_REQUEST_MAX];
    let request = match ssl.read(&mut buf) {
        Ok(0) if slot.evicted() => return,
        Ok(n) => &buf[..n],
        Err(e) => {
            failed(FloodEvent::NoRequest, tls::describe_io(&e));
            return;
        }
    };
    if !slot.start() {
        // Closed to make room since the read: no login or session on a closed socket, and
        // its place is the newcomer's.
        return;
    }
    if request.first().is_some_and(|&b| b != b'<') {
        let session = Session::new(client, tls::peer_key_fingerprint(ssl.ssl()));
        session::serve_session(
            &mut ssl,
            request,
            (&shared.store, &shared.metrics),
            session,
            shared.limits.idle,
        );
    } else {
        match legacy::exchange(&mut ssl, request, client, shared) {
            Ok(()) => {}
            Err(Unanswered::NoRequest) => {
                failed(
                    FloodEvent::NoRequest,
                    "the client closed the connection".into(),
                );
                return;
            }
            Err(Unanswered::Send(e)) => {
                log::warn!("{client}: cannot send the reply: {}", tls::describe_io(&e));
                return;
            }
        }
    }
    // close_notify, so the client can tell a complete reply from a cut one.
    if let Err(e) = ssl.shutdown() {
        log::debug!("{client}: shutdown: {e}");
    }
}
