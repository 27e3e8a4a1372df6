//! The gate every password hash passes: at most N hashes at once, each caller waiting a
//! bounded time for its turn. Checking a password (someone logging in) goes before making a
//! new hash (a signup, a new password), and new hashes may take all places but one, so a
//! flood of signups cannot make logins wait. Among hashes of one kind, a client's first in
//! the gate goes before any client's second, its second before any third, and so on (in
//! arrival order among equals): a client with many hashes queued makes another client wait
//! for at most one of them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a hash is for, which decides its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashTurn {
    /// Checking a password: a login, or the password that confirms `passwd` or `delete`.
    /// Served before any [`HashTurn::Create`].
    Check,
    /// Making the hash of a new password: a signup or `passwd`'s new password.
    Create,
}

/// Caps how many password hashes are computed at once, so that a flood of logins or signups
/// cannot take every core from handshakes and other commands. Waiters of each kind are
/// served by their client's rank, then in arrival order, and give up after a bounded wait.
/// (Per process: each server instance has its own.)
pub(crate) struct HashGate {
    permits: usize,
    /// Places [`HashTurn::Create`] hashes may hold at once: all but one, when there are two
    /// or more.
    create_permits: usize,
    max_wait: Duration,
    state: Mutex<GateState>,
    turn: Condvar,
}

/// A waiter's place in its queue: its rank (how many hashes of its client were in the gate
/// when it came), then its arrival.
type Ticket = (usize, u64);

#[derive(Default)]
struct GateState {
    /// How long hashes have waited for a place, in all.
    waited: Duration,
    running: usize,
    running_creates: usize,
    checks: BTreeSet<Ticket>,
    creates: BTreeSet<Ticket>,
    next_ticket: u64,
    /// How many hashes each client has in the gate, waiting or running.
    in_gate: HashMap<String, usize>,
}

impl GateState {
    /// Whether the caller holding `ticket` for `turn` may start now.
    fn may_start(&self, ticket: Ticket, turn: HashTurn, gate: &HashGate) -> bool {
        if self.running >= gate.permits {
            return false;
        }
        match turn {
            HashTurn::Check => self.checks.first() == Some(&ticket),
            HashTurn::Create => {
                self.checks.is_empty()
                    && self.creates.first() == Some(&ticket)
                    && self.running_creates < gate.create_permits
            }
        }
    }

    fn queue(&mut self, turn: HashTurn) -> &mut BTreeSet<Ticket> {
        match turn {
            HashTurn::Check => &mut self.checks,
            HashTurn::Create => &mut self.creates,
        }
    }

    /// A new ticket for a hash of `client`, counted in the gate.
    fn enter(&mut self, client: &str) -> Ticket {
        let in_gate = self.in_gate.entry(client.to_string()).or_default();
        let ticket = (*in_gate, self.next_ticket);
        *in_gate += 1;
        self.next_ticket += 1;
        ticket
    }

    /// A hash of `client` leaves the gate.
    fn leave(&mut self, client: &str) {
        if let Some(in_gate) = self.in_gate.get_mut(client) {
            *in_gate -= 1;
            if *in_gate == 0 {
                self.in_gate.remove(client);
            }
        }
    }
}

/// The gate's wait ran out: the server is busy hashing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy;

impl HashGate {
    /// At most `permits` hashes at once; a caller waits at most `max_wait` for its turn.
    pub(crate) fn new(permits: usize, max_wait: Duration) -> HashGate {
        let permits = permits.max(1);
        HashGate {
            permits,
            create_permits: (permits - 1).max(1),
            max_wait,
            state: Mutex::new(GateState::default()),
            turn: Condvar::new(),
        }
    }

