//! The gate every password hash passes: at most N hashes at once, in arrival order, each
//! caller waiting a bounded time for its turn.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Caps how many password hashes are computed at once, so that a flood of logins or signups
/// cannot take every core from handshakes and other commands. Waiters are served in arrival
/// order and give up after a bounded wait. (Per process: each server instance has its own.)
pub(crate) struct HashGate {
    permits: usize,
    max_wait: Duration,
    state: Mutex<GateState>,
    turn: Condvar,
}

#[derive(Default)]
struct GateState {
    running: usize,
    waiting: VecDeque<u64>,
    next_ticket: u64,
}

/// The gate's wait ran out: the server is busy hashing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy;

impl HashGate {
    /// At most `permits` hashes at once; a caller waits at most `max_wait` for its turn.
    pub(crate) fn new(permits: usize, max_wait: Duration) -> HashGate {
        HashGate {
            permits: permits.max(1),
            max_wait,
            state: Mutex::new(GateState::default()),
            turn: Condvar::new(),
        }
    }

    /// Runs `hash` when a place is free and the callers before this one have theirs.
    pub(crate) fn run<T>(&self, hash: impl FnOnce() -> T) -> Result<T, Busy> {
        let deadline = Instant::now() + self.max_wait;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(ticket);
        while !(state.running < self.permits && state.waiting.front() == Some(&ticket)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.waiting.retain(|&t| t != ticket);
                drop(state);
                self.turn.notify_all();
                return Err(Busy);
            }
            state = self
                .turn
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.waiting.pop_front();
        state.running += 1;
        drop(state);
        self.turn.notify_all(); // the next in line may have a place too
        let _place = Place(self);
        Ok(hash())
    }
}

/// A running hash's place in the gate; freed when dropped (also on panic).
struct Place<'a>(&'a HashGate);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running -= 1;
        drop(state);
        self.0.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_gate_caps_concurrency_and_serves_in_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = Arc::new(HashGate::new(2, Duration::from_secs(30)));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    gate.run(|| {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Ok(()));
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wait_past_the_limit_is_busy() {
        let gate = Arc::new(HashGate::new(1, Duration::from_millis(100)));
        let holder = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.run(|| std::thread::sleep(Duration::from_millis(600))))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(gate.run(|| ()), Err(Busy));
        assert_eq!(holder.join().unwrap(), Ok(()));
        assert_eq!(
            gate.run(|| 7),
            Ok(7),
            "a timed-out waiter must leave the queue"
        );
    }
}
