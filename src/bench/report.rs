//! The figures of a run: what the clients measured, and the report made of it, as text and
//! as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::options::{BenchConfig, Workload};

/// The figures of one run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// What was measured.
    pub(crate) mode: Workload,
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Operations that succeeded.
    pub(crate) operations: u64,
    /// Wall-clock seconds.
    pub(crate) seconds: f64,
    /// Successful operations per second.
    pub(crate) ops_per_second: f64,
    /// Latency percentiles of successful operations, in milliseconds.
    pub(crate) latency_ms: Latency,
    /// Failed operations by kind.
    pub(crate) errors: BTreeMap<String, u64>,
    /// The server's CPU seconds per successful operation (with `--pid`).
    pub(crate) server_cpu_ms_per_op: Option<f64>,
    /// The server's CPU seconds during the run (with `--pid`).
    pub(crate) server_cpu_seconds: Option<f64>,
    /// The server's largest resident memory seen during the run, in KiB (with `--pid`).
    pub(crate) server_peak_rss_kib: Option<u64>,
    /// `idle` mode: sessions held open at once.
    pub(crate) held: Option<usize>,
    /// `full` and `resume` modes: handshakes by the cipher suite negotiated (OpenSSL's name),
    /// to check that servers compared side by side did the same work.
    pub(crate) ciphers: BTreeMap<String, u64>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Latency {
    /// Median.
    pub(crate) p50: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// Largest.
    pub(crate) max: f64,
}

/// What the clients measured.
#[derive(Default)]
pub(super) struct Measured {
    /// The latency of each successful operation, in microseconds.
    pub(super) latencies_us: Vec<u64>,
    /// Failed operations by kind.
    pub(super) errors: BTreeMap<String, u64>,
    /// Handshakes by the cipher suite negotiated.
    pub(super) ciphers: BTreeMap<String, u64>,
    /// How long the run took.
    pub(super) elapsed: Duration,
}

impl Measured {
    /// Adds `other`'s figures to these.
    pub(super) fn merge(&mut self, other: Measured) {
        self.latencies_us.extend(other.latencies_us);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (cipher, n) in other.ciphers {
            *self.ciphers.entry(cipher).or_default() += n;
        }
    }

    /// The report of a run of `config`, with the server's CPU seconds and peak memory and
    /// the sessions held, where measured.
    pub(super) fn report(
        mut self,
        config: &BenchConfig,
        cpu: Option<f64>,
        peak: Option<u64>,
        held: Option<usize>,
    ) -> Report {
        self.latencies_us.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let at = |q: f64| {
            let n = self.latencies_us.len();
            if n == 0 {
                0.0
            } else {
                ms(self.latencies_us[((n as f64 * q).ceil() as usize).clamp(1, n) - 1])
            }
        };
        let operations = self.latencies_us.len() as u64;
        let seconds = self.elapsed.as_secs_f64();
        Report {
            mode: config.workload,
            clients: config.clients,
            operations,
            seconds,
            ops_per_second: operations as f64 / seconds.max(1e-9),
            latency_ms: Latency {
                p50: at(0.50),
                p99: at(0.99),
                max: at(1.0),
            },
            errors: self.errors,
            server_cpu_ms_per_op: cpu.map(|c| c * 1000.0 / operations.max(1) as f64),
            server_cpu_seconds: cpu,
            server_peak_rss_kib: peak,
            held,
            ciphers: self.ciphers,
        }
    }
}

impl Report {
    /// The figures as text, one line each.
    pub(crate) fn text(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!(
            "mode          {}\nclients       {}\noperations    {} in {:.2} s: {:.1} per second\n\
             latency       p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\nerrors        {errors}\n",
            self.mode.name(),
            self.clients,
            self.operations,
            self.seconds,
            self.ops_per_second,
            self.latency_ms.p50,
            self.latency_ms.p99,
            self.latency_ms.max,
        );
        if !self.ciphers.is_empty() {
            let ciphers = self
                .ciphers
                .iter()
                .map(|(cipher, n)| format!("{cipher} ({n} handshakes)"))
                .collect::<Vec<_>>()
                .join(", ");
            out += &format!("cipher suite  {ciphers}\n");
        }
        if let Some(held) = self.held {
            out += &format!("held open     {held} sessions at once\n");
        }
        if let (Some(per_op), Some(total)) = (self.server_cpu_ms_per_op, self.server_cpu_seconds) {
            out += &format!("server CPU    {per_op:.3} ms per operation ({total:.2} s in all)\n");
        }
        if let Some(peak) = self.server_peak_rss_kib {
            out += &format!(
                "server memory peak {:.1} MiB resident\n",
                peak as f64 / 1024.0
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::connect::ConnectOptions;

    #[test]
    fn percentiles() {
        let outcome = Measured {
            latencies_us: (1..=1000).rev().map(|n| n * 1000).collect(),
            errors: BTreeMap::new(),
            ciphers: BTreeMap::from([("ECDHE-RSA-AES256-GCM-SHA384".into(), 1000)]),
            elapsed: Duration::from_secs(2),
        };
        let config = BenchConfig {
            connect: ConnectOptions {
                host: "h".into(),
                port: 1,
                cafiles: Vec::new(),
                insecure: false,
                cert: None,
                timeout: Duration::from_secs(1),
                reuse_session: None,
            },
            workload: Workload::Full,
            handshake_only: false,
            iterations: 1000,
            clients: 4,
            duration: Duration::from_secs(2),
            count: None,
            user: "u".into(),
            password: "p".into(),
            connections: 1,
            pids: Vec::new(),
            json: None,
        };
        let report = outcome.report(&config, Some(1.0), Some(2048), None);
        assert_eq!(report.operations, 1000);
        assert_eq!(report.ops_per_second, 500.0);
        assert_eq!(report.latency_ms.p50, 500.0);
        assert_eq!(report.latency_ms.p99, 990.0);
        assert_eq!(report.latency_ms.max, 1000.0);
        assert_eq!(report.server_cpu_ms_per_op, Some(1.0));
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"mode\":\"full\""), "{json}");
        assert!(
            report
                .text()
                .contains("cipher suite  ECDHE-RSA-AES256-GCM-SHA384 (1000 handshakes)\n"),
            "{}",
            report.text()
        );
    }
}
