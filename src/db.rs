//! The account store: every read and write of account data goes through [`AccountStore`].
//!
//! The store is two things. Here, the rules that hold whatever holds the data: passwords are
//! hashed through one [`HashGate`] (so a flood of logins cannot take every core), a login for
//! an unknown user costs as much time as one for a known user, a hash made at a lower cost is
//! remade at the next login, and failed logins are throttled by [`ThrottlePolicy`]. Below, a
//! [`Backend`] holds the data: [`sqlite`] (one SQLite file, the default) or [`postgres`] (a
//! database several server instances share), each the only module that names its driver. A backend keeps no state of its own beyond its connections: everything that
//! must be shared by several server instances (accounts and failure counts) is in the database.

mod hash_gate;
mod postgres;
mod sqlite;
mod throttle;

#[cfg(test)]
mod contract;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::address::address_key;
use crate::error::{Error, Result};
use crate::password::{self, PasswordHash, Pbkdf2Params};
use crate::xml::account::{AccountView, Field};

use hash_gate::{HashGate, HashTurn};
pub(crate) use throttle::{FailureCount, ThrottlePolicy};
use throttle::{FailureCounts, ThrottleKeys};

/// The database's identifier of an account. Ids are never reused: a session holds its
/// account's id, and must not act on a later account after its own was deleted.
pub(crate) type AccountId = i64;

/// Where the accounts are kept (`--db`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StoreLocation {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL.
    Postgres(String),
}

impl StoreLocation {
    /// `postgres://...` (or `postgresql://...`) for PostgreSQL; `sqlite:PATH` or a plain
    /// path for SQLite. The error says what is wrong with a URL.
    pub(crate) fn parse(text: &str) -> std::result::Result<StoreLocation, String> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            postgres::check_url(text)?;
            return Ok(StoreLocation::Postgres(text.to_string()));
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        if path.is_empty() {
            return Err("no file name".into());
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }
}

/// Shown as [`fmt::Display`] shows it, without the password.
impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The location as it may be shown: a URL's password is left out.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "SQLite {}", path.display()),
            StoreLocation::Postgres(url) => {
                let shown = match url.split_once("://").map(|(_, rest)| rest) {
                    Some(rest) => match rest.split_once('@') {
                        Some((user, host)) => format!(
                            "postgres://{}@{host}",
                            user.split_once(':').map_or(user, |(name, _)| name)
                        ),
                        None => format!("postgres://{rest}"),
                    },
                    None => url.clone(),
                };
                write!(f, "PostgreSQL {shown}")
            }
        }
    }
}

/// How the store hashes and when it refuses logins.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoreOptions {
    /// The cost of new password hashes.
    pub(crate) hash: Pbkdf2Params,
    /// How many hashes may be computed at once.
    pub(crate) hash_threads: usize,
    /// How long a command may wait for its turn to hash.
    pub(crate) hash_wait: Duration,
    /// When failed logins lead to refusals.
    pub(crate) throttle: ThrottlePolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            hash: Pbkdf2Params::default(),
            hash_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            hash_wait: Duration::from_secs(10),
            throttle: ThrottlePolicy::default(),
        }
    }
}

/// What a login attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// The name and password match this account.
    Success(AccountId),
    /// They do not (or the account does not exist).
    Failed,
    /// The name and password match, but the operator locked the account.
    Locked,
    /// Too many failures for this name or address: try again after this long.
    Throttled(Duration),
}

/// What a login needs of an account, read in one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoginRecord {
    /// The account's id.
    pub(crate) id: AccountId,
    /// Its stored password hash.
    pub(crate) hash: String,
    /// Whether the operator locked it.
    pub(crate) locked: bool,
    /// Its credentials' generation (see [`SessionState`]).
    pub(crate) generation: i64,
}

/// What a logged-in session checks before each command: the account's credentials'
/// generation (one more at each operator's password reset) and whether it is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionState {
    /// One more at each password reset by the operator.
    pub(crate) generation: i64,
    /// Whether the operator locked the account.
    pub(crate) locked: bool,
}

/// An account as the operator lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccountSummary {
    /// The account's id.
    pub(crate) id: AccountId,
    /// Its user name.
    pub(crate) username: String,
    /// When it was created (ISO 8601 UTC).
    pub(crate) created_at: String,
    /// When it last logged in, if ever.
    pub(crate) last_login_at: Option<String>,
    /// When the operator locked it, if locked.
    pub(crate) locked_at: Option<String>,
}

