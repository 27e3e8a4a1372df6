//! When failed logins lead to refusals, whatever backend keeps the counts.
//!
//! Failures are counted per account name (whether or not the account exists, so a refusal
//! tells nothing) and per client address; past a threshold, logins for that name or from that
//! address are refused for a time that doubles with each further failure, up to a cap.
//! Refused attempts are not counted, so an attacker cannot keep the owner out longer than the
//! cap; a success clears the name's count and takes one off the address's.

use std::net::IpAddr;
use std::time::Duration;

use crate::address::address_key;
use crate::error::Result;
use crate::xml::account::check_username;

/// The thresholds and periods of login throttling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThrottlePolicy {
    /// Failures for one account name before refusals begin.
    pub(crate) per_account: u32,
    /// Failures from one address (an IPv6 /64) before refusals begin.
    pub(crate) per_address: u32,
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
            first_block: Duration::from_secs(1),
            longest_block: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

/// The stored count of one key's failed logins. Times are seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FailureCount {
    /// Failures counted.
    pub(crate) failures: u32,
    /// When the last one was.
    pub(crate) last_failure_at: f64,
    /// Logins are refused until then (0 or past: not refused).
    pub(crate) blocked_until: f64,
}

/// The failed-login counts as a backend keeps them, inside one of its transactions.
pub(crate) trait FailureCounts {
    /// The count of `key`, if any.
    fn get(&mut self, key: &str) -> Result<Option<FailureCount>>;
    /// Sets the count of `key`.
    fn put(&mut self, key: &str, count: FailureCount) -> Result<()>;
    /// Removes the count of `key`.
    fn remove(&mut self, key: &str) -> Result<()>;
    /// Removes every count whose last failure was before `last_failure_before` and which
    /// refuses nothing after `now`.
    fn forget(&mut self, last_failure_before: f64, now: f64) -> Result<()>;
}

/// The keys one login attempt is counted under.
pub(crate) struct ThrottleKeys {
    /// `user:<name in lower case>`; none for a name that no account can have (the counts
    /// would fill with junk names), though its address is counted.
    name: Option<String>,
    /// `addr:<address>`.
    address: String,
    per_account: u32,
    per_address: u32,
}

impl ThrottleKeys {
    /// The keys of an attempt by `username` from `from`, with `policy`'s thresholds.
    pub(crate) fn new(username: &str, from: IpAddr, policy: &ThrottlePolicy) -> ThrottleKeys {
        ThrottleKeys {
            name: check_username(username)
                .ok()
                .map(|()| format!("user:{}", username.to_lowercase())),
            address: format!("addr:{}", address_key(from)),
            per_account: policy.per_account,
            per_address: policy.per_address,
        }
    }

    /// Each key with its threshold.
    fn counted(&self) -> impl Iterator<Item = (&str, u32)> {
        self.name
            .iter()
            .map(|key| (key.as_str(), self.per_account))
            .chain([(self.address.as_str(), self.per_address)])
    }
}

impl ThrottlePolicy {
    /// How long logins are refused after `failures` failures against `threshold`: none below
    /// it, then `first_block`, doubling with each further failure, up to `longest_block`.
    pub(crate) fn refusal_period(&self, failures: u32, threshold: u32) -> Option<Duration> {
        let over = failures.checked_sub(threshold)?;
        let period = self.first_block.saturating_mul(1 << over.min(20));
        Some(period.min(self.longest_block))
    }

    /// Counts an attempt under `keys` at `now`, as a failure until it succeeds; gives the
    /// time until which logins are refused instead, counting nothing, if any key is blocked.
    /// Counts older than `forget_after` start over, and are removed.
    pub(crate) fn count_attempt(
        &self,
        counts: &mut dyn FailureCounts,
        keys: &ThrottleKeys,
        now: f64,
    ) -> Result<Option<f64>> {
        let forget_after = self.forget_after.as_secs_f64();
        let mut blocked_until = 0f64;
        let mut next = Vec::new();
        for (key, threshold) in keys.counted() {
            let previous = counts.get(key)?;
            let failures = match previous {
                Some(p) if now - p.last_failure_at < forget_after => p.failures,
                _ => 0,
            };
            blocked_until = blocked_until.max(previous.map_or(0.0, |p| p.blocked_until));
            next.push((key, threshold, failures + 1));
        }
        if blocked_until > now {
            return Ok(Some(blocked_until));
        }
        for (key, threshold, failures) in next {
            let blocked_until = self
                .refusal_period(failures, threshold)
                .map_or(0.0, |d| now + d.as_secs_f64());
            let count = FailureCount {
                failures,
                last_failure_at: now,
                blocked_until,
            };
            counts.put(key, count)?;
        }
        counts.forget(now - forget_after, now)?;
        Ok(None)
    }

    /// Takes back the count of an attempt under `keys` that succeeded: the name's count is
    /// cleared, the address's lowered by one (and its refusal lifted below the threshold).
    pub(crate) fn forgive(
        &self,
        counts: &mut dyn FailureCounts,
        keys: &ThrottleKeys,
    ) -> Result<()> {
        if let Some(name) = &keys.name {
            counts.remove(name)?;
        }
        if let Some(mut count) = counts.get(&keys.address)? {
            count.failures = count.failures.saturating_sub(1);
            if count.failures < keys.per_address {
                count.blocked_until = 0.0;
            }
            counts.put(&keys.address, count)?;
        }
        Ok(())
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
