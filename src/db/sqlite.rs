//! The SQLite backend: one database file (WAL journal, `synchronous=FULL`), a pool of open
//! connections, and the schema's migrations. The only module that names `rusqlite`.
//!
//! The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] upgrades an older file in
//! place, in one transaction.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior, params};

use super::sql::{
    self, ACCOUNT_SUMMARY, ACCOUNT_VIEW, CERTIFICATE_VIEW, Columns, FAILURE_COUNT, LOGIN_RECORD,
    SESSION_STATE, SIGN_IN_EVENT, SchemaVersions, account_summary, account_view, certificate_view,
    failure_count, joined_item, joined_list, last_sign_in, login_record, session_state,
    sign_in_event,
};
use super::throttle::{self, Attempt, FailureCount, FailureCounts, Outcome, PRUNE_BATCH};
use super::{
    AccountId, AccountSummary, AccountTotals, Backend, Counted, KeySelection, LoginRecord,
    LoginUpdate, SchemaChange, SchemaUpgrade, SessionAccount, SessionState, SignInRecord, value_of,
};
use crate::error::{Error, Result};
use crate::secret_file::open_to_others;
use crate::xml::account::{AccountView, Field};
use crate::xml::sign_in::{
    CertificateView, HISTORY_KEPT, LastSignIn, SignInEvent, SignInMethod, SignInOutcome,
};

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
    // Version 5: the addresses each account has logged in from, so that guessing its password
    // elsewhere does not lock its owner out there. Gone with the account.
    "CREATE TABLE known_addresses (
         account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
         address       TEXT NOT NULL,
         last_login_at REAL NOT NULL,
         PRIMARY KEY (account_id, address)
     );
     CREATE INDEX known_addresses_by_time ON known_addresses (last_login_at);",
    // Version 6: the operator's lock (when it was set; NULL: not locked), and a generation
    // of the credentials, one more at each password reset by the operator: a session
    // compares it with the one it logged in with before each command.
    "ALTER TABLE accounts ADD COLUMN locked_at TEXT;
     ALTER TABLE accounts ADD COLUMN credentials_generation INTEGER NOT NULL DEFAULT 0;",
    // Version 7: stale failure counts are found by their time, a few at a time.
    "CREATE INDEX login_failures_by_time ON login_failures (last_failure_at);",
    // Version 8: attempts in flight are counted apart from what they came to (`throttle.rs`),
    // and successful password checks are counted too, in the same table (their keys
    // `success:` and `success-addr:`).
    "ALTER TABLE login_failures ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE login_failures ADD COLUMN pending_at REAL NOT NULL DEFAULT 0;",
    // Version 9: client certificates enrolled for signing in (by the SHA-256 fingerprint of
    // their public key), and each account's newest sign-in attempts. Both go with the
    // account.
    "CREATE TABLE certificates (
         account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
         fingerprint  TEXT NOT NULL,
         label        TEXT NOT NULL DEFAULT '',
         enrolled_at  TEXT NOT NULL,
         last_used_at TEXT,
         PRIMARY KEY (account_id, fingerprint)
     );
     CREATE TABLE sign_ins (
         id         INTEGER PRIMARY KEY,
         account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
         at         TEXT NOT NULL,
         address    TEXT NOT NULL,
         method     TEXT NOT NULL,
         outcome    TEXT NOT NULL
     );
     CREATE INDEX sign_ins_by_account ON sign_ins (account_id, id);",
];

/// Current time as stored: ISO 8601 UTC with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Idle connections kept open for reuse; more may be open while many threads work at once.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(Box::new(e))
    }
}

/// The accounts in one SQLite file, shared by all client threads (and by other server
/// processes on the same machine: SQLite locks the file).
pub(super) struct SqliteBackend {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
    /// Held for each transaction made with [`Self::write`] (the counts' writes, the busiest):
    /// their writers wait their turn here, woken as soon as it is free, rather than in
    /// SQLite's busy handler, which sleeps and retries (a steady stream of writers can starve
    /// one there for seconds). Other writes, and other processes (`./admin`, another
    /// server), still meet the busy handler.
    writer: Mutex<()>,
}

