//! When password checks and signups lead to refusals, whatever backend keeps the counts.
//!
//! An attempt is counted before its slow hash, so that attempts sent at once cannot pass a
//! limit, and settled after it ([`settle`]) by what it came to:
//!
//! - A password check (a login, or the current password given to `passwd` or `delete`) is
//!   counted as a failure under three keys: the account name (whether or not the account
//!   exists, so a refusal tells nothing), the name and client address together, and the
//!   address. Past a threshold, attempts under that key are refused, without checking the
//!   password, for a time that doubles with each further failure, up to a cap. Refused attempts
//!   are not counted, so an attacker cannot keep anyone out longer than the cap.
//! - It is also counted as a success under two more keys, the name's and the address's, which
//!   allow a number of successful checks in each window of [`ThrottlePolicy::success_window`]
//!   (a minute): an account one owns cannot be used to keep the hashing threads busy.
//! - A check that fails takes back its success counts. One that succeeds takes back its own
//!   failure under the name and the address (no more: the owner's logins do not give a
//!   guesser elsewhere a fresh allowance), and clears the pair's count. One that was not made
//!   (the server was too busy to hash) takes back everything it counted.
//!
//! So that guessing from elsewhere cannot lock the owner out, a refusal of the name's failures
//! does not apply at an address the account has logged in from before (a "known" address,
//! remembered for [`KNOWN_ADDRESS_DAYS`] after its last login): there the owner is limited by
//! the pair's and the address's counts only. Signups are counted per address, and taken back
//! only when not made.

use std::net::IpAddr;
use std::time::Duration;

use super::AccountId;
use crate::address::address_key;
use crate::error::Result;
use crate::xml::account::check_username;

/// The thresholds and periods of throttling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThrottlePolicy {
    /// Failures for one account name, and for one name at one address, before refusals
    /// begin.
    pub(crate) per_account: u32,
    /// Failures from one address (an IPv6 /64) before refusals begin.
    pub(crate) per_address: u32,
    /// Signups from one address before refusals begin.
    pub(crate) signups_per_address: u32,
    /// Successful password checks for one account name in a [`Self::success_window`].
    pub(crate) successes_per_account: u32,
    /// Successful password checks from one address (an IPv6 /64) in a
    /// [`Self::success_window`].
    pub(crate) successes_per_address: u32,
    /// The window successful checks are counted in: the first check of a key starts it; past
    /// its limit, checks are refused until it ends.
    pub(crate) success_window: Duration,
    /// The first refusal period.
    pub(crate) first_block: Duration,
    /// The longest refusal period.
    pub(crate) longest_block: Duration,
    /// A count is forgotten after this long without failures.
    pub(crate) forget_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            per_account: 5,
            per_address: 20,
            signups_per_address: 20,
            successes_per_account: 10,
            successes_per_address: 30,
            success_window: Duration::from_secs(60),
            first_block: Duration::from_secs(1),
            longest_block: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

/// How long an address stays known to an account after its last successful login there.
pub(crate) const KNOWN_ADDRESS_DAYS: u64 = 90;

/// The stored count of one key. Times are seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FailureCount {
    /// Failures (or, for a key of successes, checks in the window) counted.
    pub(crate) failures: u32,
    /// When the last failure was (for a key of successes: when its window began).
    pub(crate) last_failure_at: f64,
    /// Attempts are refused until then (0 or past: not refused).
    pub(crate) blocked_until: f64,
}

/// How many stale counts (and known addresses) an attempt removes at most: old counts go a
/// few at a time, through an index on their time, never in one sweep of the whole table.
pub(crate) const PRUNE_BATCH: i64 = 32;

