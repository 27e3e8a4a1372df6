//! Watching the server's process from /proc: its CPU time and its peak resident memory.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};

/// Watches a server process: its CPU time from the start, and its largest resident memory.
pub(super) struct ServerWatch {
    pid: u32,
    cpu_at_start: f64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: thread::JoinHandle<()>,
}

impl ServerWatch {
    /// Starts watching process `pid`.
    pub(super) fn start(pid: u32) -> Result<ServerWatch> {
        let cpu_at_start = cpu_seconds(pid)?;
        let peak_kib = Arc::new(AtomicU64::new(resident_kib(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak_kib, stop) = (peak_kib.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(kib) = resident_kib(pid) {
                        peak_kib.fetch_max(kib, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Ok(ServerWatch {
            pid,
            cpu_at_start,
            peak_kib,
            stop,
            sampler,
        })
    }

    /// CPU seconds used since the start, and the peak resident KiB.
    pub(super) fn finish(self) -> Result<(f64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.sampler.join();
        let cpu = cpu_seconds(self.pid)? - self.cpu_at_start;
        Ok((cpu, self.peak_kib.load(Ordering::Relaxed)))
    }
}

/// User and system CPU seconds of a process, all its threads (from /proc/PID/stat).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("cannot read {path}"), e))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(unreadable(&path, "the CPU time"));
    };
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((user + system) / per_second.max(1.0))
}

/// Resident memory of a process in KiB (VmRSS in /proc/PID/status).
fn resident_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("cannot read {path}"), e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| unreadable(&path, "VmRSS"))
}

/// A /proc file without the figure looked for.
fn unreadable(path: &str, what: &str) -> Error {
    Error::io(
        format!("cannot read {path}"),
        io::Error::new(io::ErrorKind::InvalidData, format!("no {what} in it")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_cpu_time_and_memory_can_be_read() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(resident_kib(pid).unwrap() > 0);
    }
}
