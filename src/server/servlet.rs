//! Serving one client: the original's `Servlet` and `ShowCerts`, the legacy exchange, the
//! dispatch to an account-protocol session by the request's first byte, and the PROXY header
//! that comes first from a trusted load balancer.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;

use openssl::ssl::SslRef;

use super::config::Limits;
use super::connections::{ConnectionLimits, ConnectionSlot};
use super::console::Console;
use super::flood_log::{FloodEvent, FloodLog};
use super::listener::peer_display;
use super::metrics::Metrics;
use super::proxy_protocol::{ProxyHeader, read_proxy_header};
use super::session;
use super::tls_context::TlsContext;
use crate::address::address_key;
use crate::db::{AccountStore, Limit, LoginOutcome};
use crate::deadline::DeadlineStream;
use crate::tls;
use crate::xml::legacy::{
    LEGACY_INVALID_REPLY, LEGACY_REQUEST_MAX, LEGACY_VALID_REPLY, mask_legacy_password,
    parse_legacy_request, printable,
};
use crate::xml::sign_in::SignInMethod;

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
    /// How many connections may be served at once (for the log's words).
    pub(super) connection_limits: ConnectionLimits,
    /// Where the original's console lines go.
    pub(super) console: Console,
    /// Refused, closed and failed connections, for the log's summaries.
    pub(super) flood: Arc<FloodLog>,
    /// The figures `--metrics` shows.
    pub(super) metrics: Arc<Metrics>,
}

/// Ports `Servlet(ssl)`: completes the handshake, shows the client's certificate, reads one
/// request (at most 1024 bytes, as the original), answers it and closes the connection. A
/// first byte other than `<` starts an account-protocol session instead
/// ([`session::serve_session`]). Failures are logged, never fatal; a connection closed to
/// make room (`slot`) ends without a word, as its closing was counted.
pub(crate) fn servlet(
    tcp: TcpStream,
    peer: &str,
    ip: IpAddr,
    shared: &Shared,
    slot: &ConnectionSlot,
) {
    serve(
        connection_stream(tcp, &shared.limits),
        peer,
        ip,
        shared,
        slot,
    );
}

/// [`servlet`] for a connection from a trusted proxy (`--proxy-protocol-from`) at `proxy`:
/// reads the PROXY header first, within the handshake's deadline, then serves the client it
/// names as if it had connected itself: the console's `Connection:` line, the logs, the
/// per-address cap (applied now, by [`ConnectionSlot::set_address`]) and login throttling
/// all see the client's address. A LOCAL header (a health check) is served as the proxy's
/// own connection, and ends quietly if nothing follows it. Without a valid header the
/// connection is closed, and counted in the log's summaries.
pub(super) fn servlet_behind_proxy(
    tcp: TcpStream,
    proxy: SocketAddr,
    shared: &Shared,
    slot: &ConnectionSlot,
) {
    // One deadline for the header and the TLS handshake after it.
    let mut stream = connection_stream(tcp, &shared.limits);
    let proxy_peer = peer_display(proxy);
    let client = match read_proxy_header(&mut stream) {
        Ok(ProxyHeader::Client(client)) => {
            if let Err(refusal) = slot.set_address(client.ip()) {
                let why = refusal.reason(shared.connection_limits);
                log::debug!("{}: refused: {why}", peer_display(client));
                shared
                    .flood
                    .record(FloodEvent::Refused, &why, address_key(client.ip()));
                return;
            }
            log::debug!("{proxy_peer}: PROXY header for {}", peer_display(client));
            client
        }
        Ok(ProxyHeader::Local) => {
            // HAProxy's health checks (`check-send-proxy`) close (or reset) right after the
            // header: not a failed handshake to report every second, nor a console line.
            if !matches!(stream.peek(&mut [0u8; 1]), Ok(n) if n > 0) {
                log::debug!("{proxy_peer}: a health check (LOCAL header, then closed)");
                return;
            }
            log::debug!("{proxy_peer}: PROXY header without a client: served as the proxy");
            proxy
        }
        Err(e) => {
            if !slot.evicted() {
                log::debug!("{proxy_peer}: no valid PROXY header: {e}");
                shared.flood.record(
                    FloodEvent::NoProxyHeader,
                    &e.reason(),
                    address_key(proxy.ip()),
                );
            }
            return;
        }
    };
    let peer = peer_display(client);
    shared.console.write(&format!("Connection: {peer}\n"));
    serve(stream, &peer, client.ip(), shared, slot);
}