/// The counts as a backend keeps them, inside one of its transactions (SQLite's: the
/// PostgreSQL backend applies the same rules in SQL, in one statement).
pub(crate) trait FailureCounts {
    /// The count of `key`, if any.
    fn get(&mut self, key: &str) -> Result<Option<FailureCount>>;
    /// Sets the count of `key`.
    fn put(&mut self, key: &str, count: FailureCount) -> Result<()>;
    /// Removes the count of `key`.
    fn remove(&mut self, key: &str) -> Result<()>;
    /// Removes up to [`PRUNE_BATCH`] counts whose last failure was before `last_failure_before`
    /// and which refuse nothing after `now`, oldest first, and as many known addresses last
    /// used before `known_before`.
    fn forget(&mut self, last_failure_before: f64, now: f64, known_before: f64) -> Result<()>;
    /// Whether the account called `username` (in any letter case) has logged in from
    /// `address` (an address key) since `since`.
    fn knows(&mut self, username: &str, address: &str, since: f64) -> Result<bool>;
    /// Remembers that account `id` logged in from `address` at `now`.
    fn remember(&mut self, id: AccountId, address: &str, now: f64) -> Result<()>;
}

/// One attempt to count or settle: its keys, under a policy, at a time (seconds since the
/// Unix epoch).
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The thresholds and periods.
    pub(crate) policy: &'a ThrottlePolicy,
    /// The keys it is counted under.
    pub(crate) keys: &'a ThrottleKeys,
    /// When it is made.
    pub(crate) now: f64,
}

impl Attempt<'_> {
    /// Failure counts older than this many seconds start over.
    pub(crate) fn forget_after(&self) -> f64 {
        self.policy.forget_after.as_secs_f64()
    }

    /// Counts last changed before this time, and refusing nothing, may be removed: stale as
    /// failures, and their window of successes over.
    pub(crate) fn prune_before(&self) -> f64 {
        self.now
            - self
                .forget_after()
                .max(self.policy.success_window.as_secs_f64())
    }

    /// Addresses last used before this time are no longer known to the account.
    pub(crate) fn known_since(&self) -> f64 {
        self.now - (KNOWN_ADDRESS_DAYS * 86_400) as f64
    }
}

/// What a key counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counting {
    /// Failures for an account name.
    Name,
    /// Failures for an account name at one address.
    Pair,
    /// Failures from an address.
    Address,
    /// Signups from an address.
    Signup,
    /// Successful password checks for an account name, in windows.
    NameSuccesses,
    /// Successful password checks from an address, in windows.
    AddressSuccesses,
}

impl Counting {
    /// Whether the key counts successes in windows (else failures, or signups).
    fn of_successes(self) -> bool {
        matches!(self, Counting::NameSuccesses | Counting::AddressSuccesses)
    }

    /// Whether an attempt that came to `outcome` takes its count under this key back.
    fn taken_back(self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Passed(_) => matches!(self, Counting::Name | Counting::Address),
            Outcome::Failed => self.of_successes(),
            Outcome::Unchecked => true,
        }
    }
}

/// What limit refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Too many failures (or signups).
    Failures,
    /// Too many successful password checks in the window.
    Successes,
}

/// An attempt refused without being counted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Refusal {
    /// Attempts are refused until then (seconds since the Unix epoch).
    pub(crate) until: f64,
    /// The limit that refuses it longest.
    pub(crate) limit: Limit,
}

/// What a counted attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The password was right for this account.
    Passed(AccountId),
    /// The password was wrong, or the account does not exist.
    Failed,
    /// The password was not checked (or the signup not made): the server was busy.
    Unchecked,
}

/// One key an attempt is counted under.
struct Key {
    counting: Counting,
    key: String,
    threshold: u32,
}

/// The keys one attempt is counted under, each with its threshold.
pub(crate) struct ThrottleKeys {
    keys: Vec<Key>,
    /// The account name in lower case, if it is one an account can have.
    username: Option<String>,
    /// The client's address key.
    address: String,
    /// The window of the keys of successes, in seconds.
    window: f64,
}

