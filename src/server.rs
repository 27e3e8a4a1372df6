//! The server: a port of the original `server.c`, function by function.
//!
//! | C function            | here                                                    |
//! |-----------------------|---------------------------------------------------------|
//! | `OpenListener(port)`  | [`open_listener`] (in `listener`)                       |
//! | `InitServerCTX()`     | `init_server_ctx` (in `tls_context`)                    |
//! | `LoadCertificates()`  | `load_certificates` (in `tls_context`)                  |
//! | `ShowCerts(ssl)`      | `show_certs` (in `servlet`)                             |
//! | `Servlet(ssl)`        | `servlet` (in `servlet`), then `exchange` (in `legacy`) |
//! | `main()`              | [`main`] and [`run`], its loop `Listener::run`          |
//!
//! Unlike the original it serves each client on its own thread, bounds every wait, checks
//! credentials against the account store instead of one built-in request, never prints a
//! password, and stops cleanly on SIGINT/SIGTERM.
//!
//! Its parts:
//! - `config`: the command line ([`ServerConfig`]);
//! - `listener`: the listening socket, the accept loop (`Listener`: admission, eviction, a
//!   client thread for each connection), and the [`Shutdown`] that ends it;
//! - `tls_context`: the TLS context, certificates, and its renewal (new session-ticket keys);
//! - `ticket_keys`: session-ticket keys shared by several instances (`--ticket-key-file`);
//! - `connections`: the connections served, capped in all and per address, the longest
//!   waiting closed to make room;
//! - `flood_log`: refused, closed and failed connections summarised in the log;
//! - `metrics`: the figures of `--metrics` (`/metrics`, `/healthz`) and their HTTP listener,
//!   bounded as the service port is (a few places, deadlines, a cap on the request);
//! - `workers`: the client threads;
//! - `memory`: what an idle connection's thread gives back, and glibc's thread caches;
//! - `console`: where the original's console lines go ([`Console`]);
//! - `servlet`: one client's connection on its thread: the console's `Connection:` line, the
//!   PROXY header, the handshake, the certificate, and the first-byte dispatch;
//! - `legacy`: the original's exchange (its request on the console, the login, its reply);
//! - `proxy_protocol`: the load balancers trusted to send a PROXY header, and reading it;
//! - `session`: an account-protocol session, frame by frame;
//! - `handlers`: the handler of each account-protocol command.

mod config;
mod connections;
mod console;
mod flood_log;
mod handlers;
mod legacy;
mod listener;
mod memory;
mod metrics;
mod proxy_protocol;
mod servlet;
mod session;
mod ticket_keys;
mod tls_context;
mod workers;

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

pub use config::ServerConfig;
pub use console::Console;
pub use listener::{Shutdown, open_listener};

use crate::db::AccountStore;
use crate::error::{Error, Result};
use flood_log::FloodLog;
use listener::Listener;
use metrics::Metrics;
use servlet::Shared;
use tls_context::TlsContext;

/// The original's one account, created by `--demo`.
const DEMO_USERNAME: &str = "aticle";
/// The original's password for [`DEMO_USERNAME`]: weak, for the demo only.
const DEMO_PASSWORD: &str = "123";

/// The `server` program: parses the command line, listens, and runs the server until SIGINT
/// or SIGTERM.
pub fn main() -> ExitCode {
    memory::limit_thread_caches();
    let args: Vec<String> = std::env::args().collect();
    let config = match ServerConfig::from_args(&args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let cli = config::command_line(&args);
    let served = open_listener(config.bind, config.port).and_then(|listener| {
        raise_file_limit(config.connections.total);
        let shutdown = Shutdown::new(&listener)?;
        stop_on_signals(&shutdown)?;
        run(&config, listener, &shutdown, Console::stdout())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli.fail(&e),
    }
}

/// Runs the server on `listener` until `shutdown`, writing the original's console lines to
/// `console`: the original's `main()` loop, with one thread per client. Returns once the
/// exchanges in flight have finished (or had their time).
pub fn run(
    config: &ServerConfig,
    listener: TcpListener,
    shutdown: &Shutdown,
    console: Console,
) -> Result<()> {
    let tls = Arc::new(TlsContext::new(config)?);
    let store = Arc::new(AccountStore::open(&config.db, config.store)?);
    if config.demo {
        ensure_demo_account(&store)?;
    }
    tls.renew_periodically(config, shutdown)?;
    let flood = Arc::new(FloodLog::default());
    flood.flush_periodically(shutdown)?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = config.metrics {
        metrics.serve(addr, Arc::clone(&store), shutdown)?;
    }
    let shared = Arc::new(Shared {
        tls,
        store: Arc::clone(&store),
        limits: config.limits,
        connection_limits: config.connections,
        console,
        flood,
        metrics,
    });
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    // The one line the server always writes at start (stdout is the original's transcript).
    let every = if local.ip().is_unspecified() {
        "every interface (IPv4 and IPv6 where IPv6 is on) at "
    } else {
        ""
    };
    say(&format!(
        "server: accounts in {}; listening on {every}{local}",
        config.db
    ));
    let connections =
        Listener::new(listener, shared, config.proxy_protocol_from.clone()).run(shutdown);

    let open = connections.open();
    say(&format!(
        "stopping: waiting up to {} s for {open} connection{} (signal again to stop now)",
        config.grace.as_secs(),
        if open == 1 { "" } else { "s" }
    ));
    let unfinished = connections.wait_idle(config.grace);
    if unfinished > 0 {
        log::warn!("stopped with {unfinished} exchange(s) unfinished");
    }
    store.close();
    log::info!("stopped");
    Ok(())
}

/// Writes `line` and a newline to stderr in one piece: `eprintln!` writes each part of its
/// format apart (fourteen `write` calls for the start line), which other threads' log lines
/// could come between.
fn say(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Makes sure the original's account exists, and warns that it is served.
fn ensure_demo_account(store: &AccountStore) -> Result<()> {
    match store.create_account(DEMO_USERNAME, DEMO_PASSWORD.as_bytes(), &[]) {
        Ok(_) => log::info!("created the demo account {DEMO_USERNAME:?}"),
        Err(Error::UserExists(_)) => {}
        Err(e) => return Err(e),
    }
    say(&format!(
        "warning: --demo: the account {DEMO_USERNAME:?} with the original's weak password is \
         active; do not use --demo where others can connect"
    ));
    Ok(())
}

/// Raises the open-file limit to the hard limit, so that `max_clients` connections can be
/// open at once; warns if even that is too low. A connection takes two descriptors until it
/// sends its first request (its socket, and the handle that can close it to make room).
fn raise_file_limit(max_clients: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            log::info!("open files: up to {limit}");
            // A few more go to the listener, the database and the logs.
            let needed = max_clients.saturating_mul(2).saturating_add(64);
            if (limit as usize) < needed {
                log::warn!(
                    "the open-file limit ({limit}) is below what --max-clients ({max_clients}) \
                     needs ({needed}); connections beyond it will fail to be accepted"
                );
            }
        }
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// On the first SIGINT or SIGTERM, requests `shutdown`; a second signal exits at once.
fn stop_on_signals(shutdown: &Shutdown) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let shutdown = shutdown.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = signals.forever();
            if seen.next().is_some() {
                shutdown.request();
            }
            if seen.next().is_some() {
                say("second signal: exiting without waiting");
                std::process::exit(1);
            }
        })
        .map(drop)
        .map_err(|e| Error::io("cannot start the signal thread", e))
}