impl SqliteBackend {
    /// Opens (creating if needed, readable by its owner only) the database at `path` and
    /// brings its schema up to date, or refuses an older one ([`sql::migrate`]).
    pub(super) fn open(path: &Path, upgrade: SchemaUpgrade) -> Result<(Self, SchemaChange)> {
        create_private(path)?;
        let backend = SqliteBackend {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            writer: Mutex::new(()),
        };
        let mut conn = backend.connect()?;
        // WAL: readers never wait for the writer, and a crash leaves the old or the new state.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        let change = migrate(&mut conn, upgrade)?;
        backend.release(conn);
        Ok((backend, change))
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

    /// Runs `f` in a transaction that holds the write lock from its start (a read followed by
    /// a write must not find the lock taken in between), committed if `f` succeeds.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let _turn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.with_connection(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    fn release(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_CONNECTIONS && !self.closed.load(Ordering::SeqCst) {
            idle.push(conn);
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

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.get(i)?)
    }
    fn optional_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
    fn integer(&self, i: usize) -> Result<i64> {
        Ok(self.get(i)?)
    }
    fn real(&self, i: usize) -> Result<f64> {
        Ok(self.get(i)?)
    }
    fn boolean(&self, i: usize) -> Result<bool> {
        Ok(self.get(i)?)
    }
}

/// The rows of `statement` for `params`, each mapped by `map`.
fn rows<T>(
    statement: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    map: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut rows = statement.query(params)?;
    let mut all = Vec::new();
    while let Some(row) = rows.next()? {
        all.push(map(row)?);
    }
    Ok(all)
}

/// The first row of `statement` for `params`, if any, mapped by `map`.
fn first_row<T>(
    statement: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    map: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    statement.query(params)?.next()?.map(map).transpose()
}

/// What a login needs of the account called `username` (in any letter case), inside `conn`.
fn find_login(conn: &Connection, username: &str) -> Result<Option<LoginRecord>> {
    first_row(
        &mut *conn.prepare_cached(&format!(
            "SELECT {LOGIN_RECORD} FROM accounts WHERE username = ?1"
        ))?,
        [username],
        |row| login_record(row, 0),
    )
}

/// A session's condition on account `?1` at generation `?2` (none: the operator's).
const GUARD: &str =
    "id = ?1 AND (?2 IS NULL OR (credentials_generation = ?2 AND locked_at IS NULL))";

