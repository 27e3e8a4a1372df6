//! Watching the server's processes from /proc: their CPU time and the peak resident memory.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};

/// Watches a server's processes: their CPU time from the start, summed (a server of several
/// processes, such as nginx's master and workers, counts whole), and the largest resident
/// memory of the first.
pub(super) struct ServerWatch {
    pids: Vec<u32>,
    cpu_at_start: f64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: thread::JoinHandle<()>,
}

impl ServerWatch {
    /// Starts watching processes `pids` (at least one; the memory is `pids[0]`'s).
    pub(super) fn start(pids: &[u32]) -> Result<ServerWatch> {
        let cpu_at_start = cpu_seconds(pids)?;
        let first = pids[0];
        let peak_kib = Arc::new(AtomicU64::new(resident_kib(first).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak_kib, stop) = (peak_kib.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(kib) = resident_kib(first) {
                        peak_kib.fetch_max(kib, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Ok(ServerWatch {
            pids: pids.to_vec(),
            cpu_at_start,
            peak_kib,
            stop,
            sampler,
        })
    }

    /// CPU seconds used since the start by all the processes, and the peak resident KiB.
    pub(super) fn finish(self) -> Result<(f64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.sampler.join();
        let cpu = cpu_seconds(&self.pids)? - self.cpu_at_start;
        Ok((cpu, self.peak_kib.load(Ordering::Relaxed)))
    }
}

/// User and system CPU seconds of processes `pids`, summed, all their threads (from
/// /proc/PID/stat).
fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    let mut ticks = 0.0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("cannot read {path}"), e))?;
        ticks += cpu_ticks(&stat).ok_or_else(|| unreadable(&path, "the CPU time"))?;
    }
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second.max(1.0))
}

/// User and system CPU time, in clock ticks, in the text of a /proc/PID/stat file.
fn cpu_ticks(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: count fields after its
    // last closing parenthesis.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(ticks(11)? + ticks(12)?)
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
        assert!(cpu_seconds(&[pid]).unwrap() >= 0.0);
        assert!(resident_kib(pid).unwrap() > 0);
    }

    #[test]
    fn the_cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        let stat = "4242 (nginx: worker (2)) S 4240 4240 4240 0 -1 4194624 99 0 0 0 \
                    17 5 0 0 20 0 1 0 123 4096 10 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(22.0));
        assert_eq!(cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(cpu_ticks("no command name"), None);
    }

    #[test]
    fn the_cpu_time_of_several_processes_is_summed() {
        // The same process twice counts twice: the sum lies between twice a reading before
        // and twice one after (CPU time only grows).
        let me = std::process::id();
        let before = cpu_seconds(&[me]).unwrap();
        let both = cpu_seconds(&[me, me]).unwrap();
        let after = cpu_seconds(&[me]).unwrap();
        assert!(
            2.0 * before <= both && both <= 2.0 * after,
            "{before} {both} {after}"
        );
    }

    #[test]
    fn a_process_that_is_gone_is_an_error_naming_its_file() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let e = cpu_seconds(&[std::process::id(), pid]).unwrap_err();
        assert!(e.to_string().contains(&format!("/proc/{pid}/stat")), "{e}");
    }
}