impl ThrottleKeys {
    /// The keys of a password check for `username` from `from`: the name, the pair, the
    /// address, and the successes of the name and of the address. A name that no account can
    /// have is counted under its address only (the counts would fill with junk names).
    pub(crate) fn password_check(
        username: &str,
        from: IpAddr,
        policy: &ThrottlePolicy,
    ) -> ThrottleKeys {
        let address = address_key(from);
        let username = check_username(username)
            .ok()
            .map(|()| username.to_lowercase());
        let key = |counting, key, threshold| Key {
            counting,
            key,
            threshold,
        };
        let mut keys = Vec::new();
        if let Some(name) = &username {
            keys.push(key(
                Counting::Name,
                format!("user:{name}"),
                policy.per_account,
            ));
            keys.push(key(
                Counting::Pair,
                format!("pair:{name}@{address}"),
                policy.per_account,
            ));
            keys.push(key(
                Counting::NameSuccesses,
                format!("success:{name}"),
                policy.successes_per_account,
            ));
        }
        keys.push(key(
            Counting::Address,
            format!("addr:{address}"),
            policy.per_address,
        ));
        keys.push(key(
            Counting::AddressSuccesses,
            format!("success-addr:{address}"),
            policy.successes_per_address,
        ));
        ThrottleKeys {
            keys,
            username,
            address,
            window: policy.success_window.as_secs_f64(),
        }
    }

    /// The key of a signup from `from`.
    pub(crate) fn signup(from: IpAddr, policy: &ThrottlePolicy) -> ThrottleKeys {
        let address = address_key(from);
        ThrottleKeys {
            keys: vec![Key {
                counting: Counting::Signup,
                key: format!("signup:{address}"),
                threshold: policy.signups_per_address,
            }],
            username: None,
            address,
            window: policy.success_window.as_secs_f64(),
        }
    }

    /// Every key with its threshold and, for a key of successes, its window in seconds (0 for
    /// the others), in the order they are counted.
    pub(crate) fn counted(&self) -> impl Iterator<Item = (&str, u32, f64)> {
        self.keys.iter().map(|k| {
            let window = if k.counting.of_successes() {
                self.window
            } else {
                0.0
            };
            (k.key.as_str(), k.threshold, window)
        })
    }

    /// The name's key of failures, whose refusal does not apply at an address the account
    /// knows.
    pub(crate) fn name_key(&self) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.counting == Counting::Name)
            .map(|k| k.key.as_str())
    }

    /// The account name in lower case, if it is one an account can have: the only name
    /// ever looked up.
    pub(crate) fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The client's address key.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The keys an attempt that came to `outcome` clears: the pair's, after a success.
    pub(crate) fn cleared(&self, outcome: Outcome) -> impl Iterator<Item = &str> {
        let passed = matches!(outcome, Outcome::Passed(_));
        self.keys
            .iter()
            .filter(move |k| passed && k.counting == Counting::Pair)
            .map(|k| k.key.as_str())
    }

    /// The keys, each with its threshold, an attempt that came to `outcome` takes its count
    /// back from (and whose refusal is lifted if that brings them below the threshold).
    pub(crate) fn lowered(&self, outcome: Outcome) -> impl Iterator<Item = (&str, u32)> {
        self.keys
            .iter()
            .filter(move |k| k.counting.taken_back(outcome))
            .map(|k| (k.key.as_str(), k.threshold))
    }
}

impl ThrottlePolicy {
    /// How long attempts are refused after `failures` failures against `threshold`: none below
    /// it, then `first_block`, doubling with each further failure, up to `longest_block`.
    pub(crate) fn refusal_period(&self, failures: u32, threshold: u32) -> Option<Duration> {
        let over = failures.checked_sub(threshold)?;
        let period = self.first_block.saturating_mul(1 << over.min(20));
        Some(period.min(self.longest_block))
    }
}