impl Backend for SqliteBackend {
    fn insert_account(
        &self,
        username: &str,
        password_hash: &str,
        info: &[(Field, String)],
    ) -> Result<AccountId> {
        let value = |field| value_of(info, field).unwrap_or("");
        self.with_connection(|conn| {
            let inserted = conn.execute(
                &format!(
                    "INSERT INTO accounts (username, password_hash, full_name, email, phone,
                                           address, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW}, {NOW})"
                ),
                params![
                    username,
                    password_hash,
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

    fn find_login(&self, username: &str) -> Result<Option<LoginRecord>> {
        self.with_connection(|conn| find_login(conn, username))
    }

    fn session_state(&self, id: AccountId) -> Result<Option<SessionState>> {
        self.with_connection(|conn| {
            first_row(
                &mut *conn.prepare_cached(&format!(
                    "SELECT {SESSION_STATE} FROM accounts WHERE id = ?1"
                ))?,
                [id],
                |row| session_state(row),
            )
        })
    }

    fn accounts(&self, username: Option<&str>) -> Result<Vec<AccountSummary>> {
        self.with_connection(|conn| {
            rows(
                &mut conn.prepare(&format!(
                    "SELECT {ACCOUNT_SUMMARY} FROM accounts
                     WHERE ?1 IS NULL OR username = ?1 ORDER BY username COLLATE NOCASE, id"
                ))?,
                [username],
                |row| account_summary(row),
            )
        })
    }

    fn lock(&self, id: AccountId) -> Result<bool> {
        self.with_connection(|conn| {
            Ok(conn.execute(
                &format!(
                    "UPDATE accounts SET locked_at = COALESCE(locked_at, {NOW}) WHERE id = ?1"
                ),
                [id],
            )? > 0)
        })
    }

    fn reset_password_hash(&self, id: AccountId, hash: &str) -> Result<bool> {
        self.with_connection(|conn| {
            Ok(conn.execute(
                &format!(
                    "UPDATE accounts SET password_hash = ?1, updated_at = {NOW},
                                         credentials_generation = credentials_generation + 1
                     WHERE id = ?2"
                ),
                params![hash, id],
            )? > 0)
        })
    }

    fn known_addresses(&self, id: AccountId) -> Result<Vec<(String, f64)>> {
        self.with_connection(|conn| {
            rows(
                &mut conn.prepare(
                    "SELECT address, last_login_at FROM known_addresses WHERE account_id = ?1
                     ORDER BY last_login_at DESC",
                )?,
                [id],
                |row| Ok((row.text(0)?, row.real(1)?)),
            )
        })
    }

    fn account_totals(&self) -> Result<AccountTotals> {
        self.with_connection(|conn| {
            Ok(conn.query_row(
                "SELECT count(*), count(locked_at),
                        count(CASE WHEN last_login_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now',
                                                                  '-1 day')
                              THEN 1 END)
                 FROM accounts",
                [],
                |row| {
                    Ok(AccountTotals {
                        accounts: row.get(0)?,
                        locked: row.get(1)?,
                        logged_in_last_day: row.get(2)?,
                    })
                },
            )?)
        })
    }

    fn account(&self, id: AccountId, generation: Option<i64>) -> Result<Option<AccountView>> {
        self.with_connection(|conn| {
            // The hottest query (a session's view): its compiled statement is kept per
            // connection.
            first_row(
                &mut *conn.prepare_cached(&format!(
                    "SELECT {ACCOUNT_VIEW} FROM accounts WHERE {GUARD}"
                ))?,
                params![id, generation],
                |row| account_view(row),
            )
        })
    }

    fn credentials(&self, session: SessionAccount) -> Result<Option<(String, String)>> {
        self.with_connection(|conn| {
            first_row(
                &mut *conn.prepare_cached(&format!(
                    "SELECT username, password_hash FROM accounts WHERE {GUARD}"
                ))?,
                params![session.id, session.generation],
                |row| Ok((row.text(0)?, row.text(1)?)),
            )
        })
    }

    fn update_account(
        &self,
        session: SessionAccount,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<Option<AccountView>> {
        let change = |field| value_of(changes, field);
        self.with_connection(|conn| {
            first_row(
                &mut *conn.prepare_cached(&format!(
                    "UPDATE accounts SET full_name = COALESCE(?3, full_name),
                                         email = COALESCE(?4, email),
                                         phone = COALESCE(?5, phone),
                                         address = COALESCE(?6, address),
                                         version = version + 1,
                                         updated_at = {NOW}
                     WHERE {GUARD} AND (?7 IS NULL OR version = ?7)
                     RETURNING {ACCOUNT_VIEW}"
                ))?,
                params![
                    session.id,
                    session.generation,
                    change(Field::FullName),
                    change(Field::Email),
                    change(Field::Phone),
                    change(Field::Address),
                    expected_version
                ],
                |row| account_view(row),
            )
        })
    }

    fn replace_password_hash(
        &self,
        session: SessionAccount,
        old: &str,
        new: &str,
    ) -> Result<Option<i64>> {
        self.with_connection(|conn| {
            first_row(
                &mut *conn.prepare_cached(&format!(
                    "UPDATE accounts SET password_hash = ?4, updated_at = {NOW},
                                         credentials_generation = credentials_generation + 1
                     WHERE {GUARD} AND password_hash = ?3
                     RETURNING credentials_generation"
                ))?,
                params![session.id, session.generation, old, new],
                |row| row.integer(0),
            )
        })
    }

    fn delete_account(&self, id: AccountId, generation: Option<i64>, hash: &str) -> Result<bool> {
        self.with_connection(|conn| {
            Ok(conn.execute(
                &format!("DELETE FROM accounts WHERE {GUARD} AND password_hash = ?3"),
                params![id, generation, hash],
            )? > 0)
        })
    }

    fn count_attempt(&self, attempt: &Attempt<'_>, read_login: bool) -> Result<Counted> {
        self.write(|tx| {
            if let Some(refusal) = throttle::count_attempt(&mut SqliteFailureCounts(tx), attempt)? {
                return Ok(Counted::Refused(refusal));
            }
            let record = match attempt.keys.username() {
                Some(name) if read_login => find_login(tx, name)?,
                _ => None,
            };
            Ok(Counted::Counted(record))
        })
    }

    fn settle(
        &self,
        attempt: &Attempt<'_>,
        outcome: Outcome,
        login: Option<LoginUpdate<'_>>,
        event: Option<SignInRecord<'_>>,
    ) -> Result<Option<LastSignIn>> {
        self.write(|tx| {
            throttle::settle(&mut SqliteFailureCounts(tx), attempt, outcome)?;
            if let (Outcome::Passed(id), Some(login)) = (outcome, login) {
                record_login(tx, id, login)?;
            }
            let Some(event) = event else {
                return Ok(None);
            };
            let last = match event.outcome {
                SignInOutcome::SignedIn => Some(last_sign_in_of(tx, event.account)?),
                _ => None,
            };
            record_sign_in(tx, &event)?;
            Ok(last)
        })
    }

    fn record_throttled(
        &self,
        username: &str,
        address: &str,
        method: SignInMethod,
        gap: Duration,
    ) -> Result<()> {
        // Read first, without the write lock: most refusals of a flood write nothing.
        let throttled = SignInOutcome::Throttled.name();
        let since = format!("-{} seconds", gap.as_secs());
        let account = self.with_connection(|conn| {
            first_row(
                &mut *conn.prepare_cached(
                    "SELECT a.id FROM accounts a WHERE a.username = ?1 AND NOT EXISTS (
                         SELECT 1 FROM sign_ins s
                          WHERE s.account_id = a.id AND s.outcome = ?2
                            AND s.at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3))",
                )?,
                params![username, throttled, since],
                |row| row.integer(0),
            )
        })?;
        let Some(account) = account else {
            return Ok(());
        };
        self.write(|tx| {
            // Another refusal may have written one meanwhile.
            let recent = tx
                .prepare_cached(
                    "SELECT 1 FROM sign_ins WHERE account_id = ?1 AND outcome = ?2
                        AND at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3)",
                )?
                .exists(params![account, throttled, since])?;
            if recent {
                return Ok(());
            }
            record_sign_in(
                tx,
                &SignInRecord {
                    account,
                    address,
                    method,
                    outcome: SignInOutcome::Throttled,
                },
            )
        })
    }

