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
mod sql;
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
use crate::xml::account::{AccountView, Field, check_username};
use crate::xml::sign_in::{
    CertificateView, HISTORY_KEPT, LastSignIn, MAX_CERTIFICATES, SignInEvent, SignInMethod,
    SignInOutcome,
};

use hash_gate::{HashGate, HashTurn};
use throttle::{Attempt, Outcome, Refusal, ThrottleKeys};
pub(crate) use throttle::{FailureCount, Limit, ThrottlePolicy};

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
    /// How many hashes may be computed at once: by default all cores but one, which is left
    /// for handshakes and other commands (at least one).
    pub(crate) hash_threads: usize,
    /// How long a command may wait for its turn to hash.
    pub(crate) hash_wait: Duration,
    /// When password checks lead to refusals.
    pub(crate) throttle: ThrottlePolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            hash: Pbkdf2Params::default(),
            hash_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1).max(1)),
            hash_wait: Duration::from_secs(10),
            throttle: ThrottlePolicy::default(),
        }
    }
}

/// What opening the store does with a schema older than this program's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SchemaUpgrade {
    /// Migrates it: the server when it starts, and `./admin migrate`.
    Migrate,
    /// Refuses it ([`Error::Schema`]) and changes nothing: the rest of `./admin`, which must
    /// not upgrade the schema under servers of an older version.
    Refuse,
}

/// The schema versions of a store when it was opened: the one found and the one it is at now
/// (this program's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SchemaChange {
    /// The version found (0: no schema yet).
    pub(crate) from: i64,
    /// The version now.
    pub(crate) to: i64,
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
    /// Too many failures (or successes) for this name or address: try again after this long.
    Throttled(Duration, Limit),
}

/// What a sign-in attempt came to, for the session and for the user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SignIn {
    /// What it came to.
    pub(crate) outcome: LoginOutcome,
    /// On success, the account's credentials' generation, as read with what was checked.
    pub(crate) generation: i64,
    /// On success, the sign-in before it and the failures since (`None` if the store could
    /// not tell: the sign-in stands).
    pub(crate) last: Option<LastSignIn>,
}

impl SignIn {
    /// An attempt that did not sign in.
    fn refused(outcome: LoginOutcome) -> SignIn {
        SignIn {
            outcome,
            generation: 0,
            last: None,
        }
    }
}

/// A sign-in attempt on an existing account, to record in its history.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SignInRecord<'a> {
    /// The account.
    pub(crate) account: AccountId,
    /// The client's address, as shown.
    pub(crate) address: &'a str,
    /// How the attempt was made.
    pub(crate) method: SignInMethod,
    /// What it came to.
    pub(crate) outcome: SignInOutcome,
}

/// At most one throttled attempt per account is recorded in this long, from whatever address:
/// a flood of refused attempts is refused cheaply, and does not push the owner's events out
/// of the history.
const THROTTLED_EVENT_GAP: Duration = Duration::from_secs(60);

/// What a login needs of an account, read in one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoginRecord {
    /// The account's id.
    pub(crate) id: AccountId,
    /// Its stored password hash.
    pub(crate) hash: String,
    /// Whether the operator locked it.
    pub(crate) locked: bool,
    /// Its credentials' generation (see [`SessionAccount`]).
    pub(crate) generation: i64,
}

/// An account's credentials' generation (one more at each password reset by the operator) and
/// whether the operator locked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionState {
    /// One more at each password reset by the operator.
    pub(crate) generation: i64,
    /// Whether the operator locked the account.
    pub(crate) locked: bool,
}

/// The account a logged-in session acts for: its id, and its credentials' generation when
/// the session logged in. Every statement of a session's command carries both in its
/// condition, with "not locked", so an operator's password reset or lock ends the session at
/// its next command, in any server instance, with no read of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionAccount {
    /// The account's id.
    pub(crate) id: AccountId,
    /// Its credentials' generation when the session logged in.
    pub(crate) generation: i64,
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

/// What counting an attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Counted {
    /// Refused; nothing was counted.
    Refused(Refusal),
    /// Counted; with what the password check needs of the account looked up, if there is one.
    Counted(Option<LoginRecord>),
}

/// A login to record with a successful password check: the hash checked and its replacement,
/// if it is to be remade at the store's cost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoginUpdate<'a> {
    /// The hash that was checked, and the one to store instead (unless it changed meanwhile).
    pub(crate) rehash: Option<(&'a str, &'a str)>,
    /// The fingerprint of the enrolled certificate signed in with, whose last use this is.
    pub(crate) certificate: Option<&'a str>,
}

