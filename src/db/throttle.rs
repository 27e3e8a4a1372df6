//! When password checks and signups lead to refusals, whatever backend keeps the counts.
//!
//! An attempt is counted as in flight before its slow hash, under every key it concerns, so
//! that attempts sent at once cannot pass a limit: while a key's events and its attempts in
//! flight together reach its threshold, further attempts are refused ("at once"). After the
//! hash it is settled ([`settle`]) by what it came to, and only then is anything recorded:
//!
//! - A password check (a login, or the current password given to `passwd` or `delete`) that
//!   fails is recorded as a failure under three keys: the account name (whether or not the
//!   account exists, so a refusal tells nothing), the name and client address together, and
//!   the address. Past a threshold, attempts under that key are refused, without checking the
//!   password, for a time that doubles with each further failure, up to a cap. Refused
//!   attempts are not counted, so an attacker cannot keep anyone out longer than the cap.
//! - One that succeeds is recorded under two more keys, the name's and the address's, which
//!   allow a number of successful checks in each window of [`ThrottlePolicy::success_window`]
//!   (a minute): an account one owns cannot be used to keep the hashing threads busy. It
//!   clears the pair's failures, and no other: the owner's logins give a guesser elsewhere no
//!   new guesses, and do not renew a refusal.
//! - One that was not made (the server was too busy to hash) records nothing.
//! - A signup is recorded under its address, made or not, unless it was not made for want of
//!   a turn to hash.
//!
//! So that guessing from elsewhere cannot lock the owner out, a refusal of the name's failures
//! does not apply at an address the account has logged in from before (a "known" address,
//! remembered for [`KNOWN_ADDRESS_DAYS`] after its last login): there the owner is limited by
//! the pair's and the address's counts only. An attempt in flight that is never settled (its
//! server died) stops counting after [`ThrottlePolicy::pending_ttl`].

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
    /// How long an attempt in flight counts if it is never settled: longer than its wait for
    /// a turn to hash and the hash (the store sets it from its `hash_wait`).
    pub(crate) pending_ttl: Duration,
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
            pending_ttl: Duration::from_secs(70),
        }
    }
}

/// How long an address stays known to an account after its last successful login there.
pub(crate) const KNOWN_ADDRESS_DAYS: u64 = 90;

/// The stored count of one key. Times are seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct FailureCount {
    /// Failures (for a key of successes: successes in the window; of signups: signups)
    /// recorded.
    pub(crate) failures: u32,
    /// When the last failure was (for a key of successes: when its window began).
    pub(crate) last_failure_at: f64,
    /// Attempts are refused until then (0 or past: not refused).
    pub(crate) blocked_until: f64,
    /// Attempts counted and not yet settled.
    pub(crate) pending: u32,
    /// When the last of them was counted.
    pub(crate) pending_at: f64,
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
    /// Removes up to [`PRUNE_BATCH`] counts whose last failure and last attempt in flight were
    /// before `last_failure_before` and which refuse nothing after `now`, oldest first, and as
    /// many known addresses last used before `known_before`.
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

    /// Whether an attempt that came to `outcome` is recorded under this key.
    fn records(self, outcome: Outcome) -> bool {
        match (self, outcome) {
            (_, Outcome::Unchecked) => false,
            (Counting::Signup, _) => true,
            (Counting::NameSuccesses | Counting::AddressSuccesses, Outcome::Passed(_)) => true,
            (Counting::Name | Counting::Pair | Counting::Address, Outcome::Failed) => true,
            _ => false,
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
    /// Too many attempts under one key at once: with those in flight, the key's events would
    /// reach its threshold.
    AtOnce,
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
    /// The password was right for this account (or the signup was made).
    Passed(AccountId),
    /// The password was wrong, or the account does not exist (or the signup was refused).
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
        ThrottleKeys::with_address_keys(keys, username, address, policy)
    }

    /// The keys of a sign-in with a certificate as `username` from `from`: the address's
    /// failures and successes only (a certificate that is not enrolled is no guess of the
    /// account's password). The name, if one an account can have, is read, and the address
    /// becomes known to the account it signs in to.
    pub(crate) fn certificate(
        username: &str,
        from: IpAddr,
        policy: &ThrottlePolicy,
    ) -> ThrottleKeys {
        let username = check_username(username)
            .ok()
            .map(|()| username.to_lowercase());
        ThrottleKeys::with_address_keys(Vec::new(), username, address_key(from), policy)
    }

    /// `keys`, then the keys of the failures and the successes of `address`.
    fn with_address_keys(
        mut keys: Vec<Key>,
        username: Option<String>,
        address: String,
        policy: &ThrottlePolicy,
    ) -> ThrottleKeys {
        keys.push(Key {
            counting: Counting::Address,
            key: format!("addr:{address}"),
            threshold: policy.per_address,
        });
        keys.push(Key {
            counting: Counting::AddressSuccesses,
            key: format!("success-addr:{address}"),
            threshold: policy.successes_per_address,
        });
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
        self.keys.iter().map(|k| self.described(k))
    }

    /// The keys an attempt that came to `outcome` is recorded under, as [`Self::counted`]
    /// gives them.
    pub(crate) fn recorded(&self, outcome: Outcome) -> impl Iterator<Item = (&str, u32, f64)> {
        self.keys
            .iter()
            .filter(move |k| k.counting.records(outcome))
            .map(|k| self.described(k))
    }

    /// The keys whose failures an attempt that came to `outcome` clears: the pair's, after a
    /// success.
    pub(crate) fn cleared(&self, outcome: Outcome) -> impl Iterator<Item = &str> {
        let passed = matches!(outcome, Outcome::Passed(_));
        self.keys
            .iter()
            .filter(move |k| passed && k.counting == Counting::Pair)
            .map(|k| k.key.as_str())
    }

    /// A key, its threshold and its window (0 for a key of failures or signups).
    fn described<'a>(&self, k: &'a Key) -> (&'a str, u32, f64) {
        let window = if k.counting.of_successes() {
            self.window
        } else {
            0.0
        };
        (k.key.as_str(), k.threshold, window)
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

impl Attempt<'_> {
    /// The events of `count` that still count now, under a key of `window` (0: failures or
    /// signups, forgotten after `forget_after` without one).
    fn recent(&self, count: &FailureCount, window: f64) -> u32 {
        let span = if window > 0.0 {
            window
        } else {
            self.forget_after()
        };
        if self.now - count.last_failure_at < span {
            count.failures
        } else {
            0
        }
    }

    /// The attempts in flight of `count` that still count now.
    fn in_flight(&self, count: &FailureCount) -> u32 {
        if self.now - count.pending_at < self.policy.pending_ttl.as_secs_f64() {
            count.pending
        } else {
            0
        }
    }

    /// Whether `count`, of a key of `threshold` and `window`, refuses this attempt, and until
    /// when.
    fn refusal(&self, count: &FailureCount, threshold: u32, window: f64) -> Option<Refusal> {
        if count.blocked_until > self.now {
            let limit = if window > 0.0 {
                Limit::Successes
            } else {
                Limit::Failures
            };
            return Some(Refusal {
                until: count.blocked_until,
                limit,
            });
        }
        let pending = self.in_flight(count);
        (pending > 0 && self.recent(count, window).saturating_add(pending) >= threshold).then_some(
            Refusal {
                until: self.now + self.policy.first_block.as_secs_f64(),
                limit: Limit::AtOnce,
            },
        )
    }

    /// `count`, of a key of `threshold` and `window`, with this attempt's event recorded.
    fn record(&self, count: FailureCount, threshold: u32, window: f64) -> FailureCount {
        let events = self.recent(&count, window).saturating_add(1);
        let (last_failure_at, blocked_until) = if window > 0.0 {
            let began = if events > 1 {
                count.last_failure_at
            } else {
                self.now
            };
            let until = if events >= threshold {
                began + window
            } else {
                0.0
            };
            (began, until)
        } else {
            let until = self
                .policy
                .refusal_period(events, threshold)
                .map_or(0.0, |d| self.now + d.as_secs_f64());
            (self.now, until)
        };
        FailureCount {
            failures: events,
            last_failure_at,
            blocked_until,
            ..count
        }
    }
}