    fn certificate_enrolled(&self, id: AccountId, fingerprint: &str) -> Result<bool> {
        self.with_connection(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM certificates WHERE account_id = ?1 AND fingerprint = ?2",
                )?
                .exists(params![id, fingerprint])?)
        })
    }

    fn enroll_certificate(
        &self,
        session: SessionAccount,
        fingerprint: &str,
        label: &str,
        max: usize,
    ) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                &format!(
                    "INSERT INTO certificates (account_id, fingerprint, label, enrolled_at)
                     SELECT id, ?3, ?4, {NOW} FROM accounts
                      WHERE {GUARD}
                        AND (SELECT count(*) FROM certificates WHERE account_id = ?1) < ?5
                     ON CONFLICT DO NOTHING"
                ),
                params![
                    session.id,
                    session.generation,
                    fingerprint,
                    label,
                    i64::try_from(max).unwrap_or(i64::MAX)
                ],
            )? > 0)
        })
    }

    fn certificates(
        &self,
        id: AccountId,
        generation: Option<i64>,
    ) -> Result<Option<Vec<CertificateView>>> {
        self.with_connection(|conn| {
            let found = rows(
                &mut *conn.prepare_cached(&format!(
                    "WITH a AS (SELECT id FROM accounts WHERE {GUARD})
                     SELECT a.id, {CERTIFICATE_VIEW} FROM a
                       LEFT JOIN certificates c ON c.account_id = a.id
                      ORDER BY c.enrolled_at, c.fingerprint"
                ))?,
                params![id, generation],
                |row| joined_item(row, 1, certificate_view),
            )?;
            Ok(joined_list(found))
        })
    }

    fn unenroll_certificate(
        &self,
        id: AccountId,
        generation: Option<i64>,
        fingerprint: &str,
    ) -> Result<bool> {
        self.with_connection(|conn| {
            Ok(conn.execute(
                &format!(
                    "DELETE FROM certificates
                      WHERE account_id = (SELECT id FROM accounts WHERE {GUARD})
                        AND fingerprint = ?3"
                ),
                params![id, generation, fingerprint],
            )? > 0)
        })
    }

    fn sign_ins(
        &self,
        id: AccountId,
        generation: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<SignInEvent>>> {
        self.with_connection(|conn| {
            let found = rows(
                &mut *conn.prepare_cached(&format!(
                    "WITH a AS (SELECT id FROM accounts WHERE {GUARD})
                     SELECT a.id, s.at, s.address, s.method, s.outcome FROM a
                       LEFT JOIN (SELECT * FROM sign_ins WHERE account_id = ?1
                                   ORDER BY id DESC LIMIT ?3) s ON s.account_id = a.id
                      ORDER BY s.id DESC"
                ))?,
                params![id, generation, i64::try_from(limit).unwrap_or(i64::MAX)],
                |row| joined_item(row, 1, sign_in_event),
            )?;
            Ok(joined_list(found))
        })
    }

    fn failure_counts(&self) -> Result<Vec<(String, FailureCount)>> {
        self.with_connection(|conn| {
            rows(
                &mut conn.prepare(&format!(
                    "SELECT {FAILURE_COUNT} FROM login_failures ORDER BY key"
                ))?,
                [],
                |row| failure_count(row),
            )
        })
    }

    /// Attempts are serialised with this by SQLite's one writer at a time.
    fn clear_failure_counts(
        &self,
        selection: &KeySelection,
        unlock: Option<AccountId>,
    ) -> Result<Option<usize>> {
        self.write(|tx| {
            if let Some(id) = unlock
                && tx.execute("UPDATE accounts SET locked_at = NULL WHERE id = ?1", [id])? == 0
            {
                return Ok(None);
            }
            let keys = rows(
                &mut tx.prepare("SELECT key FROM login_failures")?,
                [],
                |row| row.text(0),
            )?;
            let mut cleared = 0;
            for key in keys.iter().filter(|key| (selection.matches)(key)) {
                cleared += tx.execute("DELETE FROM login_failures WHERE key = ?1", [key])?;
            }
            Ok(Some(cleared))
        })
    }

    fn ping(&self) -> Result<()> {
        self.with_connection(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    /// Closes the idle connections, and every busy one as it comes back: once the last is
    /// closed, SQLite checkpoints the WAL into the database file and removes it.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for conn in idle {
            if let Err((_, e)) = conn.close() {
                log::warn!("closing the account database: {e}");
            }
        }
    }
}

