//! The account store: every read and write of account data goes through [`AccountStore`].
//!
//! Today it is one SQLite file (WAL journal, `synchronous=FULL`). The rest of the program sees
//! only this interface, so that a shared SQL server can take its place when several server
//! instances run behind a load balancer. The store keeps no state of its own beyond a pool of
//! open connections: everything that must be shared lives in the database.
//!
//! The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] upgrades an older file in
//! place, in one transaction.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::account::{AccountView, Field, check_username};
use crate::error::{Error, Result};
use crate::password::{self, HashGate, PasswordHash, Pbkdf2Params};

/// Schema migrations, in order: entry `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1: accounts with salted password hashes.
    "CREATE TABLE accounts (
         id            INTEGER PRIMARY KEY,
         username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
         password_hash TEXT NOT NULL,
         created_at    TEXT NOT NULL,
         updated_at    TEXT NOT NULL,
         last_login_at TEXT
     );",
    // Version 2: the account's information, and a version number for optimistic updates.
    "ALTER TABLE accounts ADD COLUMN full_name TEXT NOT NULL DEFAULT '';
     ALTER TABLE accounts ADD COLUMN email     TEXT NOT NULL DEFAULT '';
     ALTER TABLE accounts ADD COLUMN phone     TEXT NOT NULL DEFAULT '';
     ALTER TABLE accounts ADD COLUMN address   TEXT NOT NULL DEFAULT '';
     ALTER TABLE accounts ADD COLUMN version   INTEGER NOT NULL DEFAULT 1;",
    // Version 3: failed logins per account name and per client address, shared by every
    // server that uses this database.
    "CREATE TABLE login_failures (
         key             TEXT PRIMARY KEY,
         failures        INTEGER NOT NULL,
         last_failure_at REAL NOT NULL,
         blocked_until   REAL NOT NULL
     );",
    // Version 4: account ids are never reused. A session holds its account's id; without
    // AUTOINCREMENT, SQLite gives a deleted newest account's id to the next signup, and a
    // session still bound to the deleted account would act on the new one.
    "CREATE TABLE accounts_v4 (
         id            INTEGER PRIMARY KEY AUTOINCREMENT,
         username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
         password_hash TEXT NOT NULL,
         created_at    TEXT NOT NULL,
         updated_at    TEXT NOT NULL,
         last_login_at TEXT,
         full_name     TEXT NOT NULL DEFAULT '',
         email         TEXT NOT NULL DEFAULT '',
         phone         TEXT NOT NULL DEFAULT '',
         address       TEXT NOT NULL DEFAULT '',
         version       INTEGER NOT NULL DEFAULT 1
     );
     INSERT INTO accounts_v4 (id, username, password_hash, created_at, updated_at,
                              last_login_at, full_name, email, phone, address, version)
         SELECT id, username, password_hash, created_at, updated_at, last_login_at,
                full_name, email, phone, address, version
         FROM accounts;
     DROP TABLE accounts;
     ALTER TABLE accounts_v4 RENAME TO accounts;",
];

/// Current time as stored: ISO 8601 UTC with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Idle connections kept open for reuse; more may be open while many threads work at once.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The database's identifier of an account.
pub type AccountId = i64;

/// When failed logins lead to refusals. Failures are counted per account name (whether or
/// not the account exists, so a refusal tells nothing) and per client address; past a
/// threshold, logins for that name or from that address are refused for a time that doubles
/// with each further failure, up to a cap. Refused attempts are not counted, so an attacker
/// cannot keep the owner out longer than the cap; a success clears the name's count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures for one account name before refusals begin.
    pub per_account: u32,
    /// Failures from one address (an IPv6 /64) before refusals begin.
    pub per_address: u32,
    /// The first refusal period.
    pub first_block: Duration,
    /// The longest refusal period.
    pub longest_block: Duration,
    /// A count is forgotten after this long without failures.
    pub forget_after: Duration,
}

