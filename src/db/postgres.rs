//! The PostgreSQL backend: one database that several server instances share, reached through
//! a pool of connections. The only module that names `postgres` and `r2d2`.
//!
//! The schema has the same versions as SQLite's ([`MIGRATIONS`], recorded in
//! `schema_version`), applied in one transaction under an advisory lock, so instances that
//! start together do not race. Each method is one transaction, committed before it returns;
//! one that PostgreSQL aborts for serialization or a deadlock is run again. Failure counts are
//! read and written under a transaction-scoped advisory lock per key, so that attempts counted
//! at once by several instances are all counted.

use std::time::Duration;

use postgres::error::SqlState;
use postgres::{NoTls, Transaction};
use r2d2::{NopErrorHandler, Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

use super::throttle::{FailureCount, FailureCounts};
use super::{AccountId, AccountSummary, AccountTotals, Backend, LoginRecord, SessionState};
use crate::error::{Error, Result};
use crate::xml::account::{AccountView, Field};

/// Schema migrations, in order: entry `n` takes the schema from version `n` to `n + 1`. The
/// versions are SQLite's (`sqlite.rs`), written for PostgreSQL.
const MIGRATIONS: &[&str] = &[
    // Version 1: accounts with salted password hashes; names unique regardless of case.
    "CREATE TABLE accounts (
         id            BIGSERIAL PRIMARY KEY,
         username      TEXT NOT NULL,
         password_hash TEXT NOT NULL,
         created_at    TEXT NOT NULL,
         updated_at    TEXT NOT NULL,
         last_login_at TEXT
     );
     CREATE UNIQUE INDEX accounts_username ON accounts (lower(username));",
    // Version 2: the account's information, and a version number for optimistic updates.
    "ALTER TABLE accounts ADD COLUMN full_name TEXT NOT NULL DEFAULT '',
                          ADD COLUMN email     TEXT NOT NULL DEFAULT '',
                          ADD COLUMN phone     TEXT NOT NULL DEFAULT '',
                          ADD COLUMN address   TEXT NOT NULL DEFAULT '',
                          ADD COLUMN version   BIGINT NOT NULL DEFAULT 1;",
    // Version 3: failed logins per key, shared by every server that uses this database.
    "CREATE TABLE login_failures (
         key             TEXT PRIMARY KEY,
         failures        BIGINT NOT NULL,
         last_failure_at DOUBLE PRECISION NOT NULL,
         blocked_until   DOUBLE PRECISION NOT NULL
     );",
    // Version 4: account ids are never reused. SQLite needed AUTOINCREMENT for that; a
    // PostgreSQL sequence never gives a number twice, so nothing changes here.
    "SELECT 1;",
    // Version 5: the addresses each account has logged in from. Gone with the account.
    "CREATE TABLE known_addresses (
         account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
         address       TEXT NOT NULL,
         last_login_at DOUBLE PRECISION NOT NULL,
         PRIMARY KEY (account_id, address)
     );
     CREATE INDEX known_addresses_by_time ON known_addresses (last_login_at);",
    // Version 6: the operator's lock, and the credentials' generation (one more at each
    // password reset by the operator).
    "ALTER TABLE accounts ADD COLUMN locked_at TEXT,
                          ADD COLUMN credentials_generation BIGINT NOT NULL DEFAULT 0;",
];

/// Current time as stored: ISO 8601 UTC with milliseconds, as SQLite writes it.
const NOW: &str = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

/// The advisory lock that serialises migrations (any number; ours).
const MIGRATION_LOCK: i64 = 0x5353_4c53_5256;

/// How long connecting, a free connection from the pool, and a statement may take: a
/// database that does not answer gives an error within seconds, never a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const STATEMENT_TIMEOUT_MS: u32 = 5_000;

/// Connections kept at most; more threads wait for one (up to [`CONNECT_TIMEOUT`]).
const MAX_CONNECTIONS: u32 = 32;

/// How many times a transaction aborted for serialization or a deadlock is run.
const ATTEMPTS: usize = 5;

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Store(Box::new(e))
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        Error::Store(format!("no connection to the database: {e}").into())
    }
}