/// What a storage backend does.
///
/// Each method is one transaction, committed before it returns (a write is acknowledged only
/// once it is durable); on PostgreSQL most are one statement, and so one round trip (see
/// docs/SCALING.md). A transaction that PostgreSQL aborts for serialization or a deadlock is
/// run again, whole: a closure given to a method ([`Backend::clear_failure_counts`]'s) may be
/// called more than once. User names are unique regardless of letter case, ids are never
/// reused, and every change of an account's information adds one to its version. Methods that
/// act for a session ([`SessionAccount`]) find no account (`None` or `false`) when its
/// credentials' generation changed or it was locked; the store tells why
/// ([`AccountStore::missed`]).
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

    /// Account `id`'s credentials' generation and lock, if it exists.
    fn session_state(&self, id: AccountId) -> Result<Option<SessionState>>;

    /// Every account, by name, or only the one called `username` (in any letter case).
    fn accounts(&self, username: Option<&str>) -> Result<Vec<AccountSummary>>;

    /// Locks account `id` from now, unless locked already; false if there is none.
    fn lock(&self, id: AccountId) -> Result<bool>;

    /// Replaces account `id`'s password hash, whatever it was, and adds one to its credentials'
    /// generation; false if there is none.
    fn reset_password_hash(&self, id: AccountId, hash: &str) -> Result<bool>;

    /// Counts over every account.
    fn account_totals(&self) -> Result<AccountTotals>;

    /// The address keys account `id` has logged in from, each with its last login there
    /// (seconds since the Unix epoch), newest first.
    fn known_addresses(&self, id: AccountId) -> Result<Vec<(String, f64)>>;

    /// Everything stored about account `id` but its password hash; with `generation`, only
    /// while the account is at that credentials' generation and unlocked.
    fn account(&self, id: AccountId, generation: Option<i64>) -> Result<Option<AccountView>>;

    /// The user name and stored password hash of the session's account.
    fn credentials(&self, session: SessionAccount) -> Result<Option<(String, String)>>;

    /// Changes some of the session's account's information and gives it as it is then;
    /// `None` also if `expected_version` is given and the account is not at it.
    fn update_account(
        &self,
        session: SessionAccount,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<Option<AccountView>>;

    /// Replaces the session's account's password hash `old` by `new` and adds one to its
    /// credentials' generation (every other session of the account ends); gives the new
    /// generation, or `None` also if the hash is no longer `old`.
    fn replace_password_hash(
        &self,
        session: SessionAccount,
        old: &str,
        new: &str,
    ) -> Result<Option<i64>>;

    /// Deletes account `id` and everything stored with it, if its password hash is still
    /// `hash` (and, with `generation`, while it is at that generation and unlocked).
    fn delete_account(&self, id: AccountId, generation: Option<i64>, hash: &str) -> Result<bool>;

    /// Counts `attempt` ([`throttle::count_attempt`]'s rules) and, with `read_login` and
    /// unless it is refused, reads what a login needs of the account it names
    /// ([`ThrottleKeys::username`]): one transaction, serialised with every other count,
    /// forgiveness and clearing of the same keys, by any server instance.
    fn count_attempt(&self, attempt: &Attempt<'_>, read_login: bool) -> Result<Counted>;

    /// Settles `attempt`'s count by its `outcome` ([`throttle::settle`]'s rules), with
    /// `login` (after a success) records a login now, and with `event` adds it to the
    /// account's history, keeping its newest [`HISTORY_KEPT`] events: one transaction. For a
    /// sign-in (`event`'s outcome [`SignInOutcome::SignedIn`]), gives the account's last
    /// sign-in before it and the failed attempts since.
    fn settle(
        &self,
        attempt: &Attempt<'_>,
        outcome: Outcome,
        login: Option<LoginUpdate<'_>>,
        event: Option<SignInRecord<'_>>,
    ) -> Result<Option<LastSignIn>>;

    /// Records a throttled sign-in attempt by `method` from `address` in the history of the
    /// account called `username` (lower case), if there is one and no throttled attempt is
    /// recorded for it in the last `gap`; writes nothing otherwise.
    fn record_throttled(
        &self,
        username: &str,
        address: &str,
        method: SignInMethod,
        gap: Duration,
    ) -> Result<()>;

    /// Whether the certificate of `fingerprint` is enrolled for account `id`.
    fn certificate_enrolled(&self, id: AccountId, fingerprint: &str) -> Result<bool>;

    /// Enrolls the certificate of `fingerprint` for the session's account, with `label`,
    /// unless it is enrolled already or the account has `max` certificates; false if not
    /// enrolled (for either reason, or no account).
    fn enroll_certificate(
        &self,
        session: SessionAccount,
        fingerprint: &str,
        label: &str,
        max: usize,
    ) -> Result<bool>;

    /// Account `id`'s enrolled certificates, oldest first, if the account exists (with
    /// `generation`, only while it is at that credentials' generation and unlocked).
    fn certificates(
        &self,
        id: AccountId,
        generation: Option<i64>,
    ) -> Result<Option<Vec<CertificateView>>>;

    /// Removes the certificate of `fingerprint` from account `id` (with `generation`, only
    /// while the account is at it and unlocked); false if none was removed.
    fn unenroll_certificate(
        &self,
        id: AccountId,
        generation: Option<i64>,
        fingerprint: &str,
    ) -> Result<bool>;

    /// Account `id`'s newest `limit` sign-in events, newest first, if the account exists
    /// (with `generation`, only while it is at it and unlocked).
    fn sign_ins(
        &self,
        id: AccountId,
        generation: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<SignInEvent>>>;

    /// Every failure count, by key.
    fn failure_counts(&self) -> Result<Vec<(String, FailureCount)>>;

    /// Removes the failure counts `selection` picks, after any attempt under them in flight,
    /// and gives how many; with `unlock`, also unlocks that account, in the same transaction
    /// (`None` if it does not exist, and nothing is cleared). `selection.matches` may be called
    /// again if the transaction is run again.
    fn clear_failure_counts(
        &self,
        selection: &KeySelection,
        unlock: Option<AccountId>,
    ) -> Result<Option<usize>>;

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
        Ok(AccountStore::open_with_schema(location, options, SchemaUpgrade::Migrate)?.0)
    }

    /// Opens the store at `location` as [`Self::open`] does, with `upgrade` for a schema older
    /// than this program's; gives also the schema's versions. A newer schema is refused
    /// ([`Error::Schema`]).
    pub(crate) fn open_with_schema(
        location: &StoreLocation,
        options: StoreOptions,
        upgrade: SchemaUpgrade,
    ) -> Result<(Self, SchemaChange)> {
        let (backend, change): (Box<dyn Backend>, _) = match location {
            StoreLocation::Sqlite(path) => {
                let (backend, change) = sqlite::SqliteBackend::open(path, upgrade)?;
                (Box::new(backend), change)
            }
            StoreLocation::Postgres(url) => {
                let (backend, change) = postgres::PostgresBackend::open(url, upgrade)?;
                (Box::new(backend), change)
            }
        };
        Ok((AccountStore::new(backend, options), change))
    }

    /// The store's rules over `backend`.
    fn new(backend: Box<dyn Backend>, options: StoreOptions) -> Self {
        AccountStore {
            backend,
            params: options.hash,
            gate: HashGate::new(options.hash_threads, options.hash_wait),
            // An attempt in flight stops counting once it has waited its longest for a turn
            // to hash, and a minute for the hash and the rest.
            throttle: ThrottlePolicy {
                pending_ttl: options.hash_wait + Duration::from_secs(60),
                ..options.throttle
            },
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
        self.insert_account(username, password, info, OPERATOR)
    }

    /// [`Self::create_account`], its hash in the gate for `client`.
    fn insert_account(
        &self,
        username: &str,
        password: &[u8],
        info: &[(Field, String)],
        client: &str,
    ) -> Result<AccountId> {
        let hash = self.new_hash(password, HashTurn::Create, client)?;
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
        let keys = ThrottleKeys::signup(from, &self.throttle);
        let attempt = self.attempt(&keys);
        self.count_attempt(&attempt, false)?;
        let created = self.insert_account(username, password, info, keys.address());
        let outcome = match &created {
            Ok(id) => Outcome::Passed(*id),
            Err(Error::Busy) => Outcome::Unchecked,
            // The store failed or did not answer: asking it again would make a second wait
            // for the same refusal; the count in flight stops counting by itself
            // (`ThrottlePolicy::pending_ttl`).
            Err(Error::Store(_)) => return created,
            Err(_) => Outcome::Failed,
        };
        self.settle(&attempt, outcome, None, None);
        created
    }

    /// Checks a user name and password, counting nothing. `Some(id)` on success, `None` for an
    /// unknown user or a wrong password. A success records the login as [`Self::sign_in`]
    /// does, from the unspecified address. (Logins go through [`Self::sign_in`], which also
    /// counts and refuses; the tests check passwords with this.)
    #[cfg(test)]
    fn authenticate(&self, username: &str, password: &[u8]) -> Result<Option<AccountId>> {
        let record = self.backend.find_login(username)?;
        let Some(record) = self.check_password(record, password, OPERATOR)? else {
            return Ok(None);
        };
        let keys =
            ThrottleKeys::password_check(username, IpAddr::from([0, 0, 0, 0]), &self.throttle);
        self.record_login(&self.attempt(&keys), &record, password, None);
        Ok(Some(record.id))
    }

    /// `record` if `password` is its password (locked or not); `None` for no account or a
    /// wrong password, both after about the same time. The hash waits in the gate for
    /// `client`.
    fn check_password(
        &self,
        record: Option<LoginRecord>,
        password: &[u8],
        client: &str,
    ) -> Result<Option<LoginRecord>> {
        let Some(record) = record else {
            self.hashing(HashTurn::Check, client, || {
                password::spend_verification_time(password, self.params)
            })?;
            return Ok(None);
        };
        let hash = PasswordHash::parse(&record.hash)?;
        if !self.hashing(HashTurn::Check, client, || hash.verify(password))? {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Settles a successful password check's count and records the login (with `event`, in
    /// the account's history too), remaking the hash if it was made at a lower cost than the
    /// store's: one transaction. Gives the sign-in before, if the store told it.
    fn record_login(
        &self,
        attempt: &Attempt<'_>,
        record: &LoginRecord,
        password: &[u8],
        event: Option<SignInRecord<'_>>,
    ) -> Option<LastSignIn> {
        let upgraded = match PasswordHash::parse(&record.hash) {
            // Part of a login: it goes before signups too.
            Ok(hash) if hash.needs_upgrade(self.params) => self
                .new_hash(password, HashTurn::Check, attempt.keys.address())
                .ok(),
            _ => None,
        };
        let login = LoginUpdate {
            rehash: upgraded.as_deref().map(|new| (record.hash.as_str(), new)),
            certificate: None,
        };
        self.settle(attempt, Outcome::Passed(record.id), Some(login), event)
    }

    /// Settles the count of `attempt` by its `outcome`, with `login` records the login, and
    /// with `event` adds it to the account's history; gives what the backend's settle gives.
    /// Bookkeeping: a failure here must not turn a check into an error.
    fn settle(
        &self,
        attempt: &Attempt<'_>,
        outcome: Outcome,
        login: Option<LoginUpdate<'_>>,
        event: Option<SignInRecord<'_>>,
    ) -> Option<LastSignIn> {
        self.backend
            .settle(attempt, outcome, login, event)
            .unwrap_or_else(|e| {
                log::warn!("could not settle the count of a password check ({outcome:?}): {e}");
                None
            })
    }

    /// Checks `password` against `record` under `attempt`, counted already: the record if the
    /// password is right (the caller settles a success, with what it records), `None` (the
    /// attempt settled as a failure, with `wrong` in the account's history if the account
    /// exists) if not; an error (the attempt settled as unchecked) if it could not be
    /// checked: [`Error::Busy`] if the server is too busy.
    fn settled_check(
        &self,
        attempt: &Attempt<'_>,
        record: Option<LoginRecord>,
        password: &[u8],
        wrong: Option<SignInRecord<'_>>,
    ) -> Result<Option<LoginRecord>> {
        let checked = self.check_password(record, password, attempt.keys.address());
        match &checked {
            Ok(None) => {
                self.settle(attempt, Outcome::Failed, None, wrong);
            }
            Err(_) => {
                self.settle(attempt, Outcome::Unchecked, None, None);
            }
            Ok(Some(_)) => {}
        }
        checked
    }

    /// Everything stored about the session's account but its password hash.
    pub(crate) fn view(&self, session: SessionAccount) -> Result<AccountView> {
        self.backend
            .account(session.id, Some(session.generation))?
            .ok_or_else(|| self.missed(session))
    }

    /// Changes some of the session's account's information in one transaction and gives the
    /// account as it is then. With `expected_version`, refuses with [`Error::Conflict`] if the
    /// account is no longer at that version.
    pub(crate) fn update(
        &self,
        session: SessionAccount,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<AccountView> {
        self.backend
            .update_account(session, changes, expected_version)?
            .ok_or_else(|| self.missed(session))
    }

    /// Replaces the password, given the current one, by a client at `from`: a wrong current
    /// password counts as a failed login (see [`Self::confirm_password`]). Every other
    /// session of the account ends at its next command, signed in with the password or with
    /// a certificate; the caller's goes on as the [`SessionAccount`] given.
    pub(crate) fn change_password(
        &self,
        session: SessionAccount,
        current: &[u8],
        new: &[u8],
        from: IpAddr,
    ) -> Result<SessionAccount> {
        let stored = self.confirm_password(session, current, from)?;
        let new_hash = self.new_hash(new, HashTurn::Create, &address_key(from))?;
        match self
            .backend
            .replace_password_hash(session, &stored, &new_hash)?
        {
            Some(generation) => Ok(SessionAccount {
                id: session.id,
                generation,
            }),
            None => Err(self.missed(session)),
        }
    }

    /// Enrolls the certificate of `fingerprint` (the connection's) for the session's
    /// account, with `label`; gives the account's certificates then.
    /// [`Error::CertificateEnrolled`] if it is already, [`Error::TooManyCertificates`] if the
    /// account has [`MAX_CERTIFICATES`].
    pub(crate) fn enroll(
        &self,
        session: SessionAccount,
        fingerprint: &str,
        label: &str,
    ) -> Result<Vec<CertificateView>> {
        let enrolled =
            self.backend
                .enroll_certificate(session, fingerprint, label, MAX_CERTIFICATES)?;
        let certificates = self.certificates(session)?;
        if enrolled {
            Ok(certificates)
        } else if certificates.iter().any(|c| c.fingerprint == fingerprint) {
            Err(Error::CertificateEnrolled)
        } else if certificates.len() >= MAX_CERTIFICATES {
            Err(Error::TooManyCertificates)
        } else {
            Err(Error::Conflict)
        }
    }

    /// The session's account's enrolled certificates, oldest first.
    pub(crate) fn certificates(&self, session: SessionAccount) -> Result<Vec<CertificateView>> {
        self.backend
            .certificates(session.id, Some(session.generation))?
            .ok_or_else(|| self.missed(session))
    }

    /// Removes the certificate of `fingerprint` from the session's account; gives the
    /// account's certificates then. [`Error::NoSuchCertificate`] if it is not enrolled.
    pub(crate) fn unenroll(
        &self,
        session: SessionAccount,
        fingerprint: &str,
    ) -> Result<Vec<CertificateView>> {
        if !self
            .backend
            .unenroll_certificate(session.id, Some(session.generation), fingerprint)?
        {
            return Err(match self.missed(session) {
                Error::Conflict => Error::NoSuchCertificate,
                e => e,
            });
        }
        self.certificates(session)
    }

    /// The session's account's sign-in events, newest first (at most [`HISTORY_KEPT`] are
    /// kept).
    pub(crate) fn history(&self, session: SessionAccount) -> Result<Vec<SignInEvent>> {
        self.backend
            .sign_ins(session.id, Some(session.generation), HISTORY_KEPT)?
            .ok_or_else(|| self.missed(session))
    }

    /// Account `id`'s enrolled certificates and its newest `events` sign-in events, for the
    /// operator.
    pub(crate) fn operator_sign_in_view(
        &self,
        id: AccountId,
        events: usize,
    ) -> Result<(Vec<CertificateView>, Vec<SignInEvent>)> {
        let certificates = self
            .backend
            .certificates(id, None)?
            .ok_or(Error::NoSuchAccount)?;
        let history = self
            .backend
            .sign_ins(id, None, events)?
            .ok_or(Error::NoSuchAccount)?;
        Ok((certificates, history))
    }

    /// Removes the certificate of `fingerprint` from account `id`, for the operator; the
    /// sessions signed in with it stay (as after `unenroll`).
    pub(crate) fn operator_unenroll(&self, id: AccountId, fingerprint: &str) -> Result<()> {
        if !self.backend.unenroll_certificate(id, None, fingerprint)? {
            return Err(Error::NoSuchCertificate);
        }
        Ok(())
    }

    /// Deletes the account and everything stored with it, given its password, by a client at
    /// `from`: a wrong password counts as a failed login (see [`Self::confirm_password`]).
    pub(crate) fn delete(
        &self,
        session: SessionAccount,
        password: &[u8],
        from: IpAddr,
    ) -> Result<()> {
        let stored = self.confirm_password(session, password, from)?;
        if !self
            .backend
            .delete_account(session.id, Some(session.generation), &stored)?
        {
            return Err(self.missed(session));
        }
        Ok(())
    }

    /// The stored hash of the session's account if `password` matches it:
    /// [`Error::WrongPassword`] if not, and [`Error::Throttled`] without checking while the
    /// account's name or the client at `from` is refused. Counted and forgiven as a login is.
    fn confirm_password(
        &self,
        session: SessionAccount,
        password: &[u8],
        from: IpAddr,
    ) -> Result<String> {
        let (username, stored) = self
            .backend
            .credentials(session)?
            .ok_or_else(|| self.missed(session))?;
        let keys = ThrottleKeys::password_check(&username, from, &self.throttle);
        let attempt = self.attempt(&keys);
        self.count_attempt(&attempt, false)?;
        let record = LoginRecord {
            id: session.id,
            hash: stored,
            locked: false,
            generation: session.generation,
        };
        match self.settled_check(&attempt, Some(record), password, None)? {
            Some(record) => {
                // Said at once: a store that cannot settle this would fail the caller's write
                // too, after a second wait.
                self.backend
                    .settle(&attempt, Outcome::Passed(record.id), None, None)?;
                Ok(record.hash)
            }
            None => Err(Error::WrongPassword),
        }
    }

    /// Why a statement for `session` found no account (the rule for every such miss): the
    /// account is gone, or its password was reset or it was locked since the session logged
    /// in ([`Error::SessionEnded`]); else the statement's own condition failed
    /// ([`Error::Conflict`]). One more read, on this path only.
    fn missed(&self, session: SessionAccount) -> Error {
        match self.backend.session_state(session.id) {
            Ok(None) => Error::SessionEnded("the account no longer exists"),
            Ok(Some(state)) if state.generation != session.generation => {
                Error::SessionEnded("the password was changed or reset")
            }
            Ok(Some(state)) if state.locked => {
                Error::SessionEnded("the account was locked by the operator")
            }
            Ok(Some(_)) => Error::Conflict,
            Err(e) => e,
        }
    }

    /// [`Self::sign_in`] with a password, its outcome only.
    #[cfg(test)]
    pub(crate) fn login(
        &self,
        username: &str,
        password: &[u8],
        from: IpAddr,
    ) -> Result<LoginOutcome> {
        Ok(self
            .sign_in(username, password, from, SignInMethod::Password)?
            .outcome)
    }

    /// A sign-in attempt by `username` with `password` from `from` (by `method`: the
    /// account protocol's `login` or the legacy exchange), refused without checking the
    /// password while that name (unless the account knows the address), pair or address is
    /// throttled (see [`ThrottlePolicy`]). On success, the account's credentials' generation
    /// as read with the hash that was checked (the session's [`SessionAccount`]). A locked
    /// account's right password gives [`LoginOutcome::Locked`] (and counts as a right
    /// password); a wrong one the usual failure. A name that breaks the name rules is never
    /// looked up: it is a failure, counted under the address only. Every attempt on an
    /// existing account goes into its history.
    pub(crate) fn sign_in(
        &self,
        username: &str,
        password: &[u8],
        from: IpAddr,
        method: SignInMethod,
    ) -> Result<SignIn> {
        let keys = ThrottleKeys::password_check(username, from, &self.throttle);
        let attempt = self.attempt(&keys);
        let client = from.to_canonical().to_string();
        let record = match self.counted_sign_in(&attempt, &client, method)? {
            Ok(record) => record,
            Err(refused) => return Ok(refused),
        };
        let event = history_event(record.as_ref().map(|r| r.id), &client, method);
        let wrong = event(SignInOutcome::WrongPassword);
        let Some(record) = self.settled_check(&attempt, record, password, wrong)? else {
            return Ok(SignIn::refused(LoginOutcome::Failed));
        };
        if record.locked {
            self.settle(
                &attempt,
                Outcome::Passed(record.id),
                None,
                event(SignInOutcome::Locked),
            );
            return Ok(SignIn::refused(LoginOutcome::Locked));
        }
        let last = self.record_login(&attempt, &record, password, event(SignInOutcome::SignedIn));
        Ok(SignIn {
            outcome: LoginOutcome::Success(record.id),
            generation: record.generation,
            last,
        })
    }

    /// A sign-in attempt by `username` from `from` with the certificate of `fingerprint`,
    /// presented by the connection: it signs in if that certificate is enrolled for the
    /// account. Counted under the address only: a certificate that is not enrolled is no
    /// guess of the account's password. Otherwise as [`Self::sign_in`]: refused while the
    /// address is throttled, [`LoginOutcome::Locked`] for a locked account's enrolled
    /// certificate, every attempt on an existing account in its history.
    pub(crate) fn sign_in_with_certificate(
        &self,
        username: &str,
        fingerprint: &str,
        from: IpAddr,
    ) -> Result<SignIn> {
        let method = SignInMethod::Certificate;
        let keys = ThrottleKeys::certificate(username, from, &self.throttle);
        let attempt = self.attempt(&keys);
        let client = from.to_canonical().to_string();
        let record = match self.counted_sign_in(&attempt, &client, method)? {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.settle(&attempt, Outcome::Failed, None, None);
                return Ok(SignIn::refused(LoginOutcome::Failed));
            }
            Err(refused) => return Ok(refused),
        };
        let event = history_event(Some(record.id), &client, method);
        let enrolled = self
            .backend
            .certificate_enrolled(record.id, fingerprint)
            .inspect_err(|_| {
                self.settle(&attempt, Outcome::Unchecked, None, None);
            })?;
        if !enrolled {
            let unknown = event(SignInOutcome::UnknownCertificate);
            self.settle(&attempt, Outcome::Failed, None, unknown);
            return Ok(SignIn::refused(LoginOutcome::Failed));
        }
        if record.locked {
            let locked = event(SignInOutcome::Locked);
            self.settle(&attempt, Outcome::Passed(record.id), None, locked);
            return Ok(SignIn::refused(LoginOutcome::Locked));
        }
        let login = LoginUpdate {
            rehash: None,
            certificate: Some(fingerprint),
        };
        let signed_in = event(SignInOutcome::SignedIn);
        let last = self.settle(&attempt, Outcome::Passed(record.id), Some(login), signed_in);
        Ok(SignIn {
            outcome: LoginOutcome::Success(record.id),
            generation: record.generation,
            last,
        })
    }

    /// Counts a sign-in `attempt` from `client` by `method`, reading the login record of the
    /// account it names; a refusal is given as the [`SignIn`] to answer, after recording it
    /// in that account's history.
    fn counted_sign_in(
        &self,
        attempt: &Attempt<'_>,
        client: &str,
        method: SignInMethod,
    ) -> Result<std::result::Result<Option<LoginRecord>, SignIn>> {
        match self.count_attempt(attempt, true) {
            Ok(record) => Ok(Ok(record)),
            Err(Error::Throttled(wait, limit)) => {
                if let Some(name) = attempt.keys.username()
                    && let Err(e) =
                        self.backend
                            .record_throttled(name, client, method, THROTTLED_EVENT_GAP)
                {
                    log::warn!("could not record a throttled sign-in: {e}");
                }
                Ok(Err(SignIn::refused(LoginOutcome::Throttled(wait, limit))))
            }
            Err(e) => Err(e),
        }
    }

    /// Account `id`'s credentials' generation and lock.
    #[cfg(test)]
    fn session_state(&self, id: AccountId) -> Result<SessionState> {
        self.backend.session_state(id)?.ok_or(Error::NoSuchAccount)
    }

    /// Every account, by name.
    pub(crate) fn accounts(&self) -> Result<Vec<AccountSummary>> {
        self.backend.accounts(None)
    }

    /// The account called `username` (in any letter case); [`Error::NoSuchAccount`] if none,
    /// or if the name breaks the name rules (such a name is never looked up).
    pub(crate) fn account_named(&self, username: &str) -> Result<AccountSummary> {
        check_username(username).map_err(|_| Error::NoSuchAccount)?;
        self.backend
            .accounts(Some(username))?
            .into_iter()
            .next()
            .ok_or(Error::NoSuchAccount)
    }

    /// Everything stored about account `id` but its password hash, for the operator.
    pub(crate) fn operator_view(&self, id: AccountId) -> Result<AccountView> {
        self.backend.account(id, None)?.ok_or(Error::NoSuchAccount)
    }

    /// Locks or unlocks the account called `username`. Unlocking also clears the failure
    /// counts of its name and of its name at every address, in the same transaction.
    pub(crate) fn set_locked(&self, username: &str, locked: bool) -> Result<()> {
        let account = self.account_named(username)?;
        let done = if locked {
            self.backend.lock(account.id)?
        } else {
            self.backend
                .clear_failure_counts(&count_keys_of(&account.username), Some(account.id))?
                .is_some()
        };
        if !done {
            return Err(Error::NoSuchAccount);
        }
        Ok(())
    }

    /// Gives the account called `username` a new password, whatever its old one; its open
    /// sessions end at their next command. Policy is the caller's.
    pub(crate) fn reset_password(&self, username: &str, password: &[u8]) -> Result<()> {
        let account = self.account_named(username)?;
        let hash = self.new_hash(password, HashTurn::Create, OPERATOR)?;
        if !self.backend.reset_password_hash(account.id, &hash)? {
            return Err(Error::NoSuchAccount);
        }
        Ok(())
    }

    /// Deletes the account called `username` and everything stored with it;
    /// [`Error::Conflict`] if its password changed while this ran.
    pub(crate) fn remove(&self, username: &str) -> Result<()> {
        let account = self.account_named(username)?;
        let record = self
            .backend
            .find_login(&account.username)?
            .ok_or(Error::NoSuchAccount)?;
        if !self.backend.delete_account(record.id, None, &record.hash)? {
            return Err(match self.backend.session_state(record.id)? {
                Some(_) => Error::Conflict,
                None => Error::NoSuchAccount,
            });
        }
        Ok(())
    }

    /// Every count, by key: failures (`user:NAME`, `pair:NAME@ADDRESS`, `addr:ADDRESS`),
    /// signups (`signup:ADDRESS`) and successful password checks in their window
    /// (`success:NAME`, `success-addr:ADDRESS`).
    pub(crate) fn failure_counts(&self) -> Result<Vec<(String, FailureCount)>> {
        self.backend.failure_counts()
    }

    /// Clears, in one transaction, the failure counts of `target` (see [`ThrottleTarget`]).
    /// Gives how many were cleared.
    pub(crate) fn clear_failure_counts(&self, target: &ThrottleTarget) -> Result<usize> {
        let selection = match target {
            ThrottleTarget::User(name) => count_keys_of(name),
            ThrottleTarget::Address(ip) => count_keys_at(*ip),
        };
        Ok(self
            .backend
            .clear_failure_counts(&selection, None)?
            .unwrap_or(0))
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

    /// An attempt under `keys` now, under the store's policy.
    fn attempt<'a>(&'a self, keys: &'a ThrottleKeys) -> Attempt<'a> {
        Attempt {
            policy: &self.throttle,
            keys,
            now: unix_now(),
        }
    }

    /// Checks and counts `attempt` before the slow hash, with `read_login` reading the login
    /// record of the account it names: attempts sent at once are all counted, so a burst
    /// cannot pass the limit. [`Error::Throttled`] while a key refuses.
    fn count_attempt(
        &self,
        attempt: &Attempt<'_>,
        read_login: bool,
    ) -> Result<Option<LoginRecord>> {
        match self.backend.count_attempt(attempt, read_login)? {
            Counted::Refused(refusal) => Err(Error::Throttled(
                Duration::from_secs_f64((refusal.until - attempt.now).max(0.0)),
                refusal.limit,
            )),
            Counted::Counted(record) => Ok(record),
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

    /// A new hash of `password` at the store's cost, as stored, its turn in the gate for
    /// `client`.
    fn new_hash(&self, password: &[u8], turn: HashTurn, client: &str) -> Result<String> {
        Ok(self
            .hashing(turn, client, || PasswordHash::new(password, self.params))??
            .to_string())
    }

    /// Runs a password hash for `client` (an address key, or [`OPERATOR`]) when the gate
    /// gives it a turn.
    fn hashing<T>(&self, turn: HashTurn, client: &str, hash: impl FnOnce() -> T) -> Result<T> {
        self.gate
            .run(turn, client, hash)
            .map_err(|hash_gate::Busy| Error::Busy)
    }
}

/// The history event of an attempt on `account` (none if there is no such account) from `client` by `method`, by its outcome.
fn history_event<'a>(
    account: Option<AccountId>,
    client: &'a str,
    method: SignInMethod,
) -> impl Fn(SignInOutcome) -> Option<SignInRecord<'a>> {
    move |outcome| {
        account.map(|account| SignInRecord {
            account,
            address: client,
            method,
            outcome,
        })
    }
}

/// The hashing gate's client for hashes no network client asks for: the operator's, the
/// demo account's.
const OPERATOR: &str = "";

/// Whose failure counts the operator clears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ThrottleTarget {
    /// An account name's: its `user:` and `pair:` keys, in any letter case.
    User(String),
    /// An address's, as counted (an IPv6 address counts as its /64): its `addr:`, `signup:`
    /// and `pair:...@` keys.
    Address(IpAddr),
}

/// As the operator reads it: "the name NAME", "the address ADDRESS" (as counted).
impl fmt::Display for ThrottleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThrottleTarget::User(name) => write!(f, "the name {name}"),
            ThrottleTarget::Address(ip) => write!(f, "the address {}", address_key(*ip)),
        }
    }
}

/// Which failure counts a clear removes: those `matches` picks; and the keys every attempt
/// under them counts too (`anchors`), whose locks a clear takes to wait for the attempts in
/// flight.
pub(crate) struct KeySelection {
    /// Every attempt that counts under a key `matches` picks also counts under one of these.
    pub(crate) anchors: Vec<String>,
    /// Whether a key is one to clear.
    pub(crate) matches: Box<dyn Fn(&str) -> bool>,
}

/// Which counts are an account name's: its `user:`, `pair:` and `success:` keys, in any letter
/// case. Every attempt under them counts under `user:NAME`.
fn count_keys_of(name: &str) -> KeySelection {
    let name = name.to_lowercase();
    let (user, pair, successes) = (
        format!("user:{name}"),
        format!("pair:{name}@"),
        format!("success:{name}"),
    );
    KeySelection {
        anchors: vec![user.clone()],
        matches: Box::new(move |key: &str| {
            key == user || key == successes || key.starts_with(&pair)
        }),
    }
}

/// Which counts are an address's (as counted: an IPv6 /64): its `addr:`, `signup:`,
/// `success-addr:` and `pair:...@` keys. Every attempt under them counts under `addr:` (a
/// password check) or `signup:` (a signup).
fn count_keys_at(ip: IpAddr) -> KeySelection {
    let address = address_key(ip);
    let (addr, signup, successes, at) = (
        format!("addr:{address}"),
        format!("signup:{address}"),
        format!("success-addr:{address}"),
        format!("@{address}"),
    );
    KeySelection {
        anchors: vec![addr.clone(), signup.clone()],
        matches: Box::new(move |key: &str| {
            key == addr
                || key == signup
                || key == successes
                || (key.starts_with("pair:") && key.ends_with(&at))
        }),
    }
}

/// The value of `field` among `values`, if given.
fn value_of(values: &[(Field, String)], field: Field) -> Option<&str> {
    values
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, v)| v.as_str())
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