/// Counts over every account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccountTotals {
    /// Accounts.
    pub(crate) accounts: i64,
    /// Accounts locked by the operator.
    pub(crate) locked: i64,
    /// Accounts whose last login was within the last day.
    pub(crate) logged_in_last_day: i64,
}

/// What a storage backend does: each method is one transaction, committed before it returns
/// (so a write is acknowledged only once it is durable). User names are unique regardless of
/// letter case, ids are never reused, and every change of an account's information adds one
/// to its version.
pub(crate) trait Backend: Send + Sync {
    /// Stores a new account; [`Error::UserExists`] if the name is taken in any letter case.
    fn insert_account(
        &self,
        username: &str,
        password_hash: &str,
        info: &[(Field, String)],
    ) -> Result<AccountId>;

    /// What a login needs of the account called `username` (in any letter case).
    fn find_login(&self, username: &str) -> Result<Option<LoginRecord>>;

    /// Account `id`'s credentials' generation and lock; [`Error::NoSuchAccount`] if none.
    fn session_state(&self, id: AccountId) -> Result<SessionState>;

    /// Every account, by name, or only the one called `username` (in any letter case).
    fn accounts(&self, username: Option<&str>) -> Result<Vec<AccountSummary>>;

    /// Locks (from now, unless locked already) or unlocks account `id`;
    /// [`Error::NoSuchAccount`] if none.
    fn set_locked(&self, id: AccountId, locked: bool) -> Result<()>;

    /// Replaces account `id`'s password hash, whatever it was, and adds one to its credentials'
    /// generation; [`Error::NoSuchAccount`] if none.
    fn reset_password_hash(&self, id: AccountId, hash: &str) -> Result<()>;

    /// Counts over every account.
    fn account_totals(&self) -> Result<AccountTotals>;

    /// The address keys account `id` has logged in from, each with its last login there
    /// (seconds since the Unix epoch), newest first.
    fn known_addresses(&self, id: AccountId) -> Result<Vec<(String, f64)>>;

    /// The user name and stored password hash of account `id`; [`Error::NoSuchAccount`] if
    /// there is none.
    fn credentials(&self, id: AccountId) -> Result<(String, String)>;

    /// Records a successful login of `id` now; with `rehash` (the hash checked, its
    /// replacement), also replaces the hash, unless it changed meanwhile.
    fn record_login(&self, id: AccountId, rehash: Option<(&str, &str)>) -> Result<()>;

    /// Everything stored about account `id` but its password hash.
    fn account(&self, id: AccountId) -> Result<AccountView>;

    /// Changes some of the account's information and gives its new version;
    /// [`Error::Conflict`] if `expected_version` is given and the account is not at it.
    fn update_account(
        &self,
        id: AccountId,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<i64>;

    /// Replaces the password hash `old` by `new`; [`Error::Conflict`] if it is no longer `old`.
    fn replace_password_hash(&self, id: AccountId, old: &str, new: &str) -> Result<()>;

    /// Deletes the account and everything stored with it; [`Error::Conflict`] if its password
    /// hash is no longer `hash`.
    fn delete_account(&self, id: AccountId, hash: &str) -> Result<()>;

    /// Runs `f` on the failed-login counts in one transaction, committed if `f` succeeds: reads
    /// and writes by several server instances at once are serialised.
    fn with_failure_counts(
        &self,
        f: &mut dyn FnMut(&mut dyn FailureCounts) -> Result<()>,
    ) -> Result<()>;

    /// A round trip to the database: `Ok` if it answers.
    fn ping(&self) -> Result<()>;

    /// Closes the backend's connections (those in use as they come back).
    fn close(&self);
}

/// The account store, shared by all client threads: the store's rules over a [`Backend`].
pub(crate) struct AccountStore {
    backend: Box<dyn Backend>,
    params: Pbkdf2Params,
    gate: HashGate,
    throttle: ThrottlePolicy,
}

impl AccountStore {
    /// Opens (creating a SQLite file if needed) the store at `location` and brings its
    /// schema up to date.
    pub(crate) fn open(location: &StoreLocation, options: StoreOptions) -> Result<Self> {
        let backend: Box<dyn Backend> = match location {
            StoreLocation::Sqlite(path) => Box::new(sqlite::SqliteBackend::open(path)?),
            StoreLocation::Postgres(url) => Box::new(postgres::PostgresBackend::open(url)?),
        };
        Ok(AccountStore::new(backend, options))
    }

    /// The store's rules over `backend`.
    fn new(backend: Box<dyn Backend>, options: StoreOptions) -> Self {
        AccountStore {
            backend,
            params: options.hash,
            gate: HashGate::new(options.hash_threads, options.hash_wait),
            throttle: options.throttle,
        }
    }