/// Checks a `postgres://` URL; the error says what is wrong, in the driver's words.
pub(super) fn check_url(url: &str) -> std::result::Result<(), String> {
    url.parse::<postgres::Config>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The accounts in a PostgreSQL database.
pub(super) struct PostgresBackend {
    pool: Pool<PostgresConnectionManager<NoTls>>,
}

impl PostgresBackend {
    /// Connects to the database at `url` (its password from the URL, else `PGPASSWORD`) and
    /// brings its schema up to date.
    pub(super) fn open(url: &str) -> Result<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("--db: not a PostgreSQL URL: {e}")))?;
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(CONNECT_TIMEOUT + Duration::from_millis(STATEMENT_TIMEOUT_MS.into()))
            .keepalives(true)
            .options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"))
            .application_name(env!("CARGO_PKG_NAME"));
        let pool = Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT)
            // Failures reach the caller as errors; r2d2 would also log each attempt.
            .error_handler(Box::new(NopErrorHandler))
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        let backend = PostgresBackend { pool };
        backend
            .transaction(migrate)
            .map_err(|e| Error::Config(format!("cannot open the account database: {e}")))?;
        Ok(backend)
    }

    fn connection(&self) -> Result<PooledConnection<PostgresConnectionManager<NoTls>>> {
        Ok(self.pool.get()?)
    }

    /// Runs `f` in a transaction, committed if it succeeds; again, up to [`ATTEMPTS`] times,
    /// if PostgreSQL aborts it for serialization or a deadlock (at any statement or at the
    /// commit).
    fn transaction<T>(&self, mut f: impl FnMut(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            let mut conn = self.connection()?;
            let outcome = conn.transaction().map_err(Error::from).and_then(|mut tx| {
                let value = f(&mut tx)?;
                tx.commit()?;
                Ok(value)
            });
            match outcome {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    log::debug!("transaction retried: {e}");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

/// Whether `e` is PostgreSQL's abort of a transaction that may succeed if run again.
fn retryable(e: &Error) -> bool {
    let Error::Store(source) = e else {
        return false;
    };
    source
        .downcast_ref::<postgres::Error>()
        .and_then(postgres::Error::code)
        .is_some_and(|code| {
            *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        })
}

/// Whether `e` is a unique-constraint violation.
fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Brings the schema up to the newest version, under the migration lock.
fn migrate(tx: &mut Transaction<'_>) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: i32 = tx
        .query_opt("SELECT version FROM schema_version", &[])?
        .map_or(0, |row| row.get(0));
    let known = MIGRATIONS.len() as i32;
    if !(0..=known).contains(&version) {
        return Err(Error::Config(format!(
            "account database schema version {version} is newer than this program knows ({known}); \
             use a newer server"
        )));
    }
    for (to, sql) in (1..).zip(MIGRATIONS).skip(version as usize) {
        tx.batch_execute(sql)?;
        log::info!("account database migrated to schema version {to}");
    }
    if version < known {
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&known],
        )?;
    }
    Ok(())
}

/// The value of `field` among `values`, if given.
fn value_of(values: &[(Field, String)], field: Field) -> Option<&str> {
    values
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, v)| v.as_str())
}

