//! When failed password checks and signups lead to refusals, whatever backend keeps the
//! counts.
//!
//! A failed password check (a login, or the current password given to `passwd` or `delete`)
//! is counted under three keys: the account name (whether or not the account exists, so a
//! refusal tells nothing), the name and client address together, and the address. Past a
//! threshold, attempts under that key are refused, without checking the password, for a time
//! that doubles with each further failure, up to a cap. Refused attempts are not counted, so
//! an attacker cannot keep anyone out longer than the cap; a success clears the name's and
//! the pair's counts and takes one off the address's.
//!
//! So that guessing from elsewhere cannot lock the owner out, a refusal of the name alone
//! does not apply at an address the account has logged in from before (a "known" address,
//! remembered for [`KNOWN_ADDRESS_DAYS`] after its last login): there the owner is limited by
//! the pair's and the address's counts only. Signups are counted per address, and never
//! taken back.

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
            first_block: Duration::from_secs(1),
            longest_block: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

/// How long an address stays known to an account after its last successful login there.
pub(crate) const KNOWN_ADDRESS_DAYS: u64 = 90;

/// The stored count of one key's failures. Times are seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FailureCount {
    /// Failures counted.
    pub(crate) failures: u32,
    /// When the last one was.
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

/// One attempt to count or forgive: its keys, under a policy, at a time (seconds since the
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
    /// Counts older than this many seconds start over.
    pub(crate) fn forget_after(&self) -> f64 {
        self.policy.forget_after.as_secs_f64()
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
}

/// The keys one attempt is counted under, each with its threshold.
pub(crate) struct ThrottleKeys {
    keys: Vec<(Counting, String, u32)>,
    /// The account name in lower case, if it is one an account can have.
    username: Option<String>,
    /// The client's address key.
    address: String,
}

impl ThrottleKeys {
    /// The keys of a password check for `username` from `from`: the name, the pair and the
    /// address. A name that no account can have is counted under its address only (the
    /// counts would fill with junk names).
    pub(crate) fn password_check(
        username: &str,
        from: IpAddr,
        policy: &ThrottlePolicy,
    ) -> ThrottleKeys {
        let address = address_key(from);
        let username = check_username(username)
            .ok()
            .map(|()| username.to_lowercase());
        let mut keys = Vec::new();
        if let Some(name) = &username {
            keys.push((Counting::Name, format!("user:{name}"), policy.per_account));
            keys.push((
                Counting::Pair,
                format!("pair:{name}@{address}"),
                policy.per_account,
            ));
        }
        keys.push((
            Counting::Address,
            format!("addr:{address}"),
            policy.per_address,
        ));
        ThrottleKeys {
            keys,
            username,
            address,
        }
    }

    /// The key of a signup from `from`.
    pub(crate) fn signup(from: IpAddr, policy: &ThrottlePolicy) -> ThrottleKeys {
        let address = address_key(from);
        ThrottleKeys {
            keys: vec![(
                Counting::Signup,
                format!("signup:{address}"),
                policy.signups_per_address,
            )],
            username: None,
            address,
        }
    }

    /// Every key with its threshold, in the order they are counted.
    pub(crate) fn counted(&self) -> impl Iterator<Item = (&str, u32)> {
        self.keys
            .iter()
            .map(|(_, key, threshold)| (key.as_str(), *threshold))
    }

    /// The name's key, whose refusal does not apply at an address the account knows.
    pub(crate) fn name_key(&self) -> Option<&str> {
        self.keys
            .iter()
            .find(|(counting, _, _)| *counting == Counting::Name)
            .map(|(_, key, _)| key.as_str())
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

    /// The keys a success clears: the name's and the pair's.
    pub(crate) fn cleared_on_success(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .filter(|(counting, _, _)| matches!(counting, Counting::Name | Counting::Pair))
            .map(|(_, key, _)| key.as_str())
    }

    /// The key a success lowers by one, with its threshold: the address's.
    pub(crate) fn lowered_on_success(&self) -> Option<(&str, u32)> {
        self.keys
            .iter()
            .find(|(counting, _, _)| *counting == Counting::Address)
            .map(|(_, key, threshold)| (key.as_str(), *threshold))
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

/// Counts `attempt` as a failure until it succeeds; gives the time until which attempts are
/// refused instead, counting nothing, if any key refuses (the name's refusal does not apply at
/// an address the account knows). Counts older than the policy's `forget_after` start over,
/// and are removed a few at a time.
pub(crate) fn count_attempt(
    counts: &mut dyn FailureCounts,
    attempt: &Attempt<'_>,
) -> Result<Option<f64>> {
    let (keys, now) = (attempt.keys, attempt.now);
    let forget_after = attempt.forget_after();
    let known = match keys.username() {
        Some(name) => counts.knows(name, keys.address(), attempt.known_since())?,
        None => false,
    };
    let mut blocked_until = 0f64;
    let mut next = Vec::new();
    for (key, threshold) in keys.counted() {
        let previous = counts.get(key)?;
        let failures = match previous {
            Some(p) if now - p.last_failure_at < forget_after => p.failures,
            _ => 0,
        };
        if !(known && keys.name_key() == Some(key)) {
            blocked_until = blocked_until.max(previous.map_or(0.0, |p| p.blocked_until));
        }
        next.push((key, threshold, failures.saturating_add(1)));
    }
    if blocked_until > now {
        return Ok(Some(blocked_until));
    }
    for (key, threshold, failures) in next {
        let blocked_until = attempt
            .policy
            .refusal_period(failures, threshold)
            .map_or(0.0, |d| now + d.as_secs_f64());
        let count = FailureCount {
            failures,
            last_failure_at: now,
            blocked_until,
        };
        counts.put(key, count)?;
    }
    counts.forget(now - forget_after, now, attempt.known_since())?;
    Ok(None)
}

/// Takes back the count of `attempt`, a password check that succeeded for account `id`: the
/// name's and the pair's counts are cleared, the address's lowered by one (and its refusal
/// lifted below the threshold); the address becomes known to the account.
pub(crate) fn forgive(
    counts: &mut dyn FailureCounts,
    attempt: &Attempt<'_>,
    id: AccountId,
) -> Result<()> {
    for key in attempt.keys.cleared_on_success() {
        counts.remove(key)?;
    }
    if let Some((key, threshold)) = attempt.keys.lowered_on_success()
        && let Some(mut count) = counts.get(key)?
    {
        count.failures = count.failures.saturating_sub(1);
        if count.failures < threshold {
            count.blocked_until = 0.0;
        }
        counts.put(key, count)?;
    }
    counts.remember(id, attempt.keys.address(), attempt.now)
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