    /// Creates an account with the given information (other fields empty);
    /// [`Error::UserExists`] if the name is taken (in any letter case). Policy is the caller's.
    pub(crate) fn create_account(
        &self,
        username: &str,
        password: &[u8],
        info: &[(Field, String)],
    ) -> Result<AccountId> {
        let hash = self.new_hash(password, HashTurn::Create)?;
        self.backend.insert_account(username, &hash, info)
    }

    /// A signup from `from`: [`Self::create_account`], counted per address first, and refused
    /// with [`Error::Throttled`] past `signups_per_address` (see [`ThrottlePolicy`]).
    pub(crate) fn signup(
        &self,
        username: &str,
        password: &[u8],
        info: &[(Field, String)],
        from: IpAddr,
    ) -> Result<AccountId> {
        self.count_attempt(&ThrottleKeys::signup(from, &self.throttle))?;
        self.create_account(username, password, info)
    }

    /// Checks a user name and password. `Some(id)` on success, `None` for an unknown user or a
    /// wrong password; both take about the same time. A success records the login time and
    /// remakes the hash if it was made at a lower cost than the store's. (Logins go through
    /// [`Self::sign_in`], which also counts and refuses; the tests check passwords with this.)
    #[cfg(test)]
    fn authenticate(&self, username: &str, password: &[u8]) -> Result<Option<AccountId>> {
        let Some(record) = self.check_password(username, password)? else {
            return Ok(None);
        };
        self.record_login(&record, password)?;
        Ok(Some(record.id))
    }

