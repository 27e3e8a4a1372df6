//! Events that come in floods (refused, evicted and failed connections, and connections from
//! a trusted proxy without a valid PROXY header) logged as a summary: per kind and reason, at
//! most one line a second, saying how many connections from how many addresses. Each event is
//! also logged on its own at debug level (`-vv`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::listener::Shutdown;
use crate::error::{Error, Result};

/// How often the summaries are written.
const PERIOD: Duration = Duration::from_secs(1);
/// The most distinct addresses remembered per summary line.
const MAX_ADDRESSES: usize = 10_000;

/// What happened to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum FloodEvent {
    /// Closed at once on arrival.
    Refused,
    /// Closed to make room before it sent a request.
    Evicted,
    /// Its TLS handshake failed.
    HandshakeFailed,
    /// It sent no request.
    NoRequest,
    /// It came from a trusted proxy (`--proxy-protocol-from`) without a valid PROXY header.
    NoProxyHeader,
}

/// How many connections, from which addresses.
#[derive(Default)]
struct Tally {
    connections: u64,
    addresses: HashSet<String>,
}

/// The events since the last summary, by kind and reason.
#[derive(Default)]
pub(super) struct FloodLog(Mutex<BTreeMap<(FloodEvent, String), Tally>>);

impl FloodLog {
    /// Counts one event for a connection from `address` (an `address_key`); `reason` says
    /// why, in words.
    pub(super) fn record(&self, event: FloodEvent, reason: &str, address: String) {
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tally = pending.entry((event, reason.to_string())).or_default();
        tally.connections += 1;
        if tally.addresses.len() < MAX_ADDRESSES {
            tally.addresses.insert(address);
        }
    }

    /// Writes one line per kind and reason counted since the last call, and forgets them.
    pub(super) fn flush(&self) {
        let pending = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for ((event, reason), tally) in pending {
            log::warn!("{}", summary(event, &reason, &tally));
        }
    }

    /// Flushes every [`PERIOD`] until `shutdown`, and once more then.
    pub(super) fn flush_periodically(self: &Arc<Self>, shutdown: &Shutdown) -> Result<()> {
        let (log, shutdown) = (Arc::clone(self), shutdown.clone());
        thread::Builder::new()
            .name("flood log".into())
            .spawn(move || {
                while !shutdown.wait(PERIOD) {
                    log.flush();
                }
                log.flush();
            })
            .map(drop)
            .map_err(|e| Error::io("cannot start the log summary thread", e))
    }
}

/// One summary line.
fn summary(event: FloodEvent, reason: &str, tally: &Tally) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let counted = tally.addresses.len() as u64;
    let addresses = if counted >= MAX_ADDRESSES as u64 {
        format!("{counted} or more addresses")
    } else {
        plural(counted, "address", "addresses")
    };
    let connections = plural(tally.connections, "connection", "connections");
    match event {
        FloodEvent::Refused => format!("refused {connections} from {addresses}: {reason}"),
        FloodEvent::Evicted => format!("closed {connections} from {addresses}: {reason}"),
        FloodEvent::HandshakeFailed => {
            format!("TLS handshake failed: {reason} ({connections} from {addresses})")
        }
        FloodEvent::NoRequest => {
            format!("no request read: {reason} ({connections} from {addresses})")
        }
        FloodEvent::NoProxyHeader => {
            format!("no valid PROXY header: {reason} ({connections} from {addresses})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_connections_and_addresses() {
        let log = FloodLog::default();
        for last in [1, 1, 2, 3] {
            log.record(
                FloodEvent::HandshakeFailed,
                "timed out",
                format!("127.0.0.{last}"),
            );
        }
        log.record(FloodEvent::Refused, "full", "127.0.0.9".into());
        let pending = log.0.lock().unwrap();
        let lines: Vec<String> = pending
            .iter()
            .map(|((event, reason), tally)| summary(*event, reason, tally))
            .collect();
        assert_eq!(
            lines,
            [
                "refused 1 connection from 1 address: full",
                "TLS handshake failed: timed out (4 connections from 3 addresses)",
            ]
        );
    }
}