/// Counts `attempt` (as a failure, and as a success under the keys of successes) until it is
/// settled; gives the refusal instead, counting nothing, if any key refuses (the name's
/// refusal of failures does not apply at an address the account knows). Failure counts older
/// than the policy's `forget_after` start over, a window of successes that ended starts anew;
/// stale counts are removed a few at a time.
pub(crate) fn count_attempt(
    counts: &mut dyn FailureCounts,
    attempt: &Attempt<'_>,
) -> Result<Option<Refusal>> {
    let (keys, now) = (attempt.keys, attempt.now);
    let forget_after = attempt.forget_after();
    let known = match keys.username() {
        Some(name) => counts.knows(name, keys.address(), attempt.known_since())?,
        None => false,
    };
    let mut refusal: Option<Refusal> = None;
    let mut next = Vec::new();
    for (key, threshold, window) in keys.counted() {
        let previous = counts.get(key)?;
        if let Some(p) = previous
            && p.blocked_until > now
            && !(known && keys.name_key() == Some(key))
            && refusal.is_none_or(|r| p.blocked_until > r.until)
        {
            let limit = if window > 0.0 {
                Limit::Successes
            } else {
                Limit::Failures
            };
            refusal = Some(Refusal {
                until: p.blocked_until,
                limit,
            });
        }
        next.push((key, threshold, window, previous));
    }
    if refusal.is_some() {
        return Ok(refusal);
    }
    for (key, threshold, window, previous) in next {
        let count = if window > 0.0 {
            next_window_count(previous, threshold, window, now)
        } else {
            let failures = match previous {
                Some(p) if now - p.last_failure_at < forget_after => p.failures,
                _ => 0,
            }
            .saturating_add(1);
            let blocked_until = attempt
                .policy
                .refusal_period(failures, threshold)
                .map_or(0.0, |d| now + d.as_secs_f64());
            FailureCount {
                failures,
                last_failure_at: now,
                blocked_until,
            }
        };
        counts.put(key, count)?;
    }
    counts.forget(attempt.prune_before(), now, attempt.known_since())?;
    Ok(None)
}

/// A key of successes with one more check at `now`: in the window that `previous` began,
/// unless it is over; refusing to the window's end once `limit` checks are in it.
fn next_window_count(
    previous: Option<FailureCount>,
    limit: u32,
    window: f64,
    now: f64,
) -> FailureCount {
    let (checks, began) = match previous {
        Some(p) if now - p.last_failure_at < window => {
            (p.failures.saturating_add(1), p.last_failure_at)
        }
        _ => (1, now),
    };
    FailureCount {
        failures: checks,
        last_failure_at: began,
        blocked_until: if checks >= limit { began + window } else { 0.0 },
    }
}

/// Settles `attempt`, counted by [`count_attempt`], by its `outcome`: the keys
/// [`ThrottleKeys::cleared`] names are removed, those [`ThrottleKeys::lowered`] names lowered
/// by one (their refusal lifted below their threshold; removed at none); after a success, the address becomes
/// known to the account.
pub(crate) fn settle(
    counts: &mut dyn FailureCounts,
    attempt: &Attempt<'_>,
    outcome: Outcome,
) -> Result<()> {
    for key in attempt.keys.cleared(outcome) {
        counts.remove(key)?;
    }
    for (key, threshold) in attempt.keys.lowered(outcome) {
        match counts.get(key)? {
            Some(count) if count.failures <= 1 => counts.remove(key)?,
            Some(mut count) => {
                count.failures -= 1;
                if count.failures < threshold {
                    count.blocked_until = 0.0;
                }
                counts.put(key, count)?;
            }
            None => {}
        }
    }
    match outcome {
        Outcome::Passed(id) => counts.remember(id, attempt.keys.address(), attempt.now),
        Outcome::Failed | Outcome::Unchecked => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_periods_double_up_to_the_cap() {
        let policy = ThrottlePolicy::default();
        let periods: Vec<Option<u64>> = (3..=15)
            .map(|n| policy.refusal_period(n, 5).map(|d| d.as_secs()))
            .collect();
        let expected = [None, None]
            .into_iter()
            .chain([1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300].map(Some))
            .collect::<Vec<_>>();
        assert_eq!(periods, expected);
        assert_eq!(
            policy.refusal_period(u32::MAX, 5),
            Some(policy.longest_block)
        );
    }
}
