//! The load generator behind `./bench`: N concurrent clients drive a TLS 1.2 server for a
//! duration or a count of operations, and it reports operations per second, latency
//! percentiles, errors by kind, the cipher suites negotiated and, given the server's process
//! ids, the server's CPU time per operation and its peak memory.
//!
//! Modes (`--mode`; one operation each):
//! - `full`: a full handshake and the legacy exchange (`--handshake-only`: no exchange, so
//!   any TLS 1.2 server can be measured);
//! - `resume`: a resumed handshake (the client's last session) and the legacy exchange
//!   (`--handshake-only` likewise);
//! - `login`: a full handshake, then `login` and `logout` in the account protocol;
//! - `session`: one persistent logged-in session per client, each operation a `view`;
//! - `update`: the same, each operation an `update` (one committed write);
//! - `idle`: hold `--connections` sessions open at once, then use each of them once;
//! - `hash`: no server: one PBKDF2-HMAC-SHA512 password hash at `--iterations`, the cost a
//!   login adds.
//!
//! Its parts: `options` (the command line, sharing the client's connection options),
//! `drivers` (the clients and their operations), `report` (the figures, as text and JSON) and
//! `proc_stat` (the server's CPU time and memory, from /proc).

mod drivers;
mod options;
mod proc_stat;
mod report;

use std::process::ExitCode;

use crate::client::connect::init_ctx;
use crate::error::{Error, Result};
use options::{BenchConfig, Workload};
use proc_stat::ServerWatch;
use report::Report;

/// The `bench` program.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = options::command_line(&args);
    let config = match options::parse_config(&cli, &args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match run(&config) {
        Ok(report) => {
            print!("{}", report.text());
            if let Some(path) = &config.json {
                let json = serde_json::to_string_pretty(&report).expect("figures serialise");
                if let Err(e) = std::fs::write(path, json + "\n") {
                    return cli.fail(&Error::io(format!("cannot write {}", path.display()), e));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => cli.fail(&e),
    }
}

/// Runs the benchmark.
fn run(config: &BenchConfig) -> Result<Report> {
    // Idle mode holds thousands of sockets.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    let connector = init_ctx(&config.connect)?;
    let server = match config.pids.as_slice() {
        [] => None,
        pids => Some(ServerWatch::start(pids)?),
    };
    let (measured, held) = if config.workload == Workload::Idle {
        let (measured, held) = drivers::hold_and_use(config, &connector);
        (measured, Some(held))
    } else {
        (drivers::drive(config, &connector), None)
    };
    let (cpu, peak) = match server {
        Some(watch) => {
            let (cpu, peak) = watch.finish()?;
            (Some(cpu), Some(peak))
        }
        None => (None, None),
    };
    Ok(measured.report(config, cpu, peak, held))
}