impl ThrottlePolicy {
    /// How long logins are refused after `failures` failures against `threshold`: none below
    /// it, then `first_block`, doubling with each further failure, up to `longest_block`.
    pub fn refusal_period(&self, failures: u32, threshold: u32) -> Option<Duration> {
        let over = failures.checked_sub(threshold)?;
        let period = self.first_block.saturating_mul(1 << over.min(20));
        Some(period.min(self.longest_block))
    }
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

/// How the store hashes and when it refuses logins.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// The cost of new password hashes.
    pub hash: Pbkdf2Params,
    /// How many hashes may be computed at once.
    pub hash_threads: usize,
    /// How long a command may wait for its turn to hash.
    pub hash_wait: Duration,
    /// When failed logins lead to refusals.
    pub throttle: ThrottlePolicy,
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
pub enum LoginOutcome {
    /// The name and password match this account.
    Success(AccountId),
    /// They do not (or the account does not exist).
    Failed,
    /// Too many failures for this name or address: try again after this long.
    Throttled(Duration),
}

/// The account database, shared by all client threads.
pub struct AccountStore {
    path: PathBuf,
    params: Pbkdf2Params,
    gate: HashGate,
    throttle: ThrottlePolicy,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl AccountStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self> {
        let store = AccountStore {
            path: path.to_path_buf(),
            params: options.hash,
            gate: HashGate::new(options.hash_threads, options.hash_wait),
            throttle: options.throttle,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        };
        let mut conn = store.connect()?;
        // WAL: readers never wait for the writer, and a crash leaves the old or the new state.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        migrate(&mut conn)?;
        store.release(conn);
        Ok(store)
    }

    /// Creates an account with the given information (other fields empty);
    /// [`Error::UserExists`] if the name is taken (in any letter case). Policy is the caller's.
    pub fn create_account(
        &self,
        username: &str,
        password: &[u8],
        info: &[(Field, String)],
    ) -> Result<AccountId> {
        let hash = self
            .hashing(|| PasswordHash::new(password, self.params))??
            .to_string();
        let value = |field: Field| {
            info.iter()
                .find(|(f, _)| *f == field)
                .map_or("", |(_, v)| v.as_str())
        };
        self.with_connection(|conn| {
            let inserted = conn.execute(
                &format!(
                    "INSERT INTO accounts (username, password_hash, full_name, email, phone,
                                           address, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW}, {NOW})"
                ),
                params![
                    username,
                    hash,
                    value(Field::FullName),
                    value(Field::Email),
                    value(Field::Phone),
                    value(Field::Address)
                ],
            );
            match inserted {
                Ok(_) => Ok(conn.last_insert_rowid()),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    Err(Error::UserExists(username.to_string()))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Checks a user name and password. `Some(id)` on success, `None` for an unknown user or a
    /// wrong password; both take about the same time. A success records the login time and
    /// remakes the hash if it was made at a lower cost than the store's.
    pub fn authenticate(&self, username: &str, password: &[u8]) -> Result<Option<AccountId>> {
        let found: Option<(AccountId, String)> = self.with_connection(|conn| {
            Ok(conn
                .prepare_cached("SELECT id, password_hash FROM accounts WHERE username = ?1")?
                .query_row([username], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?)
        })?;
        let Some((id, stored)) = found else {
            self.hashing(|| password::spend_verification_time(password, self.params))?;
            return Ok(None);
        };
        let hash = PasswordHash::parse(&stored)?;
        if !self.hashing(|| hash.verify(password))? {
            return Ok(None);
        }
        let upgraded = if hash.needs_upgrade(self.params) {
            Some(
                self.hashing(|| PasswordHash::new(password, self.params))??
                    .to_string(),
            )
        } else {
            None
        };
        // Bookkeeping: a failure here must not turn a good login into an error.
        let recorded = self.with_connection(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                &format!("UPDATE accounts SET last_login_at = {NOW} WHERE id = ?1"),
                [id],
            )?;
            if let Some(new_hash) = &upgraded {
                // Only if nobody changed the password meanwhile.
                tx.execute(
                    "UPDATE accounts SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3",
                    params![new_hash, id, stored],
                )?;
            }
            tx.commit()?;
            Ok(())
        });
        if let Err(e) = recorded {
            log::warn!("could not record the login time of account {id}: {e}");
        }
        Ok(Some(id))
    }

    /// Everything stored about an account but its password hash.
    pub fn view(&self, id: AccountId) -> Result<AccountView> {
        self.with_connection(|conn| {
            // The hottest query (a session's view): its compiled statement is kept per
            // connection.
            conn.prepare_cached(
                "SELECT username, full_name, email, phone, address, created_at, updated_at,
                        last_login_at, version
                 FROM accounts WHERE id = ?1",
            )?
            .query_row([id], |row| {
                Ok(AccountView {
                    username: row.get(0)?,
                    fields: [row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?],
                    created_at: row.get(5)?,
                    updated_at: row.get(6)?,
                    last_login_at: row.get(7)?,
                    version: row.get(8)?,
                })
            })
            .optional()?
            .ok_or(Error::NoSuchAccount)
        })
    }

    /// Changes some of an account's information in one transaction and gives the new version.
    /// With `expected_version`, refuses with [`Error::Conflict`] if the account is no longer
    /// at that version.
    pub fn update(
        &self,
        id: AccountId,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<i64> {
        let change = |field: Field| {
            changes
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, v)| v.as_str())
        };
        self.with_connection(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: i64 = tx
                .query_row("SELECT version FROM accounts WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or(Error::NoSuchAccount)?;
            if expected_version.is_some_and(|v| v != current) {
                return Err(Error::Conflict);
            }
            tx.execute(
                &format!(
                    "UPDATE accounts SET full_name = COALESCE(?1, full_name),
                                         email = COALESCE(?2, email),
                                         phone = COALESCE(?3, phone),
                                         address = COALESCE(?4, address),
                                         version = version + 1,
                                         updated_at = {NOW}
                     WHERE id = ?5"
                ),
                params![
                    change(Field::FullName),
                    change(Field::Email),
                    change(Field::Phone),
                    change(Field::Address),
                    id
                ],
            )?;
            tx.commit()?;
            Ok(current + 1)
        })
    }