/// A new connection's stream: the handshake's deadline, each wait's, and the connection's.
fn connection_stream(tcp: TcpStream, limits: &Limits) -> DeadlineStream {
    DeadlineStream::new(tcp, limits.io, limits.handshake).with_connection_limit(limits.connection)
}

/// The servlet on `stream`, a connection from `peer` at `ip`.
fn serve(stream: DeadlineStream, peer: &str, ip: IpAddr, shared: &Shared, slot: &ConnectionSlot) {
    let failed = |event: FloodEvent, why: String| {
        if !slot.evicted() {
            log::debug!("{peer}: {why}");
            shared.flood.record(event, &why, address_key(ip));
        }
    };
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
        let client = session::Client {
            peer,
            ip,
            certificate: tls::peer_key_fingerprint(ssl.ssl()),
        };
        session::serve_session(
            &mut ssl,
            request,
            (&shared.store, &shared.metrics),
            &client,
            shared.limits.idle,
        );
        if let Err(e) = ssl.shutdown() {
            log::debug!("{peer}: shutdown: {e}");
        }
        return;
    }
    shared.console.write(&format!(
        "Client msg: \"{}\"\n",
        printable(&mask_legacy_password(request))
    ));
    if request.is_empty() {
        failed(
            FloodEvent::NoRequest,
            "the client closed the connection".into(),
        );
        return;
    }
    let reply = legacy_reply(&shared.store, &shared.metrics, request, peer, ip);
    let result = if reply == LEGACY_VALID_REPLY {
        "valid"
    } else {
        "invalid"
    };
    Metrics::count(&shared.metrics.legacy, "reply", result);
    if let Err(e) = ssl.write_all(reply) {
        log::warn!("{peer}: cannot send the reply: {}", tls::describe_io(&e));
        return;
    }
    // close_notify, so the client can tell a complete reply from a cut one.
    if let Err(e) = ssl.shutdown() {
        log::debug!("{peer}: shutdown: {e}");
    }
}

/// The original's `strcmp(cpValidMessage, buf)`, with the account store in place of its one
/// built-in account: the 220-byte reply for a well-formed request with valid credentials,
/// `Invalid Message` for anything else.
fn legacy_reply(
    store: &AccountStore,
    metrics: &Metrics,
    request: &[u8],
    peer: &str,
    ip: IpAddr,
) -> &'static [u8] {
    let Some(credentials) = parse_legacy_request(request) else {
        log::info!("{peer}: not a well-formed request");
        return LEGACY_INVALID_REPLY;
    };
    let Ok(username) = std::str::from_utf8(credentials.username) else {
        log::info!("{peer}: user name is not UTF-8");
        return LEGACY_INVALID_REPLY;
    };
    let signed_in = store.sign_in(username, credentials.password, ip, SignInMethod::Legacy);
    match signed_in.map(|s| s.outcome) {
        Ok(LoginOutcome::Success(_)) => {
            log::info!("{peer}: {username:?} logged in");
            LEGACY_VALID_REPLY
        }
        Ok(LoginOutcome::Failed) => {
            log::info!("{peer}: login refused for {username:?}");
            LEGACY_INVALID_REPLY
        }
        Ok(LoginOutcome::Locked) => {
            log::info!("{peer}: login refused for {username:?}: the account is locked");
            LEGACY_INVALID_REPLY
        }
        Ok(LoginOutcome::Throttled(wait, limit)) => {
            metrics.logins_throttled.inc();
            log::warn!(
                "{peer}: login for {username:?} throttled for {}s: too many {}",
                wait.as_secs_f64().ceil(),
                match limit {
                    Limit::Failures => "failures",
                    Limit::Successes => "logins",
                    Limit::AtOnce => "logins at once",
                }
            );
            LEGACY_INVALID_REPLY
        }
        Err(e) => {
            metrics.store_errors.inc();
            log::error!("{peer}: {e}");
            LEGACY_INVALID_REPLY
        }
    }
}
