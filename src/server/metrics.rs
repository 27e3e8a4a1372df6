//! `--metrics ADDR:PORT`: a small HTTP listener with the server's counters and gauges in
//! Prometheus's text format (`GET /metrics`), and `GET /healthz` for a load balancer: 200 when
//! the account store answers within a second, 503 otherwise, so that a balancer takes an
//! instance whose store is gone out of service.
//!
//! Its parts: `http`, the listener and its bounds (connections, deadlines, request size);
//! `health`, the question `/healthz` asks the store.

mod health;
mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::listener::Shutdown;
use crate::db::AccountStore;
use crate::error::Result;
use health::HealthCheck;
use http::{Answer, Status};

/// A label set of one label.
type Label = [(&'static str, String); 1];

/// The server's figures since it started.
pub(super) struct Metrics {
    registry: Registry,
    /// Connections accepted into a place.
    pub(super) accepted: Counter,
    /// Connections closed at once on arrival.
    pub(super) refused: Family<Label, Counter>,
    /// Connections closed to make room before they sent a request.
    pub(super) evicted: Counter,
    /// TLS handshakes, by result (`ok`, `failed`).
    pub(super) handshakes: Family<Label, Counter>,
    /// Legacy exchanges, by reply (`valid`, `invalid`).
    pub(super) legacy: Family<Label, Counter>,
    /// Account-protocol commands, by name and result code.
    pub(super) commands: Family<[(&'static str, String); 2], Counter>,
    /// Logins (both protocols) refused without checking: too many failures, right passwords,
    /// or attempts at once.
    pub(super) logins_throttled: Counter,
    /// Commands and exchanges the store failed.
    pub(super) store_errors: Counter,
    /// Connections being served now.
    pub(super) active: Gauge,
    /// Password hashes waiting for a place now (read at each scrape).
    hash_queue: Gauge,
    /// Seconds password hashes have waited for a place, in all (read at each scrape).
    hash_wait: Counter<f64, AtomicU64>,
}

impl Metrics {
    /// Every figure at zero.
    pub(super) fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("ssl_server"),
            accepted: Counter::default(),
            refused: Family::default(),
            evicted: Counter::default(),
            handshakes: Family::default(),
            legacy: Family::default(),
            commands: Family::default(),
            logins_throttled: Counter::default(),
            store_errors: Counter::default(),
            active: Gauge::default(),
            hash_queue: Gauge::default(),
            hash_wait: Counter::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "connections_accepted",
            "Connections accepted into a place",
            metrics.accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once on arrival, by reason",
            metrics.refused.clone(),
        );
        registry.register(
            "connections_evicted",
            "Connections closed to make room before they sent a request",
            metrics.evicted.clone(),
        );
        registry.register(
            "handshakes",
            "TLS handshakes, by result",
            metrics.handshakes.clone(),
        );
        registry.register(
            "legacy_exchanges",
            "Legacy exchanges, by reply",
            metrics.legacy.clone(),
        );
        registry.register(
            "commands",
            "Account-protocol commands, by name and result code",
            metrics.commands.clone(),
        );
        registry.register(
            "logins_throttled",
            "Logins refused without checking the password: too many failures, right passwords \
             or attempts at once",
            metrics.logins_throttled.clone(),
        );
        registry.register(
            "store_errors",
            "Commands and exchanges the account store failed",
            metrics.store_errors.clone(),
        );
        registry.register(
            "connections_active",
            "Connections being served",
            metrics.active.clone(),
        );
        registry.register(
            "hash_queue",
            "Password hashes waiting for a place",
            metrics.hash_queue.clone(),
        );
        registry.register(
            "hash_wait_seconds",
            "Seconds password hashes have waited for a place",
            metrics.hash_wait.clone(),
        );
        metrics
    }

    /// One to the counter of `family` for `value` of its label `name`.
    pub(super) fn count(family: &Family<Label, Counter>, name: &'static str, value: &str) {
        family.get_or_create(&[(name, value.to_string())]).inc();
    }

    /// The figures in Prometheus's text format, the store's hash gate read now.
    fn render(&self, store: &AccountStore) -> String {
        let (queued, waited) = store.hash_gate_figures();
        self.hash_queue
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        let counted = self.hash_wait.get();
        self.hash_wait
            .inc_by((waited.as_secs_f64() - counted).max(0.0));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Serves `/metrics` and `/healthz` on `addr` until `shutdown`, on threads of their own;
    /// warns if others than this machine may reach it.
    pub(super) fn serve(
        self: &Arc<Self>,
        addr: SocketAddr,
        store: Arc<AccountStore>,
        shutdown: &Shutdown,
    ) -> Result<()> {
        if !addr.ip().is_loopback() {
            log::warn!(
                "--metrics is not on a loopback address ({addr}): whoever reaches it can read \
                 the server's figures and probe its store; let only the balancer and \
                 Prometheus reach it"
            );
        }
        let pinged = Arc::clone(&store);
        let health = HealthCheck::new(move || pinged.ping());
        let metrics = Arc::clone(self);
        let bound = http::serve(
            addr,
            Arc::new(move |path: &str| metrics.answer(path, &store, &health)),
            shutdown,
        )?;
        log::info!("metrics on http://{bound}/metrics");
        Ok(())
    }

    /// The answer to a `GET` of `path`.
    fn answer(&self, path: &str, store: &AccountStore, health: &Arc<HealthCheck>) -> Answer {
        match path {
            "/metrics" => Answer {
                status: Status::Ok,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body: self.render(store),
            },
            "/healthz" => match health.check() {
                Ok(()) => Answer::text(Status::Ok, "ok\n"),
                Err(why) => Answer::text(Status::ServiceUnavailable, why.body()),
            },
            _ => Answer::text(Status::NotFound, "/metrics or /healthz\n"),
        }
    }
}

/// A connection being served: one more in the `active` gauge while it lives.
pub(super) struct Active<'a>(&'a Metrics);

impl Active<'_> {
    /// Counts a connection in `metrics` until dropped.
    pub(super) fn of(metrics: &Metrics) -> Active<'_> {
        metrics.active.inc();
        Active(metrics)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.dec();
    }
}