impl Backend for PostgresBackend {
    fn insert_account(
        &self,
        username: &str,
        password_hash: &str,
        info: &[(Field, String)],
    ) -> Result<AccountId> {
        let value = |field| value_of(info, field).unwrap_or("");
        let sql = format!(
            "INSERT INTO accounts (username, password_hash, full_name, email, phone, address,
                                   created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, {NOW}, {NOW}) RETURNING id"
        );
        self.transaction(|tx| {
            let inserted = tx.query_one(
                &sql,
                &[
                    &username,
                    &password_hash,
                    &value(Field::FullName),
                    &value(Field::Email),
                    &value(Field::Phone),
                    &value(Field::Address),
                ],
            );
            match inserted {
                Ok(row) => Ok(row.get(0)),
                Err(e) if is_unique_violation(&e) => Err(Error::UserExists(username.to_string())),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn find_login(&self, username: &str) -> Result<Option<LoginRecord>> {
        let row = self.connection()?.query_opt(
            "SELECT id, password_hash, locked_at IS NOT NULL, credentials_generation
             FROM accounts WHERE lower(username) = lower($1)",
            &[&username],
        )?;
        Ok(row.map(|row| LoginRecord {
            id: row.get(0),
            hash: row.get(1),
            locked: row.get(2),
            generation: row.get(3),
        }))
    }

    fn session_state(&self, id: AccountId) -> Result<SessionState> {
        self.connection()?
            .query_opt(
                "SELECT credentials_generation, locked_at IS NOT NULL FROM accounts WHERE id = $1",
                &[&id],
            )?
            .map(|row| SessionState {
                generation: row.get(0),
                locked: row.get(1),
            })
            .ok_or(Error::NoSuchAccount)
    }

    fn accounts(&self, username: Option<&str>) -> Result<Vec<AccountSummary>> {
        let rows = self.connection()?.query(
            "SELECT id, username, created_at, last_login_at, locked_at FROM accounts
             WHERE $1::TEXT IS NULL OR lower(username) = lower($1) ORDER BY lower(username), id",
            &[&username],
        )?;
        Ok(rows
            .iter()
            .map(|row| AccountSummary {
                id: row.get(0),
                username: row.get(1),
                created_at: row.get(2),
                last_login_at: row.get(3),
                locked_at: row.get(4),
            })
            .collect())
    }

    fn set_locked(&self, id: AccountId, locked: bool) -> Result<()> {
        let sql = format!(
            "UPDATE accounts SET locked_at = CASE WHEN $1 THEN COALESCE(locked_at, {NOW})
                                                  ELSE NULL END
             WHERE id = $2"
        );
        if self.connection()?.execute(&sql, &[&locked, &id])? == 0 {
            return Err(Error::NoSuchAccount);
        }
        Ok(())
    }

    fn reset_password_hash(&self, id: AccountId, hash: &str) -> Result<()> {
        let sql = format!(
            "UPDATE accounts SET password_hash = $1, updated_at = {NOW},
                                 credentials_generation = credentials_generation + 1
             WHERE id = $2"
        );
        if self.connection()?.execute(&sql, &[&hash, &id])? == 0 {
            return Err(Error::NoSuchAccount);
        }
        Ok(())
    }

    fn known_addresses(&self, id: AccountId) -> Result<Vec<(String, f64)>> {
        let rows = self.connection()?.query(
            "SELECT address, last_login_at FROM known_addresses WHERE account_id = $1
             ORDER BY last_login_at DESC",
            &[&id],
        )?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    fn account_totals(&self) -> Result<AccountTotals> {
        let day_ago = NOW.replace("now()", "(now() - interval '1 day')");
        let row = self.connection()?.query_one(
            &format!(
                "SELECT count(*), count(locked_at),
                        count(CASE WHEN last_login_at >= {day_ago} THEN 1 END)
                 FROM accounts"
            ),
            &[],
        )?;
        Ok(AccountTotals {
            accounts: row.get(0),
            locked: row.get(1),
            logged_in_last_day: row.get(2),
        })
    }

    fn credentials(&self, id: AccountId) -> Result<(String, String)> {
        self.connection()?
            .query_opt(
                "SELECT username, password_hash FROM accounts WHERE id = $1",
                &[&id],
            )?
            .map(|row| (row.get(0), row.get(1)))
            .ok_or(Error::NoSuchAccount)
    }

    fn record_login(&self, id: AccountId, rehash: Option<(&str, &str)>) -> Result<()> {
        let sql = format!("UPDATE accounts SET last_login_at = {NOW} WHERE id = $1");
        self.transaction(|tx| {
            tx.execute(&sql, &[&id])?;
            if let Some((old, new)) = rehash {
                // Only if nobody changed the password meanwhile.
                tx.execute(
                    "UPDATE accounts SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
                    &[&new, &id, &old],
                )?;
            }
            Ok(())
        })
    }

    fn account(&self, id: AccountId) -> Result<AccountView> {
        let row = self
            .connection()?
            .query_opt(
                "SELECT username, full_name, email, phone, address, created_at, updated_at,
                        last_login_at, version
                 FROM accounts WHERE id = $1",
                &[&id],
            )?
            .ok_or(Error::NoSuchAccount)?;
        Ok(AccountView {
            username: row.get(0),
            fields: [row.get(1), row.get(2), row.get(3), row.get(4)],
            created_at: row.get(5),
            updated_at: row.get(6),
            last_login_at: row.get(7),
            version: row.get(8),
        })
    }

    fn update_account(
        &self,
        id: AccountId,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<i64> {
        let change = |field| value_of(changes, field);
        let sql = format!(
            "UPDATE accounts SET full_name = COALESCE($1, full_name),
                                 email = COALESCE($2, email),
                                 phone = COALESCE($3, phone),
                                 address = COALESCE($4, address),
                                 version = version + 1,
                                 updated_at = {NOW}
             WHERE id = $5"
        );
        self.transaction(|tx| {
            let current: i64 = tx
                .query_opt(
                    "SELECT version FROM accounts WHERE id = $1 FOR UPDATE",
                    &[&id],
                )?
                .ok_or(Error::NoSuchAccount)?
                .get(0);
            if expected_version.is_some_and(|v| v != current) {
                return Err(Error::Conflict);
            }
            tx.execute(
                &sql,
                &[
                    &change(Field::FullName),
                    &change(Field::Email),
                    &change(Field::Phone),
                    &change(Field::Address),
                    &id,
                ],
            )?;
            Ok(current + 1)
        })
    }

    fn replace_password_hash(&self, id: AccountId, old: &str, new: &str) -> Result<()> {
        let sql = format!(
            "UPDATE accounts SET password_hash = $1, updated_at = {NOW}
             WHERE id = $2 AND password_hash = $3"
        );
        let changed = self.connection()?.execute(&sql, &[&new, &id, &old])?;
        if changed == 0 {
            return Err(Error::Conflict);
        }
        Ok(())
    }

    fn delete_account(&self, id: AccountId, hash: &str) -> Result<()> {
        let deleted = self.connection()?.execute(
            "DELETE FROM accounts WHERE id = $1 AND password_hash = $2",
            &[&id, &hash],
        )?;
        if deleted == 0 {
            return Err(Error::Conflict);
        }
        Ok(())
    }

    fn with_failure_counts(
        &self,
        f: &mut dyn FnMut(&mut dyn FailureCounts) -> Result<()>,
    ) -> Result<()> {
        self.transaction(|tx| f(&mut PostgresFailureCounts(tx)))
    }

    fn ping(&self) -> Result<()> {
        self.connection()?.simple_query("SELECT 1")?;
        Ok(())
    }

    /// Nothing to do: the pool's connections end when the store is dropped, and every write
    /// was committed when it returned.
    fn close(&self) {}
}

/// The `login_failures` and `known_addresses` tables, inside a transaction.
struct PostgresFailureCounts<'a, 'b>(&'a mut Transaction<'b>);

impl FailureCounts for PostgresFailureCounts<'_, '_> {
    fn get(&mut self, key: &str) -> Result<Option<FailureCount>> {
        // Held to the end of the transaction: another instance's count of the same key waits.
        // Keys are always taken in the same order (name, pair, address), so no deadlock.
        self.0.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&key],
        )?;
        let row = self.0.query_opt(
            "SELECT failures, last_failure_at, blocked_until FROM login_failures WHERE key = $1",
            &[&key],
        )?;
        row.map(|row| {
            let failures: i64 = row.get(0);
            Ok(FailureCount {
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                last_failure_at: row.get(1),
                blocked_until: row.get(2),
            })
        })
        .transpose()
    }

    fn put(&mut self, key: &str, count: FailureCount) -> Result<()> {
        self.0.execute(
            "INSERT INTO login_failures (key, failures, last_failure_at, blocked_until)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET failures = $2, last_failure_at = $3,
                                             blocked_until = $4",
            &[
                &key,
                &i64::from(count.failures),
                &count.last_failure_at,
                &count.blocked_until,
            ],
        )?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<()> {
        self.0
            .execute("DELETE FROM login_failures WHERE key = $1", &[&key])?;
        Ok(())
    }

    fn all(&mut self) -> Result<Vec<(String, FailureCount)>> {
        let rows = self.0.query(
            "SELECT key, failures, last_failure_at, blocked_until FROM login_failures
             ORDER BY key",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|row| {
                let failures: i64 = row.get(1);
                (
                    row.get(0),
                    FailureCount {
                        failures: u32::try_from(failures).unwrap_or(u32::MAX),
                        last_failure_at: row.get(2),
                        blocked_until: row.get(3),
                    },
                )
            })
            .collect())
    }

    fn forget(&mut self, last_failure_before: f64, now: f64, known_before: f64) -> Result<()> {
        self.0.execute(
            "DELETE FROM login_failures WHERE last_failure_at < $1 AND blocked_until < $2",
            &[&last_failure_before, &now],
        )?;
        self.0.execute(
            "DELETE FROM known_addresses WHERE last_login_at < $1",
            &[&known_before],
        )?;
        Ok(())
    }

    fn knows(&mut self, username: &str, address: &str, since: f64) -> Result<bool> {
        Ok(self
            .0
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM known_addresses k JOIN accounts a ON a.id = k.account_id
                                WHERE lower(a.username) = lower($1) AND k.address = $2
                                  AND k.last_login_at >= $3)",
                &[&username, &address, &since],
            )?
            .get(0))
    }