/// Records a login of account `id` now, inside `tx`: its time, the hash remade at the
/// store's cost (if nobody changed the password meanwhile), the certificate's last use.
fn record_login(tx: &Transaction<'_>, id: AccountId, login: LoginUpdate<'_>) -> Result<()> {
    tx.prepare_cached(&format!(
        "UPDATE accounts SET last_login_at = {NOW} WHERE id = ?1"
    ))?
    .execute([id])?;
    if let Some((old, new)) = login.rehash {
        tx.execute(
            "UPDATE accounts SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3",
            params![new, id, old],
        )?;
    }
    if let Some(fingerprint) = login.certificate {
        tx.prepare_cached(&format!(
            "UPDATE certificates SET last_used_at = {NOW}
              WHERE account_id = ?1 AND fingerprint = ?2"
        ))?
        .execute(params![id, fingerprint])?;
    }
    Ok(())
}

/// The last sign-in of account `id`, and the failed attempts since, inside `tx`.
fn last_sign_in_of(tx: &Transaction<'_>, id: AccountId) -> Result<LastSignIn> {
    let signed_in = SignInOutcome::SignedIn.name();
    tx.prepare_cached(&format!(
        "WITH last AS (SELECT id, {SIGN_IN_EVENT} FROM sign_ins
                        WHERE account_id = ?1 AND outcome = ?2 ORDER BY id DESC LIMIT 1)
         SELECT l.at, l.address, l.method, l.outcome,
                (SELECT count(*) FROM sign_ins s
                  WHERE s.account_id = ?1 AND s.outcome <> ?2
                    AND s.id > coalesce((SELECT id FROM last), 0))
           FROM (SELECT 1) LEFT JOIN last l"
    ))?
    .query_row(params![id, signed_in], |row| Ok(last_sign_in(row)))?
}