    /// Replaces the password, given the current one.
    pub fn change_password(&self, id: AccountId, current: &[u8], new: &[u8]) -> Result<()> {
        let stored = self.confirm_password(id, current)?;
        let new_hash = self
            .hashing(|| PasswordHash::new(new, self.params))??
            .to_string();
        self.with_connection(|conn| {
            let changed = conn.execute(
                &format!(
                    "UPDATE accounts SET password_hash = ?1, updated_at = {NOW}
                     WHERE id = ?2 AND password_hash = ?3"
                ),
                params![new_hash, id, stored],
            )?;
            if changed == 0 {
                return Err(Error::Conflict);
            }
            Ok(())
        })
    }

    /// Deletes the account and everything stored with it, given its password.
    pub fn delete(&self, id: AccountId, password: &[u8]) -> Result<()> {
        let stored = self.confirm_password(id, password)?;
        self.with_connection(|conn| {
            let deleted = conn.execute(
                "DELETE FROM accounts WHERE id = ?1 AND password_hash = ?2",
                params![id, stored],
            )?;
            if deleted == 0 {
                return Err(Error::Conflict);
            }
            Ok(())
        })
    }

    /// The stored hash of account `id` if `password` matches it; [`Error::WrongPassword`] if not.
    fn confirm_password(&self, id: AccountId, password: &[u8]) -> Result<String> {
        let stored: String = self.with_connection(|conn| {
            conn.query_row(
                "SELECT password_hash FROM accounts WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(Error::NoSuchAccount)
        })?;
        let hash = PasswordHash::parse(&stored)?;
        if self.hashing(|| hash.verify(password))? {
            Ok(stored)
        } else {
            Err(Error::WrongPassword)
        }
    }

    /// A login attempt by `username` from `from`, refused without checking the password while
    /// that name or address is throttled (see [`ThrottlePolicy`]).
    pub fn login(&self, username: &str, password: &[u8], from: IpAddr) -> Result<LoginOutcome> {
        // A name that no account can have is not counted (the table would fill with junk
        // names); its address is.
        let account = check_username(username)
            .map_or(None, |()| Some(format!("user:{}", username.to_lowercase())));
        let address = format!("addr:{}", address_key(from));
        let t = self.throttle;
        let counted: Vec<(&String, u32)> = account
            .iter()
            .map(|key| (key, t.per_account))
            .chain([(&address, t.per_address)])
            .collect();
        let now = unix_now();
        // Check and count the attempt in one transaction, before the slow hash: attempts sent
        // at once are all counted, so a burst cannot pass the limit. A success takes its
        // count back.
        let blocked_until = self.with_connection(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut blocked_until = 0f64;
            let mut counts = Vec::new();
            for &(key, threshold) in &counted {
                let previous: Option<(u32, f64, f64)> = tx
                    .query_row(
                        "SELECT failures, last_failure_at, blocked_until FROM login_failures
                         WHERE key = ?1",
                        [key],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
                    .optional()?;
                let failures = match previous {
                    Some((n, last, _)) if now - last < t.forget_after.as_secs_f64() => n,
                    _ => 0,
                };
                blocked_until = blocked_until.max(previous.map_or(0.0, |p| p.2));
                counts.push((key, threshold, failures + 1));
            }
            if blocked_until > now {
                return Ok(blocked_until);
            }
            for (key, threshold, failures) in counts {
                let until = t
                    .refusal_period(failures, threshold)
                    .map_or(0.0, |d| now + d.as_secs_f64());
                tx.execute(
                    "INSERT INTO login_failures (key, failures, last_failure_at, blocked_until)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET failures = ?2, last_failure_at = ?3,
                                                     blocked_until = ?4",
                    params![key, failures, now, until],
                )?;
            }
            // Forget old counts, so the table holds only recent failures.
            tx.execute(
                "DELETE FROM login_failures WHERE last_failure_at < ?1 AND blocked_until < ?2",
                params![now - t.forget_after.as_secs_f64(), now],
            )?;
            tx.commit()?;
            Ok(0.0)
        })?;
        if blocked_until > now {
            return Ok(LoginOutcome::Throttled(Duration::from_secs_f64(
                blocked_until - now,
            )));
        }
        let Some(id) = self.authenticate(username, password)? else {
            return Ok(LoginOutcome::Failed);
        };
        // Bookkeeping: a failure here must not turn a good login into an error.
        let cleared = self.with_connection(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &account {
                tx.execute("DELETE FROM login_failures WHERE key = ?1", [key])?;
            }
            tx.execute(
                "UPDATE login_failures
                 SET failures = MAX(failures - 1, 0),
                     blocked_until = CASE WHEN failures - 1 < ?2 THEN 0 ELSE blocked_until END
                 WHERE key = ?1",
                params![address, t.per_address],
            )?;
            tx.commit()?;
            Ok(())
        });
        if let Err(e) = cleared {
            log::warn!("could not clear the failed-login count after a login: {e}");
        }
        Ok(LoginOutcome::Success(id))
    }