    /// Runs `hash`, for `client` (its address key; `""` for the operator), when a place is
    /// free for `turn` and the callers of its kind before this one have theirs.
    pub(crate) fn run<T>(
        &self,
        turn: HashTurn,
        client: &str,
        hash: impl FnOnce() -> T,
    ) -> Result<T, Busy> {
        let asked = Instant::now();
        let deadline = asked + self.max_wait;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = state.enter(client);
        state.queue(turn).insert(ticket);
        while !state.may_start(ticket, turn, self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.queue(turn).remove(&ticket);
                state.leave(client);
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
        state.queue(turn).remove(&ticket);
        state.waited += asked.elapsed();
        state.running += 1;
        if turn == HashTurn::Create {
            state.running_creates += 1;
        }
        drop(state);
        self.turn.notify_all(); // the next in line may have a place too
        let _place = Place(self, turn, client);
        Ok(hash())
    }
}

impl HashGate {
    /// How many hashes wait for a place now, and how long hashes have waited, in all.
    pub(crate) fn figures(&self) -> (usize, Duration) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.checks.len() + state.creates.len(), state.waited)
    }
}

/// A running hash's place in the gate, for a client; freed when dropped (also on panic).
struct Place<'a>(&'a HashGate, HashTurn, &'a str);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running -= 1;
        if self.1 == HashTurn::Create {
            state.running_creates -= 1;
        }
        state.leave(self.2);
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
                    gate.run(HashTurn::Check, "", || {
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
            std::thread::spawn(move || {
                gate.run(HashTurn::Check, "", || {
                    std::thread::sleep(Duration::from_millis(600))
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(gate.run(HashTurn::Check, "", || ()), Err(Busy));
        assert_eq!(holder.join().unwrap(), Ok(()));
        assert_eq!(
            gate.run(HashTurn::Check, "", || 7),
            Ok(7),
            "a timed-out waiter must leave the queue"
        );
    }

    #[test]
    fn checks_go_before_creates_and_creates_leave_a_place() {
        use std::sync::mpsc;
        let gate = Arc::new(HashGate::new(2, Duration::from_secs(30)));
        let (started, order) = mpsc::channel();
        let (release, hold) = mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        // A flood of creates: only one runs at a time, and holds its place.
        let mut threads = Vec::new();
        for n in 0..4 {
            let (gate, started, hold) = (gate.clone(), started.clone(), hold.clone());
            threads.push(std::thread::spawn(move || {
                gate.run(HashTurn::Create, "", || {
                    started.send(format!("create {n}")).unwrap();
                    let _ = hold.lock().unwrap().recv();
                })
            }));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(order.recv().unwrap().starts_with("create"));
        // A check does not wait behind the queued creates: the spare place is its.
        let check = {
            let (gate, started) = (gate.clone(), started.clone());
            std::thread::spawn(move || {
                gate.run(HashTurn::Check, "", || {
                    started.send("check".to_string()).unwrap()
                })
            })
        };
        assert_eq!(
            order.recv_timeout(Duration::from_secs(10)).unwrap(),
            "check"
        );
        check.join().unwrap().unwrap();
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }

    #[test]
    fn a_clients_first_hash_goes_before_anothers_second() {
        use std::sync::mpsc;
        let gate = Arc::new(HashGate::new(1, Duration::from_secs(30)));
        let (started, order) = mpsc::channel();
        let (release, hold) = mpsc::channel::<()>();
        let holder = {
            let (gate, started) = (gate.clone(), started.clone());
            std::thread::spawn(move || {
                gate.run(HashTurn::Check, "many", || {
                    started.send("many 1".to_string()).unwrap();
                    let _ = hold.recv();
                })
            })
        };
        assert_eq!(order.recv().unwrap(), "many 1");
        // Two more of one client's, then another client's first: that one goes next.
        let mut threads = Vec::new();
        for (client, n) in [("many", 2), ("many", 3), ("one", 1)] {
            let (gate, started) = (gate.clone(), started.clone());
            threads.push(std::thread::spawn(move || {
                gate.run(HashTurn::Check, client, || {
                    started.send(format!("{client} {n}")).unwrap()
                })
            }));
            std::thread::sleep(Duration::from_millis(50));
        }
        release.send(()).unwrap();
        let rest: Vec<String> = (0..3).map(|_| order.recv().unwrap()).collect();
        assert_eq!(rest, ["one 1", "many 2", "many 3"]);
        holder.join().unwrap().unwrap();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(gate.state.lock().unwrap().in_gate.len(), 0);
    }
}