/// Adds `event` to its account's history, if the account still exists, and removes the
/// events past the newest [`HISTORY_KEPT`], inside `tx`.
fn record_sign_in(tx: &Transaction<'_>, event: &SignInRecord<'_>) -> Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO sign_ins (account_id, at, address, method, outcome)
         SELECT id, {NOW}, ?2, ?3, ?4 FROM accounts WHERE id = ?1"
    ))?
    .execute(params![
        event.account,
        event.address,
        event.method.name(),
        event.outcome.name()
    ])?;
    tx.prepare_cached(
        "DELETE FROM sign_ins WHERE account_id = ?1 AND id <= (
             SELECT id FROM sign_ins WHERE account_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![event.account, HISTORY_KEPT as i64])?;
    Ok(())
}

/// The `login_failures` and `known_addresses` tables, inside a write transaction.
struct SqliteFailureCounts<'a>(&'a Transaction<'a>);

impl FailureCounts for SqliteFailureCounts<'_> {
    fn get(&mut self, key: &str) -> Result<Option<FailureCount>> {
        Ok(first_row(
            &mut *self.0.prepare_cached(&format!(
                "SELECT {FAILURE_COUNT} FROM login_failures WHERE key = ?1"
            ))?,
            [key],
            |row| failure_count(row),
        )?
        .map(|(_, count)| count))
    }

    fn put(&mut self, key: &str, count: FailureCount) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO login_failures
                     (key, failures, last_failure_at, blocked_until, pending, pending_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key) DO UPDATE SET failures = ?2, last_failure_at = ?3,
                     blocked_until = ?4, pending = ?5, pending_at = ?6",
            )?
            .execute(params![
                key,
                count.failures,
                count.last_failure_at,
                count.blocked_until,
                count.pending,
                count.pending_at
            ])?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<()> {
        self.0
            .prepare_cached("DELETE FROM login_failures WHERE key = ?1")?
            .execute([key])?;
        Ok(())
    }

    fn forget(&mut self, last_failure_before: f64, now: f64, known_before: f64) -> Result<()> {
        self.0
            .prepare_cached(
                "DELETE FROM login_failures WHERE key IN (
                     SELECT key FROM login_failures
                     WHERE last_failure_at < ?1 AND blocked_until < ?2 AND pending_at < ?1
                     ORDER BY last_failure_at LIMIT ?3)",
            )?
            .execute(params![last_failure_before, now, PRUNE_BATCH])?;
        self.0
            .prepare_cached(
                "DELETE FROM known_addresses WHERE rowid IN (
                     SELECT rowid FROM known_addresses WHERE last_login_at < ?1
                     ORDER BY last_login_at LIMIT ?2)",
            )?
            .execute(params![known_before, PRUNE_BATCH])?;
        Ok(())
    }

    fn knows(&mut self, username: &str, address: &str, since: f64) -> Result<bool> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT 1 FROM known_addresses k JOIN accounts a ON a.id = k.account_id
                 WHERE a.username = ?1 AND k.address = ?2 AND k.last_login_at >= ?3",
            )?
            .exists(params![username, address, since])?)
    }

    fn remember(&mut self, id: AccountId, address: &str, now: f64) -> Result<()> {
        self.0
            .prepare_cached(
                "INSERT INTO known_addresses (account_id, address, last_login_at)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (account_id, address) DO UPDATE SET last_login_at = ?3",
            )?
            .execute(params![id, address, now])?;
        Ok(())
    }
}

/// Creates the database file readable and writable by its owner only (it holds password
/// hashes and addresses); SQLite gives its journal files (`-wal`, `-shm`) the same mode. An
/// existing file others can read (as the open file says, not its path) is used, with a
/// warning.
fn create_private(path: &Path) -> Result<()> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let exposed = File::open(path)
                .and_then(|file| open_to_others(&file))
                .map_err(|e| Error::file("account database", path, e))?;
            if let Some(mode) = exposed {
                log::warn!(
                    "the account database {0} can be read by other users (mode {1:o}); make it \
                     private with `chmod 600 {0} {0}-wal {0}-shm`",
                    path.display(),
                    mode
                );
            }
            Ok(())
        }
        Err(e) => Err(Error::Config(format!(
            "cannot create account database {}: {e}",
            path.display()
        ))),
    }
}

