//! `/healthz`'s question to the account store: does it answer within [`HEALTH_WAIT`]? At most
//! one ping is in flight however many probes come; a probe that comes while one runs waits
//! for its result. A store that hangs so keeps one thread, not one per probe. What went wrong
//! goes to the log; whoever asks learns only that the store fails or does not answer.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::error::Result;

/// How long a probe waits for the store: less than a second, so that the answer, 503
/// included, comes within one.
const HEALTH_WAIT: Duration = Duration::from_millis(800);

/// The store's health, as probes ask it.
pub(super) struct HealthCheck {
    ping: Box<dyn Fn() -> Result<()> + Send + Sync>,
    pings: Mutex<Pings>,
    ended: Condvar,
}

/// The pings so far.
struct Pings {
    /// Whether one runs now.
    running: bool,
    /// How many have ended.
    ended: u64,
    /// How the last one ended: the store's error in words if it failed.
    last: std::result::Result<(), String>,
}

/// Why the store is not healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unhealthy {
    /// It answered with an error.
    Fails,
    /// It did not answer in time.
    Silent,
}

impl Unhealthy {
    /// What `/healthz` says: no more than this, the details being in the log.
    pub(super) fn body(self) -> &'static str {
        match self {
            Unhealthy::Fails => "the account store fails\n",
            Unhealthy::Silent => "the account store does not answer\n",
        }
    }
}

impl HealthCheck {
    /// A check that asks the store with `ping`.
    pub(super) fn new(ping: impl Fn() -> Result<()> + Send + Sync + 'static) -> Arc<HealthCheck> {
        Arc::new(HealthCheck {
            ping: Box::new(ping),
            pings: Mutex::new(Pings {
                running: false,
                ended: 0,
                last: Ok(()),
            }),
            ended: Condvar::new(),
        })
    }

    /// Whether the store answers within [`HEALTH_WAIT`]; if not, why (logged with the
    /// store's own words).
    pub(super) fn check(self: &Arc<Self>) -> std::result::Result<(), Unhealthy> {
        self.check_within(HEALTH_WAIT)
    }

    /// As [`HealthCheck::check`], waiting up to `wait`: for the ping in flight if there is
    /// one, else for a new one.
    fn check_within(self: &Arc<Self>, wait: Duration) -> std::result::Result<(), Unhealthy> {
        let mut pings = self.lock();
        let awaited = pings.ended + 1;
        if !pings.running {
            let check = Arc::clone(self);
            let started = thread::Builder::new()
                .name("healthz ping".into())
                .spawn(move || check.ping_now());
            if let Err(e) = started {
                log::warn!("/healthz: cannot start a thread to ask the account store: {e}");
                return Err(Unhealthy::Silent);
            }
            pings.running = true;
        }
        let (pings, waited) = self
            .ended
            .wait_timeout_while(pings, wait, |pings| pings.ended < awaited)
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            log::warn!(
                "/healthz: the account store does not answer within {} ms",
                wait.as_millis()
            );
            return Err(Unhealthy::Silent);
        }
        pings.last.as_ref().map_err(|why| {
            log::warn!("/healthz: the account store fails: {why}");
            Unhealthy::Fails
        })?;
        Ok(())
    }

    /// Pings the store and tells the probes waiting.
    fn ping_now(&self) {
        let outcome = (self.ping)().map_err(|e| e.to_string());
        let mut pings = self.lock();
        pings.running = false;
        pings.ended += 1;
        pings.last = outcome;
        drop(pings);
        self.ended.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Pings> {
        self.pings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn a_store_that_answers_is_healthy() {
        let check = HealthCheck::new(|| Ok(()));
        assert_eq!(check.check(), Ok(()));
        assert_eq!(check.check(), Ok(()), "a second ping");
    }

    #[test]
    fn a_failing_store_is_said_to_fail_without_its_words() {
        let check = HealthCheck::new(|| Err(Error::Config("password for secret@db".into())));
        assert_eq!(check.check(), Err(Unhealthy::Fails));
        assert_eq!(Unhealthy::Fails.body(), "the account store fails\n");
    }

    #[test]
    fn probes_of_a_hung_store_share_one_ping() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, hung) = mpsc::channel::<()>();
        let hung = Mutex::new(hung);
        let check = HealthCheck::new({
            let calls = Arc::clone(&calls);
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = hung.lock().unwrap().recv();
                Ok(())
            }
        });
        let probes: Vec<_> = (0..20)
            .map(|_| {
                let check = Arc::clone(&check);
                thread::spawn(move || check.check_within(Duration::from_millis(100)))
            })
            .collect();
        for probe in probes {
            assert_eq!(probe.join().unwrap(), Err(Unhealthy::Silent));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one ping for twenty probes"
        );
        // The store answers again (every ping returns at once): the next probe gets that
        // ping's answer or a new one's.
        drop(release);
        assert_eq!(check.check(), Ok(()));
    }
}