/// Counts `attempt` in flight under its keys until it is settled; gives the refusal instead,
/// counting nothing, if any key refuses: its refusal period runs, or its events and the
/// attempts in flight reach its threshold (the name's failures do not refuse at an address
/// the account knows). Of the refusals, the one that lasts longest (the first of those, in
/// the keys' order). A few stale counts are removed.
pub(crate) fn count_attempt(
    counts: &mut dyn FailureCounts,
    attempt: &Attempt<'_>,
) -> Result<Option<Refusal>> {
    let keys = attempt.keys;
    let known = match keys.username() {
        Some(name) => counts.knows(name, keys.address(), attempt.known_since())?,
        None => false,
    };
    let mut refusal: Option<Refusal> = None;
    let mut next = Vec::new();
    for (key, threshold, window) in keys.counted() {
        let count = counts.get(key)?.unwrap_or_default();
        if !(known && keys.name_key() == Some(key))
            && let Some(r) = attempt.refusal(&count, threshold, window)
            && refusal.is_none_or(|first| r.until > first.until)
        {
            refusal = Some(r);
        }
        next.push((key, count));
    }
    if refusal.is_some() {
        return Ok(refusal);
    }
    for (key, count) in next {
        let counted = FailureCount {
            pending: attempt.in_flight(&count).saturating_add(1),
            pending_at: attempt.now,
            ..count
        };
        counts.put(key, counted)?;
    }
    counts.forget(attempt.prune_before(), attempt.now, attempt.known_since())?;
    Ok(None)
}

/// Settles `attempt`, counted by [`count_attempt`], by its `outcome`: it is no longer in
/// flight under its keys; its event is recorded under those [`ThrottleKeys::recorded`] names;
/// the failures of those [`ThrottleKeys::cleared`] names are cleared; a count with neither
/// events nor attempts in flight is removed. After a successful password check, the address
/// becomes known to the account.
pub(crate) fn settle(
    counts: &mut dyn FailureCounts,
    attempt: &Attempt<'_>,
    outcome: Outcome,
) -> Result<()> {
    let keys = attempt.keys;
    for (key, threshold, window) in keys.counted() {
        let Some(mut count) = counts.get(key)? else {
            continue; // cleared by the operator meanwhile
        };
        count.pending = attempt.in_flight(&count).saturating_sub(1);
        if keys.recorded(outcome).any(|(k, _, _)| k == key) {
            count = attempt.record(count, threshold, window);
        }
        if keys.cleared(outcome).any(|k| k == key) {
            count = FailureCount {
                pending: count.pending,
                pending_at: count.pending_at,
                ..FailureCount::default()
            };
        }
        if count.failures == 0 && count.pending == 0 {
            counts.remove(key)?;
        } else {
            counts.put(key, count)?;
        }
    }
    match (outcome, keys.username()) {
        (Outcome::Passed(id), Some(_)) => counts.remember(id, keys.address(), attempt.now),
        _ => Ok(()),
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