    /// The account called `username` if `password` is its password (locked or not); `None`
    /// for an unknown user or a wrong password, both after about the same time.
    fn check_password(&self, username: &str, password: &[u8]) -> Result<Option<LoginRecord>> {
        let Some(record) = self.backend.find_login(username)? else {
            self.hashing(HashTurn::Check, || {
                password::spend_verification_time(password, self.params)
            })?;
            return Ok(None);
        };
        let hash = PasswordHash::parse(&record.hash)?;
        if !self.hashing(HashTurn::Check, || hash.verify(password))? {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Records a successful login, remaking the hash if it was made at a lower cost than the
    /// store's.
    fn record_login(&self, record: &LoginRecord, password: &[u8]) -> Result<()> {
        let hash = PasswordHash::parse(&record.hash)?;
        let upgraded = if hash.needs_upgrade(self.params) {
            // Part of a login: it goes before signups too.
            Some(self.new_hash(password, HashTurn::Check)?)
        } else {
            None
        };
        // Bookkeeping: a failure here must not turn a good login into an error.
        let rehash = upgraded.as_deref().map(|new| (record.hash.as_str(), new));
        if let Err(e) = self.backend.record_login(record.id, rehash) {
            log::warn!(
                "could not record the login time of account {}: {e}",
                record.id
            );
        }
        Ok(())
    }

    /// Everything stored about an account but its password hash.
    pub(crate) fn view(&self, id: AccountId) -> Result<AccountView> {
        self.backend.account(id)
    }

    /// Changes some of an account's information in one transaction and gives the new version.
    /// With `expected_version`, refuses with [`Error::Conflict`] if the account is no longer
    /// at that version.
    pub(crate) fn update(
        &self,
        id: AccountId,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<i64> {
        self.backend.update_account(id, changes, expected_version)
    }

    /// Replaces the password, given the current one, by a client at `from`: a wrong current
    /// password counts as a failed login (see [`Self::confirm_password`]).
    pub(crate) fn change_password(
        &self,
        id: AccountId,
        current: &[u8],
        new: &[u8],
        from: IpAddr,
    ) -> Result<()> {
        let stored = self.confirm_password(id, current, from)?;
        let new_hash = self.new_hash(new, HashTurn::Create)?;
        self.backend.replace_password_hash(id, &stored, &new_hash)
    }

    /// Deletes the account and everything stored with it, given its password, by a client at
    /// `from`: a wrong password counts as a failed login (see [`Self::confirm_password`]).
    pub(crate) fn delete(&self, id: AccountId, password: &[u8], from: IpAddr) -> Result<()> {
        let stored = self.confirm_password(id, password, from)?;
        self.backend.delete_account(id, &stored)
    }

    /// The stored hash of account `id` if `password` matches it: [`Error::WrongPassword`] if
    /// not, and [`Error::Throttled`] without checking while the account's name or the client
    /// at `from` is refused. Counted and forgiven as a login is.
    fn confirm_password(&self, id: AccountId, password: &[u8], from: IpAddr) -> Result<String> {
        let (username, stored) = self.backend.credentials(id)?;
        let keys = ThrottleKeys::password_check(&username, from, &self.throttle);
        self.count_attempt(&keys)?;
        let hash = PasswordHash::parse(&stored)?;
        if !self.hashing(HashTurn::Check, || hash.verify(password))? {
            return Err(Error::WrongPassword);
        }
        self.forgive(&keys, id);
        Ok(stored)
    }

    /// A login attempt by `username` from `from`, refused without checking the password while
    /// that name (unless the account knows the address), pair or address is throttled (see
    /// [`ThrottlePolicy`]).
    pub(crate) fn login(
        &self,
        username: &str,
        password: &[u8],
        from: IpAddr,
    ) -> Result<LoginOutcome> {
        Ok(self.sign_in(username, password, from)?.0)
    }

    /// [`Self::login`], with the account's credentials' generation on success, as read with
    /// the hash that was checked: a session compares it with [`Self::session_state`] before
    /// each command, so a password reset after the check ends it. A locked account's right
    /// password gives [`LoginOutcome::Locked`] (and counts as a right password); a wrong one
    /// the usual failure.
    pub(crate) fn sign_in(
        &self,
        username: &str,
        password: &[u8],
        from: IpAddr,
    ) -> Result<(LoginOutcome, i64)> {
        let keys = ThrottleKeys::password_check(username, from, &self.throttle);
        match self.count_attempt(&keys) {
            Ok(()) => {}
            Err(Error::Throttled(wait)) => return Ok((LoginOutcome::Throttled(wait), 0)),
            Err(e) => return Err(e),
        }
        let Some(record) = self.check_password(username, password)? else {
            return Ok((LoginOutcome::Failed, 0));
        };
        self.forgive(&keys, record.id);
        if record.locked {
            return Ok((LoginOutcome::Locked, 0));
        }
        self.record_login(&record, password)?;
        Ok((LoginOutcome::Success(record.id), record.generation))
    }

    /// Account `id`'s credentials' generation and lock, for a session's check before each
    /// command.
    pub(crate) fn session_state(&self, id: AccountId) -> Result<SessionState> {
        self.backend.session_state(id)
    }

    /// Every account, by name.
    pub(crate) fn accounts(&self) -> Result<Vec<AccountSummary>> {
        self.backend.accounts(None)
    }

    /// The account called `username` (in any letter case); [`Error::NoSuchAccount`] if none.
    pub(crate) fn account_named(&self, username: &str) -> Result<AccountSummary> {
        self.backend
            .accounts(Some(username))?
            .into_iter()
            .next()
            .ok_or(Error::NoSuchAccount)
    }

    /// Locks or unlocks the account called `username`. Unlocking also clears the failure
    /// counts of its name and of its name at every address.
    pub(crate) fn set_locked(&self, username: &str, locked: bool) -> Result<()> {
        let account = self.account_named(username)?;
        self.backend.set_locked(account.id, locked)?;
        if !locked {
            self.clear_failure_counts(&account.username)?;
        }
        Ok(())
    }

    /// Gives the account called `username` a new password, whatever its old one; its open
    /// sessions end at their next command. Policy is the caller's.
    pub(crate) fn reset_password(&self, username: &str, password: &[u8]) -> Result<()> {
        let account = self.account_named(username)?;
        let hash = self.new_hash(password, HashTurn::Create)?;
        self.backend.reset_password_hash(account.id, &hash)
    }

    /// Deletes the account called `username` and everything stored with it;
    /// [`Error::Conflict`] if its password changed while this ran.
    pub(crate) fn remove(&self, username: &str) -> Result<()> {
        let record = self
            .backend
            .find_login(username)?
            .ok_or(Error::NoSuchAccount)?;
        self.backend.delete_account(record.id, &record.hash)
    }

    /// Every failure count, by key (`user:NAME`, `pair:NAME@ADDRESS`, `addr:ADDRESS`,
    /// `signup:ADDRESS`).
    pub(crate) fn failure_counts(&self) -> Result<Vec<(String, FailureCount)>> {
        let mut all = Vec::new();
        self.backend.with_failure_counts(&mut |counts| {
            all = counts.all()?;
            Ok(())
        })?;
        Ok(all)
    }

    /// Clears, in one transaction, the failure counts of `target`: an address (its
    /// `addr:`, `signup:` and `pair:...@` keys, for the address as counted: an IPv6 /64, which
    /// may be given as `PREFIX::/64`) or an
    /// account name (its `user:` and `pair:` keys, in any letter case). Gives how many were
    /// cleared.
    pub(crate) fn clear_failure_counts(&self, target: &str) -> Result<usize> {
        let as_address = target.strip_suffix("/64").unwrap_or(target);
        let matches: Box<dyn Fn(&str) -> bool> = match as_address.parse::<IpAddr>() {
            Ok(ip) => {
                let address = address_key(ip);
                Box::new(move |key: &str| {
                    key == format!("addr:{address}")
                        || key == format!("signup:{address}")
                        || (key.starts_with("pair:") && key.ends_with(&format!("@{address}")))
                })
            }
            Err(_) => {
                let name = target.to_lowercase();
                Box::new(move |key: &str| {
                    key == format!("user:{name}") || key.starts_with(&format!("pair:{name}@"))
                })
            }
        };
        let mut cleared = 0;
        self.backend.with_failure_counts(&mut |counts| {
            cleared = 0;
            for (key, _) in counts.all()? {
                if matches(&key) {
                    counts.remove(&key)?;
                    cleared += 1;
                }
            }
            Ok(())
        })?;
        Ok(cleared)
    }

    /// Counts over every account.
    pub(crate) fn account_totals(&self) -> Result<AccountTotals> {
        self.backend.account_totals()
    }

    /// The addresses (as counted: an IPv6 /64) account `id` has logged in from, each with its
    /// last login there (seconds since the Unix epoch), newest first.
    pub(crate) fn known_addresses(&self, id: AccountId) -> Result<Vec<(String, f64)>> {
        self.backend.known_addresses(id)
    }

    /// Checks and counts an attempt under `keys` in one transaction, before the slow hash:
    /// attempts sent at once are all counted, so a burst cannot pass the limit.
    /// [`Error::Throttled`] while a key refuses.
    fn count_attempt(&self, keys: &ThrottleKeys) -> Result<()> {
        let now = unix_now();
        let mut blocked_until = None;
        self.backend.with_failure_counts(&mut |counts| {
            blocked_until = self.throttle.count_attempt(counts, keys, now)?;
            Ok(())
        })?;
        match blocked_until {
            Some(until) => Err(Error::Throttled(Duration::from_secs_f64(until - now))),
            None => Ok(()),
        }
    }

    /// Takes back a successful password check's count. Bookkeeping: a failure here must not
    /// turn a good login into an error.
    fn forgive(&self, keys: &ThrottleKeys, id: AccountId) {
        let now = unix_now();
        let forgiven = self
            .backend
            .with_failure_counts(&mut |counts| self.throttle.forgive(counts, keys, id, now));
        if let Err(e) = forgiven {
            log::warn!("could not clear the failed-login count after a login: {e}");
        }
    }

    /// Whether the store answers: a round trip to its database.
    pub(crate) fn ping(&self) -> Result<()> {
        self.backend.ping()
    }

    /// How many password hashes wait for a place now, and how long hashes have waited, in
    /// all.
    pub(crate) fn hash_gate_figures(&self) -> (usize, Duration) {
        self.gate.figures()
    }

    /// Closes the database: at once for idle connections, as they come back for busy ones.
    pub(crate) fn close(&self) {
        self.backend.close();
    }

    /// A new hash of `password` at the store's cost, as stored.
    fn new_hash(&self, password: &[u8], turn: HashTurn) -> Result<String> {
        Ok(self
            .hashing(turn, || PasswordHash::new(password, self.params))??
            .to_string())
    }

    /// Runs a password hash when the gate gives it a turn.
    fn hashing<T>(&self, turn: HashTurn, hash: impl FnOnce() -> T) -> Result<T> {
        self.gate
            .run(turn, hash)
            .map_err(|hash_gate::Busy| Error::Busy)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_how_they_are_shown() {
        let sqlite = StoreLocation::parse("users.db").unwrap();
        assert_eq!(sqlite, StoreLocation::Sqlite("users.db".into()));
        assert_eq!(
            StoreLocation::parse("sqlite:/tmp/a.db")
                .unwrap()
                .to_string(),
            "SQLite /tmp/a.db"
        );
        let pg = StoreLocation::parse("postgres://svc:s3cret@db.example:5433/accounts").unwrap();
        assert_eq!(
            pg.to_string(),
            "PostgreSQL postgres://svc@db.example:5433/accounts"
        );
        assert!(!format!("{pg:?} {pg}").contains("s3cret"));
        assert!(StoreLocation::parse("postgres://u@h:x/db").is_err());
        assert!(StoreLocation::parse("sqlite:").is_err());
    }
}