    fn remember(&mut self, id: AccountId, address: &str, now: f64) -> Result<()> {
        self.0.execute(
            "INSERT INTO known_addresses (account_id, address, last_login_at)
             VALUES ($1, $2, $3)
             ON CONFLICT (account_id, address) DO UPDATE SET last_login_at = $3",
            &[&id, &address, &now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "../../tests/support/postgres.rs"]
mod test_cluster;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::contract::{TestDatabase, contract_tests, fast};
    use crate::db::{AccountStore, StoreLocation, StoreOptions};

    /// A fresh database in the test cluster.
    struct PostgresDatabase(String);

    impl PostgresDatabase {
        fn new() -> PostgresDatabase {
            PostgresDatabase(test_cluster::cluster().new_database())
        }
    }

    impl TestDatabase for PostgresDatabase {
        fn open(&self, options: StoreOptions) -> AccountStore {
            AccountStore::open(&StoreLocation::Postgres(self.0.clone()), options).unwrap()
        }
    }

    contract_tests!(PostgresDatabase::new());

    #[test]
    fn instances_starting_together_migrate_once() {
        let db = PostgresDatabase::new();
        let stores: Vec<_> = (0..4)
            .map(|_| {
                let url = db.0.clone();
                std::thread::spawn(move || {
                    AccountStore::open(&StoreLocation::Postgres(url), fast()).map(drop)
                })
            })
            .collect();
        for store in stores {
            store.join().unwrap().unwrap();
        }
        let mut client = postgres::Client::connect(&db.0, NoTls).unwrap();
        let version: i32 = client
            .query_one("SELECT version FROM schema_version", &[])
            .unwrap()
            .get(0);
        assert_eq!(version, MIGRATIONS.len() as i32);
        let rows = client
            .query("SELECT version FROM schema_version", &[])
            .unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn refuses_newer_schema() {
        let db = PostgresDatabase::new();
        drop(db.open(fast()));
        let mut client = postgres::Client::connect(&db.0, NoTls).unwrap();
        client
            .execute("UPDATE schema_version SET version = 99", &[])
            .unwrap();
        let err = AccountStore::open(&StoreLocation::Postgres(db.0.clone()), fast())
            .err()
            .unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn an_unreachable_database_gives_errors_in_seconds_then_recovers() {
        let own = test_cluster::Cluster::new();
        let url = own.new_database();
        let store = AccountStore::open(&StoreLocation::Postgres(url), fast()).unwrap();
        let id = store.create_account("rita", b"pw-rita-1", &[]).unwrap();
        own.stop_server();
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let err = store.view(id).unwrap_err();
            assert!(matches!(err, Error::Store(_)), "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
        }
        own.start_server();
        assert_eq!(store.view(id).unwrap().username, "rita");
        assert!(store.authenticate("rita", b"pw-rita-1").unwrap().is_some());
    }

    #[test]
    fn version_5_database_gains_the_lock_and_the_credentials_generation() -> Result<()> {
        let db = PostgresDatabase::new();
        {
            let mut client = postgres::Client::connect(&db.0, NoTls).unwrap();
            for sql in &MIGRATIONS[..5] {
                client.batch_execute(sql).unwrap();
            }
            client
                .batch_execute(
                    "CREATE TABLE schema_version (version INTEGER NOT NULL);
                     INSERT INTO schema_version (version) VALUES (5);
                     INSERT INTO accounts (username, password_hash, created_at, updated_at)
                     VALUES ('fiveuser', 'x', '2026-01-01T00:00:00.000Z',
                             '2026-01-01T00:00:00.000Z');",
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

    #[test]
    fn urls_are_checked() {
        assert!(check_url("postgres://u:p@127.0.0.1:5432/db").is_ok());
        assert!(check_url("postgres://u@[::1]/db").is_ok());
        assert!(check_url("postgres://u@h:notaport/db").is_err());
    }
}