    /// Runs a password hash when the gate gives it a turn.
    fn hashing<T>(&self, hash: impl FnOnce() -> T) -> Result<T> {
        self.gate.run(hash).map_err(|password::Busy| Error::Busy)
    }

    /// Runs `f` on a pooled connection, opening one if none is idle.
    fn with_connection<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&mut conn);
        self.release(conn);
        result
    }

    fn release(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_CONNECTIONS && !self.closed.load(Ordering::SeqCst) {
            idle.push(conn);
        }
    }

    /// Closes the idle connections, and every busy one as it comes back: once the last is
    /// closed, SQLite checkpoints the WAL into the database file and removes it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in idle {
            if let Err((_, e)) = conn.close() {
                log::warn!("closing the account database: {e}");
            }
        }
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path).map_err(|e| {
            Error::Config(format!(
                "cannot open account database {}: {e}",
                self.path.display()
            ))
        })?;
        // FULL: a commit is on disk before it is acknowledged, so an acknowledged write
        // survives a crash or power loss. (WAL is a property of the file, set in `open`.)
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The address whose failures count together: an IPv4 address, or an IPv6 /64 (one
/// customer's network, usually).
fn address_key(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Brings the schema up to the newest version, in one transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if !(0..=known).contains(&version) {
        return Err(Error::Config(format!(
            "account database schema version {version} is newer than this program knows ({known}); \
             use a newer server"
        )));
    }
    for (to, sql) in (1..).zip(MIGRATIONS).skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", to)?;
        log::info!("account database migrated to schema version {to}");
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::MIN_ITERATIONS;
    use std::sync::Arc;

    fn fast() -> StoreOptions {
        StoreOptions {
            hash: Pbkdf2Params::new(MIN_ITERATIONS).unwrap(),
            ..StoreOptions::default()
        }
    }

    fn store(dir: &tempfile::TempDir) -> AccountStore {
        AccountStore::open(&dir.path().join("users.db"), fast()).unwrap()
    }

    fn stored_hash(dir: &tempfile::TempDir, user: &str) -> String {
        Connection::open(dir.path().join("users.db"))
            .unwrap()
            .query_row(
                "SELECT password_hash FROM accounts WHERE username = ?1",
                [user],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn create_and_authenticate() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let id = s.create_account("aticle", b"123", &[])?;
        assert_eq!(s.authenticate("aticle", b"123")?, Some(id));
        assert_eq!(s.authenticate("aticle", b"124")?, None);
        assert_eq!(s.authenticate("nobody", b"123")?, None);
        assert!(s.authenticate("ATICLE", b"123")?.is_some());
        Ok(())
    }

    #[test]
    fn duplicate_names_refused_in_any_case() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.create_account("Alice", b"secret-1", &[])?;
        assert!(matches!(
            s.create_account("alice", b"secret-2", &[]),
            Err(Error::UserExists(_))
        ));
        Ok(())
    }

    #[test]
    fn persists_across_reopen() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        store(&dir).create_account("bob", b"hunter22", &[])?;
        let reopened = store(&dir);
        assert!(reopened.authenticate("bob", b"hunter22")?.is_some());
        Ok(())
    }

    #[test]
    fn same_password_different_hashes_and_no_clear_text() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.create_account("one", b"same-password", &[])?;
        s.create_account("two", b"same-password", &[])?;
        let (a, b) = (stored_hash(&dir, "one"), stored_hash(&dir, "two"));
        assert_ne!(a, b);
        assert!(!a.contains("same-password"));
        let raw = std::fs::read(dir.path().join("users.db")).unwrap();
        let wal = std::fs::read(dir.path().join("users.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(13).any(|w| w == b"same-password"));
        }
        Ok(())
    }

    #[test]
    fn cheaper_hash_upgraded_at_login() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        store(&dir).create_account("carol", b"pw-carol", &[])?;
        let before = stored_hash(&dir, "carol");
        assert!(before.contains("$i=1000$"));
        let options = StoreOptions {
            hash: Pbkdf2Params::new(2000)?,
            ..fast()
        };
        let stronger = AccountStore::open(&dir.path().join("users.db"), options)?;
        assert!(stronger.authenticate("carol", b"pw-carol")?.is_some());
        let after = stored_hash(&dir, "carol");
        assert!(after.contains("$i=2000$"), "{after}");
        assert!(stronger.authenticate("carol", b"pw-carol")?.is_some());
        Ok(())
    }

    #[test]
    fn records_last_login() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.create_account("dave", b"pw-dave", &[])?;
        s.authenticate("dave", b"pw-dave")?;
        let last: Option<String> = Connection::open(dir.path().join("users.db"))
            .unwrap()
            .query_row(
                "SELECT last_login_at FROM accounts WHERE username = 'dave'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(last.is_some_and(|t| t.ends_with('Z')));
        Ok(())
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = AccountStore::open(&path, fast()).err().unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn concurrent_logins() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(&dir));
        for i in 0..8 {
            s.create_account(&format!("user{i}"), format!("password-{i}").as_bytes(), &[])?;
        }
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || -> Result<()> {
                    for round in 0..10 {
                        let i = (t + round) % 8;
                        let user = format!("user{i}");
                        let ok = s.authenticate(&user, format!("password-{i}").as_bytes())?;
                        assert!(ok.is_some());
                        assert!(s.authenticate(&user, b"wrong")?.is_none());
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap()?;
        }
        Ok(())
    }

    #[test]
    fn view_update_and_conflicts() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let id = s.create_account(
            "erin",
            b"pw-erin-1",
            &[(Field::Email, "erin@example.org".into())],
        )?;
        let v1 = s.view(id)?;
        assert_eq!(v1.username, "erin");
        assert_eq!(v1.get(Field::Email), "erin@example.org");
        assert_eq!(v1.get(Field::Phone), "");
        assert_eq!(v1.version, 1);
        assert_eq!(v1.last_login_at, None);

        let v2 = s.update(id, &[(Field::Phone, "555 0100".into())], Some(1))?;
        assert_eq!(v2, 2);
        // A second writer that saw version 1 loses; nothing it sent is stored.
        assert!(matches!(
            s.update(id, &[(Field::Phone, "999".into())], Some(1)),
            Err(Error::Conflict)
        ));
        let now = s.view(id)?;
        assert_eq!(now.get(Field::Phone), "555 0100");
        assert_eq!(now.get(Field::Email), "erin@example.org");
        assert_eq!(now.version, 2);
        // Without a version: last writer wins; an empty value clears.
        assert_eq!(s.update(id, &[(Field::Email, String::new())], None)?, 3);
        assert_eq!(s.view(id)?.get(Field::Email), "");
        Ok(())
    }

    #[test]
    fn password_change_and_delete_need_the_password() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let id = s.create_account("frank", b"pw-frank-1", &[])?;
        assert!(matches!(
            s.change_password(id, b"wrong", b"pw-frank-2"),
            Err(Error::WrongPassword)
        ));
        s.change_password(id, b"pw-frank-1", b"pw-frank-2")?;
        assert_eq!(s.authenticate("frank", b"pw-frank-1")?, None);
        assert_eq!(s.authenticate("frank", b"pw-frank-2")?, Some(id));
        assert!(matches!(
            s.delete(id, b"pw-frank-1"),
            Err(Error::WrongPassword)
        ));
        s.delete(id, b"pw-frank-2")?;
        assert!(matches!(s.view(id), Err(Error::NoSuchAccount)));
        assert_eq!(s.authenticate("frank", b"pw-frank-2")?, None);
        assert!(matches!(
            s.delete(id, b"pw-frank-2"),
            Err(Error::NoSuchAccount)
        ));
        Ok(())
    }

    #[test]
    fn version_1_database_upgraded_in_place() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let hash = PasswordHash::new(b"old-pass", Pbkdf2Params::new(MIN_ITERATIONS)?)?;
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO accounts (username, password_hash, created_at, updated_at)
                 VALUES ('olduser', ?1, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')",
                [hash.to_string()],
            )
            .unwrap();
        }
        let s = store(&dir);
        let id = s
            .authenticate("olduser", b"old-pass")?
            .expect("account kept");
        let view = s.view(id)?;
        assert_eq!(view.created_at, "2025-01-01T00:00:00.000Z");
        assert_eq!(view.version, 1);
        assert_eq!(view.get(Field::FullName), "");
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        Ok(())
    }

    #[test]
    fn failed_logins_are_throttled_per_account_and_address() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let id = s.create_account("gina", b"pw-gina-1", &[])?;
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        let owner: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..4 {
            assert_eq!(s.login("gina", b"guess", attacker)?, LoginOutcome::Failed);
        }
        // The fifth failure starts a refusal period for the name, from any address, even
        // with the right password; an unknown name is treated the same way.
        assert_eq!(s.login("gina", b"guess", attacker)?, LoginOutcome::Failed);
        assert!(matches!(
            s.login("GINA", b"pw-gina-1", owner)?,
            LoginOutcome::Throttled(d) if d <= Duration::from_secs(1)
        ));
        for _ in 0..5 {
            s.login("nobody", b"guess", owner)?;
        }
        assert!(matches!(
            s.login("nobody", b"guess", owner)?,
            LoginOutcome::Throttled(_)
        ));
        // After the period the owner gets in, and the count starts over.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            s.login("gina", b"pw-gina-1", owner)?,
            LoginOutcome::Success(id)
        );
        assert_eq!(s.login("gina", b"guess", attacker)?, LoginOutcome::Failed);
        assert_eq!(
            s.login("gina", b"pw-gina-1", owner)?,
            LoginOutcome::Success(id)
        );
        Ok(())
    }

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

    #[test]
    fn addresses_count_by_ipv4_and_ipv6_prefix() {
        assert_eq!(address_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            address_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7"
        );
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn ids_are_never_reused() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let first = s.create_account("ivan", b"pw-ivan-1", &[])?;
        s.delete(first, b"pw-ivan-1")?;
        let second = s.create_account("judy", b"pw-judy-1", &[])?;
        assert_ne!(
            first, second,
            "a session bound to {first} would act on judy"
        );
        assert!(matches!(s.view(first), Err(Error::NoSuchAccount)));
        Ok(())
    }

    #[test]
    fn a_burst_of_guesses_is_counted_before_hashing() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(&dir));
        s.create_account("kate", b"pw-kate-1", &[])?;
        let from: IpAddr = "192.0.2.9".parse().unwrap();
        let outcomes: Vec<LoginOutcome> = (0..24)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || s.login("kate", b"guess", from).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let checked = outcomes
            .iter()
            .filter(|o| **o == LoginOutcome::Failed)
            .count();
        assert_eq!(checked, 5, "{outcomes:?}");
        Ok(())
    }

    #[test]
    fn names_no_account_can_have_are_not_stored() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let from: IpAddr = "192.0.2.10".parse().unwrap();
        let junk = "x".repeat(60_000);
        assert_eq!(s.login(&junk, b"guess", from)?, LoginOutcome::Failed);
        let keys: Vec<String> = Connection::open(dir.path().join("users.db"))
            .unwrap()
            .prepare("SELECT key FROM login_failures")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(keys, ["addr:192.0.2.10"]);
        Ok(())
    }
}