/// SQLite's schema version, in `PRAGMA user_version`.
impl SchemaVersions for Transaction<'_> {
    fn version(&mut self) -> Result<i64> {
        Ok(self.query_row("PRAGMA user_version", [], |row| row.get(0))?)
    }
    fn apply(&mut self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }
    fn set_version(&mut self, version: i64) -> Result<()> {
        Ok(self.pragma_update(None, "user_version", version)?)
    }
}

/// Brings the schema up to the newest version, in one transaction (see [`sql::migrate`]).
fn migrate(conn: &mut Connection, upgrade: SchemaUpgrade) -> Result<SchemaChange> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let change = sql::migrate(&mut tx, MIGRATIONS, upgrade)?;
    tx.commit()?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::contract::{TestDatabase, contract_tests, fast, session};
    use crate::db::{AccountStore, StoreLocation, StoreOptions};
    use crate::password::{MIN_ITERATIONS, PasswordHash, Pbkdf2Params};
    use std::os::unix::fs::PermissionsExt;

    /// A fresh SQLite file in a directory of its own.
    struct SqliteFile(tempfile::TempDir);

    impl SqliteFile {
        fn new() -> SqliteFile {
            SqliteFile(tempfile::tempdir().unwrap())
        }

        fn path(&self) -> PathBuf {
            self.0.path().join("users.db")
        }
    }

    impl TestDatabase for SqliteFile {
        fn open(&self, options: StoreOptions) -> AccountStore {
            AccountStore::open(&StoreLocation::Sqlite(self.path()), options).unwrap()
        }
    }

    contract_tests!(SqliteFile::new());

    #[test]
    fn no_password_in_clear_in_the_files() -> Result<()> {
        let db = SqliteFile::new();
        let s = db.open(fast());
        s.create_account("one", b"same-password", &[])?;
        s.create_account("two", b"same-password", &[])?;
        let raw = std::fs::read(db.path()).unwrap();
        let wal = std::fs::read(db.0.path().join("users.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(!bytes.windows(13).any(|w| w == b"same-password"));
        }
        Ok(())
    }

    #[test]
    fn the_files_are_private() -> Result<()> {
        let db = SqliteFile::new();
        let s = db.open(fast());
        s.create_account("nina", b"pw-nina-1", &[])?;
        for suffix in ["", "-wal", "-shm"] {
            let file = db.0.path().join(format!("users.db{suffix}"));
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        Ok(())
    }

    #[test]
    fn refuses_newer_schema() {
        let db = SqliteFile::new();
        Connection::open(db.path())
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = AccountStore::open(&StoreLocation::Sqlite(db.path()), fast())
            .err()
            .unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn version_1_database_upgraded_in_place() -> Result<()> {
        let db = SqliteFile::new();
        let hash = PasswordHash::new(b"old-pass", Pbkdf2Params::new(MIN_ITERATIONS)?)?;
        {
            let conn = Connection::open(db.path()).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO accounts (username, password_hash, created_at, updated_at)
                 VALUES ('olduser', ?1, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')",
                [hash.to_string()],
            )
            .unwrap();
        }
        let s = db.open(fast());
        let id = s
            .authenticate("olduser", b"old-pass")?
            .expect("account kept");
        let view = s.view(session(id))?;
        assert_eq!(view.created_at, "2025-01-01T00:00:00.000Z");
        assert_eq!(view.version, 1);
        assert_eq!(view.get(Field::FullName), "");
        let version: i64 = Connection::open(db.path())
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        Ok(())
    }

    #[test]
    fn version_5_database_gains_the_lock_and_the_credentials_generation() -> Result<()> {
        let db = SqliteFile::new();
        {
            let conn = Connection::open(db.path()).unwrap();
            for sql in &MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute(
                "INSERT INTO accounts (username, password_hash, created_at, updated_at)
                 VALUES ('fiveuser', 'x', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
                [],
            )
            .unwrap();
        }
        let s = db.open(fast());
        let account = s.account_named("fiveuser")?;
        assert_eq!(account.locked_at, None);
        let state = s.session_state(account.id)?;
        assert_eq!((state.generation, state.locked), (0, false));
        s.set_locked("fiveuser", true)?;
        assert!(s.session_state(account.id)?.locked);
        Ok(())
    }
}
