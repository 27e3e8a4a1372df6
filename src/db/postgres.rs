//! The PostgreSQL backend: one database that several server instances share, reached through
//! a pool of connections. The only module that names `tokio_postgres` and `r2d2`.
//!
//! The schema has the same versions as SQLite's ([`MIGRATIONS`], recorded in
//! `schema_version`), applied in one transaction under an advisory lock, so instances that
//! start together do not race.
//!
//! Each statement is prepared once per server connection, under a name taken from its text,
//! and run with `EXECUTE` in one simple Query (one round trip, no parse or plan of the
//! statement), which works alike directly and through PgBouncer in transaction pooling
//! ([`execute_prepared`]); one that carries a password hash or an account's information goes
//! with bound parameters instead, unnamed, in one flight ([`Param::Private`]). Most methods
//! are one statement, so one round trip; counting and forgiving failed logins are functions
//! installed by migration 7 that take a transaction-scoped advisory lock per key (always in
//! one order: by the key's hash), so that attempts counted at once by several instances are
//! all counted, and a clear, which takes the same locks, is never undone by an attempt in
//! flight. A statement or transaction that PostgreSQL aborts for serialization or a deadlock
//! is run again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use postgres_protocol::escape::escape_literal;
use r2d2::{ManageConnection, NopErrorHandler, Pool};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, SimpleQueryMessage, SimpleQueryRow};

use link::{Hosts, Link};

use super::sql::{
    self, ACCOUNT_SUMMARY, ACCOUNT_VIEW, CERTIFICATE_VIEW, Columns, FAILURE_COUNT, LOGIN_RECORD,
    SESSION_STATE, SchemaVersions, account_summary, account_view, certificate_view, failure_count,
    joined_item, joined_list, last_sign_in, login_record, session_state, sign_in_event,
};
use super::throttle::{Attempt, FailureCount, Limit, Outcome, PRUNE_BATCH, Refusal};
use super::{
    AccountId, AccountSummary, AccountTotals, Backend, Counted, KeySelection, LoginRecord,
    LoginUpdate, SchemaChange, SchemaUpgrade, SessionAccount, SessionState, SignInRecord, value_of,
};
use crate::error::{Error, Result, with_causes};
use crate::xml::account::{AccountView, Field};
use crate::xml::sign_in::{
    CertificateView, HISTORY_KEPT, LastSignIn, SignInEvent, SignInMethod, SignInOutcome,
};

mod link;

/// Current time as stored: ISO 8601 UTC with milliseconds, as SQLite writes it (a macro, for
/// the migrations' `concat!`).
macro_rules! now {
    () => {
        r#"to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#
    };
}
const NOW: &str = now!();

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
    // Version 7: stale failure counts found by their time, and the failure counts' rules
    // (`throttle.rs`, which SQLite runs in Rust) as functions, each one round trip.
    concat!(
        "CREATE INDEX login_failures_by_time ON login_failures (last_failure_at);

     -- Locks the counts of p_keys to the end of the transaction, in the one order every
     -- caller takes them (by hash), so that no two callers wait for each other in a circle.
     CREATE FUNCTION throttle_lock_keys(p_keys TEXT[]) RETURNS VOID LANGUAGE plpgsql AS $$
     DECLARE
         h BIGINT;
     BEGIN
         FOR h IN SELECT DISTINCT hashtextextended(k, 0) FROM unnest(p_keys) AS k ORDER BY 1
         LOOP
             PERFORM pg_advisory_xact_lock(h);
         END LOOP;
     END
     $$;

     -- throttle::count_attempt: refused until r_refused_until if that is after p_now (and
     -- nothing counted); else each key's count is one more (or 1, if stale), refusing for
     -- p_first_block doubled per failure past its threshold, up to p_longest_block; then a
     -- few stale counts and known addresses are removed. p_username is the account name
     -- counted (lower case, and it passed the name rules), if any: the name's refusal does not
     -- apply at an address that account knows; with p_read, what a login needs of it is read.
     CREATE FUNCTION throttle_count(
         p_keys TEXT[], p_thresholds INTEGER[], p_name_key TEXT, p_username TEXT, p_read BOOLEAN,
         p_address TEXT, p_now DOUBLE PRECISION, p_forget_after DOUBLE PRECISION,
         p_known_since DOUBLE PRECISION, p_first_block DOUBLE PRECISION,
         p_longest_block DOUBLE PRECISION, p_prune INTEGER,
         OUT r_refused_until DOUBLE PRECISION, OUT r_id BIGINT, OUT r_hash TEXT,
         OUT r_locked BOOLEAN, OUT r_generation BIGINT)
     LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
     DECLARE
         v_known BOOLEAN := FALSE;
     BEGIN
         PERFORM throttle_lock_keys(p_keys);
         IF p_username IS NOT NULL THEN
             SELECT a.id, a.password_hash, a.locked_at IS NOT NULL, a.credentials_generation
               INTO r_id, r_hash, r_locked, r_generation
               FROM accounts a WHERE lower(a.username) = p_username;
             v_known := r_id IS NOT NULL AND EXISTS (
                 SELECT 1 FROM known_addresses k
                  WHERE k.account_id = r_id AND k.address = p_address
                    AND k.last_login_at >= p_known_since);
             IF NOT p_read THEN
                 r_id := NULL;
                 r_hash := NULL;
                 r_locked := NULL;
                 r_generation := NULL;
             END IF;
         END IF;
         SELECT coalesce(max(f.blocked_until), 0) INTO r_refused_until
           FROM login_failures f
          WHERE f.key = ANY (p_keys) AND NOT (v_known AND f.key = p_name_key);
         IF r_refused_until > p_now THEN
             RETURN;
         END IF;
         INSERT INTO login_failures AS f (key, failures, last_failure_at, blocked_until)
         SELECT k.key, c.failures, p_now,
                CASE WHEN c.failures >= k.threshold
                     THEN p_now + least(p_first_block
                                        * power(2, least(c.failures - k.threshold, 20)),
                                        p_longest_block)
                     ELSE 0 END
           FROM unnest(p_keys, p_thresholds) AS k (key, threshold)
           LEFT JOIN login_failures old ON old.key = k.key
          CROSS JOIN LATERAL (
                SELECT CASE WHEN p_now - old.last_failure_at < p_forget_after
                            THEN old.failures + 1 ELSE 1 END AS failures) c
             ON CONFLICT (key) DO UPDATE
                SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
                    blocked_until = excluded.blocked_until;
         -- Rows another transaction holds are left for a later attempt: this never waits.
         DELETE FROM login_failures WHERE key IN (
             SELECT s.key FROM login_failures s
              WHERE s.last_failure_at < p_now - p_forget_after AND s.blocked_until < p_now
              ORDER BY s.last_failure_at LIMIT p_prune FOR UPDATE SKIP LOCKED);
         DELETE FROM known_addresses WHERE (account_id, address) IN (
             SELECT s.account_id, s.address FROM known_addresses s
              WHERE s.last_login_at < p_known_since
              ORDER BY s.last_login_at LIMIT p_prune FOR UPDATE SKIP LOCKED);
     END
     $$;

     -- throttle::forgive, after a successful password check for p_account: the keys
     -- p_cleared are cleared, p_lowered lowered by one (and its refusal lifted below
     -- p_lowered_threshold), the address becomes known; with p_login, the login is recorded
     -- and the hash replaced by p_new_hash if it is still p_old_hash.
     CREATE FUNCTION throttle_forgive(
         p_keys TEXT[], p_cleared TEXT[], p_lowered TEXT, p_lowered_threshold INTEGER,
         p_account BIGINT, p_address TEXT, p_now DOUBLE PRECISION, p_login BOOLEAN,
         p_old_hash TEXT, p_new_hash TEXT)
     RETURNS VOID LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
     BEGIN
         PERFORM throttle_lock_keys(p_keys);
         DELETE FROM login_failures WHERE key = ANY (p_cleared);
         UPDATE login_failures
            SET failures = greatest(failures - 1, 0),
                blocked_until = CASE WHEN greatest(failures - 1, 0) < p_lowered_threshold
                                     THEN 0 ELSE blocked_until END
          WHERE key = p_lowered;
         INSERT INTO known_addresses (account_id, address, last_login_at)
         VALUES (p_account, p_address, p_now)
             ON CONFLICT (account_id, address) DO UPDATE SET last_login_at = p_now;
         IF p_login THEN
             UPDATE accounts
                SET last_login_at = ",
        now!(),
        ",
                    password_hash = CASE WHEN p_new_hash IS NOT NULL
                                          AND password_hash = p_old_hash
                                         THEN p_new_hash ELSE password_hash END
              WHERE id = p_account;
         END IF;
     END
     $$;"
    ),
    // Version 8: attempts in flight counted apart from what they came to, and successful
    // password checks counted too, in windows (`throttle.rs`). New functions beside version
    // 7's, which servers of that version go on calling until they are upgraded.
    concat!(
        "ALTER TABLE login_failures ADD COLUMN pending INTEGER NOT NULL DEFAULT 0,
                                ADD COLUMN pending_at DOUBLE PRECISION NOT NULL DEFAULT 0;

     -- throttle::count_attempt: refused (r_refused_until after p_now, nothing counted) while
     -- a key's refusal runs (r_limit 0 for failures, 1 for a key of successes: p_spans above
     -- 0) or its recent events and its attempts in flight reach its threshold (r_limit 2, for
     -- p_at_once_wait); the longest refusal, the first in p_keys' order of those. The name's
     -- key refuses nothing at an address the account knows. Else each key has one more
     -- attempt in flight; then a few stale counts and known addresses are removed. Events are
     -- recent within p_forget_after of the last (a key of successes: within its span of its
     -- window's start); attempts in flight within p_pending_ttl of the last.
     CREATE FUNCTION throttle_count(
         p_keys TEXT[], p_thresholds INTEGER[], p_spans DOUBLE PRECISION[], p_name_key TEXT,
         p_username TEXT, p_read BOOLEAN, p_address TEXT, p_now DOUBLE PRECISION,
         p_forget_after DOUBLE PRECISION, p_prune_before DOUBLE PRECISION,
         p_known_since DOUBLE PRECISION, p_pending_ttl DOUBLE PRECISION,
         p_at_once_wait DOUBLE PRECISION, p_prune INTEGER,
         OUT r_refused_until DOUBLE PRECISION, OUT r_limit INTEGER, OUT r_id BIGINT,
         OUT r_hash TEXT, OUT r_locked BOOLEAN, OUT r_generation BIGINT)
     LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
     DECLARE
         v_known BOOLEAN := FALSE;
     BEGIN
         PERFORM throttle_lock_keys(p_keys);
         IF p_username IS NOT NULL THEN
             SELECT a.id, a.password_hash, a.locked_at IS NOT NULL, a.credentials_generation
               INTO r_id, r_hash, r_locked, r_generation
               FROM accounts a WHERE lower(a.username) = p_username;
             v_known := r_id IS NOT NULL AND EXISTS (
                 SELECT 1 FROM known_addresses k
                  WHERE k.account_id = r_id AND k.address = p_address
                    AND k.last_login_at >= p_known_since);
             IF NOT p_read THEN
                 r_id := NULL;
                 r_hash := NULL;
                 r_locked := NULL;
                 r_generation := NULL;
             END IF;
         END IF;
         SELECT r.until, r.lim INTO r_refused_until, r_limit
           FROM unnest(p_keys, p_thresholds, p_spans) WITH ORDINALITY AS k (key, threshold, span, n)
           JOIN login_failures f ON f.key = k.key
          CROSS JOIN LATERAL (
                SELECT CASE WHEN p_now - f.pending_at < p_pending_ttl
                            THEN f.pending ELSE 0 END AS pending,
                       CASE WHEN p_now - f.last_failure_at
                                 < CASE WHEN k.span > 0 THEN k.span ELSE p_forget_after END
                            THEN f.failures ELSE 0 END AS recent) c
          CROSS JOIN LATERAL (
                SELECT CASE WHEN f.blocked_until > p_now THEN f.blocked_until
                            ELSE p_now + p_at_once_wait END AS until,
                       CASE WHEN f.blocked_until <= p_now THEN 2
                            WHEN k.span > 0 THEN 1 ELSE 0 END AS lim) r
          WHERE NOT (v_known AND f.key = p_name_key)
            AND (f.blocked_until > p_now
                 OR (c.pending > 0 AND c.recent + c.pending >= k.threshold))
          ORDER BY r.until DESC, k.n
          LIMIT 1;
         r_refused_until := coalesce(r_refused_until, 0);
         r_limit := coalesce(r_limit, 0);
         IF r_refused_until > p_now THEN
             RETURN;
         END IF;
         INSERT INTO login_failures AS f
                (key, failures, last_failure_at, blocked_until, pending, pending_at)
         SELECT k.key, 0, 0, 0, 1, p_now FROM unnest(p_keys) AS k (key)
             ON CONFLICT (key) DO UPDATE
                SET pending = CASE WHEN p_now - f.pending_at < p_pending_ttl
                                   THEN f.pending + 1 ELSE 1 END,
                    pending_at = p_now;
         -- Rows another transaction holds are left for a later attempt: this never waits.
         DELETE FROM login_failures WHERE key IN (
             SELECT s.key FROM login_failures s
              WHERE s.last_failure_at < p_prune_before AND s.blocked_until < p_now
                AND s.pending_at < p_prune_before
              ORDER BY s.last_failure_at LIMIT p_prune FOR UPDATE SKIP LOCKED);
         DELETE FROM known_addresses WHERE (account_id, address) IN (
             SELECT s.account_id, s.address FROM known_addresses s
              WHERE s.last_login_at < p_known_since
              ORDER BY s.last_login_at LIMIT p_prune FOR UPDATE SKIP LOCKED);
     END
     $$;

     -- throttle::settle: each of p_keys has one attempt in flight fewer; the event is recorded
     -- under p_recorded (one more failure, refusing from p_first_block doubled per failure past
     -- the threshold up to p_longest_block; for a key of successes, one more in its window,
     -- refusing to the window's end at the threshold); the failures of p_cleared are cleared;
     -- counts with neither events nor attempts in flight are removed. With p_account (a
     -- successful password check), the address becomes known, and with p_login the login is
     -- recorded and the hash replaced by p_new_hash if it is still p_old_hash.
     CREATE FUNCTION throttle_settle(
         p_keys TEXT[], p_thresholds INTEGER[], p_spans DOUBLE PRECISION[], p_recorded TEXT[],
         p_cleared TEXT[], p_account BIGINT, p_address TEXT, p_now DOUBLE PRECISION,
         p_forget_after DOUBLE PRECISION, p_pending_ttl DOUBLE PRECISION,
         p_first_block DOUBLE PRECISION, p_longest_block DOUBLE PRECISION, p_login BOOLEAN,
         p_old_hash TEXT, p_new_hash TEXT)
     RETURNS VOID LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
     BEGIN
         PERFORM throttle_lock_keys(p_keys);
         UPDATE login_failures f
            SET pending = greatest(CASE WHEN p_now - f.pending_at < p_pending_ttl
                                        THEN f.pending ELSE 0 END - 1, 0)
          WHERE f.key = ANY (p_keys);
         UPDATE login_failures f
            SET failures = n.events, last_failure_at = n.began, blocked_until = n.until
           FROM (SELECT k.key, e.events, b.began,
                        CASE WHEN k.span > 0
                             THEN CASE WHEN e.events >= k.threshold
                                       THEN b.began + k.span ELSE 0 END
                             WHEN e.events >= k.threshold
                             THEN p_now + least(p_first_block
                                                * power(2, least(e.events - k.threshold, 20)),
                                                p_longest_block)
                             ELSE 0 END AS until
                   FROM unnest(p_keys, p_thresholds, p_spans) AS k (key, threshold, span)
                   JOIN login_failures o ON o.key = k.key
                  CROSS JOIN LATERAL (
                        SELECT CASE WHEN p_now - o.last_failure_at
                                         < CASE WHEN k.span > 0 THEN k.span
                                                ELSE p_forget_after END
                                    THEN o.failures + 1 ELSE 1 END AS events) e
                  CROSS JOIN LATERAL (
                        SELECT CASE WHEN k.span > 0 AND e.events > 1 THEN o.last_failure_at
                                    ELSE p_now END AS began) b
                  WHERE k.key = ANY (p_recorded)) n
          WHERE f.key = n.key;
         UPDATE login_failures SET failures = 0, last_failure_at = 0, blocked_until = 0
          WHERE key = ANY (p_cleared);
         DELETE FROM login_failures
          WHERE key = ANY (p_keys) AND failures = 0 AND pending = 0;
         IF p_account IS NULL THEN
             RETURN;
         END IF;
         INSERT INTO known_addresses (account_id, address, last_login_at)
         VALUES (p_account, p_address, p_now)
             ON CONFLICT (account_id, address) DO UPDATE SET last_login_at = p_now;
         IF p_login THEN
             UPDATE accounts
                SET last_login_at = ",
        now!(),
        ",
                    password_hash = CASE WHEN p_new_hash IS NOT NULL
                                          AND password_hash = p_old_hash
                                         THEN p_new_hash ELSE password_hash END
              WHERE id = p_account;
         END IF;
     END
     $$;"
    ),
    // Version 9: client certificates enrolled for signing in (by the SHA-256 fingerprint of
    // their public key), and each account's newest sign-in attempts, both gone with the
    // account; a login's settle that records the attempt in the history, in the same round
    // trip (`throttle_settle` stays, for servers of version 8).
    concat!(
        "CREATE TABLE certificates (
         account_id   BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
         fingerprint  TEXT NOT NULL,
         label        TEXT NOT NULL DEFAULT '',
         enrolled_at  TEXT NOT NULL,
         last_used_at TEXT,
         PRIMARY KEY (account_id, fingerprint)
     );
     CREATE TABLE sign_ins (
         id         BIGSERIAL PRIMARY KEY,
         account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
         at         TEXT NOT NULL,
         address    TEXT NOT NULL,
         method     TEXT NOT NULL,
         outcome    TEXT NOT NULL
     );
     CREATE INDEX sign_ins_by_account ON sign_ins (account_id, id);

     -- Adds an event to account p_account's history, if the account exists, and removes
     -- the events past its newest p_keep.
     CREATE FUNCTION sign_in_record(
         p_account BIGINT, p_address TEXT, p_method TEXT, p_outcome TEXT, p_keep INTEGER)
     RETURNS VOID LANGUAGE plpgsql AS $$
     BEGIN
         INSERT INTO sign_ins (account_id, at, address, method, outcome)
         SELECT a.id, ",
        now!(),
        ", p_address, p_method, p_outcome FROM accounts a WHERE a.id = p_account;
         DELETE FROM sign_ins WHERE account_id = p_account AND id <= (
             SELECT s.id FROM sign_ins s WHERE s.account_id = p_account
              ORDER BY s.id DESC OFFSET p_keep LIMIT 1);
     END
     $$;

     -- throttle_settle, then: with p_certificate, its last use by p_account is now; with
     -- p_event_account, the attempt (from p_client, by p_method, to p_outcome) goes into
     -- that account's history, and for a sign-in (p_outcome 'signed-in') the last sign-in
     -- before it (r_at, r_address, r_method, r_outcome; NULL if none) and the failed attempts
     -- since (r_failed) are given.
     CREATE FUNCTION sign_in_settle(
         p_keys TEXT[], p_thresholds INTEGER[], p_spans DOUBLE PRECISION[], p_recorded TEXT[],
         p_cleared TEXT[], p_account BIGINT, p_address TEXT, p_now DOUBLE PRECISION,
         p_forget_after DOUBLE PRECISION, p_pending_ttl DOUBLE PRECISION,
         p_first_block DOUBLE PRECISION, p_longest_block DOUBLE PRECISION, p_login BOOLEAN,
         p_old_hash TEXT, p_new_hash TEXT, p_certificate TEXT, p_event_account BIGINT,
         p_client TEXT, p_method TEXT, p_outcome TEXT, p_keep INTEGER,
         OUT r_at TEXT, OUT r_address TEXT, OUT r_method TEXT, OUT r_outcome TEXT,
         OUT r_failed BIGINT)
     LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
     DECLARE
         v_last BIGINT;
     BEGIN
         PERFORM throttle_settle(p_keys, p_thresholds, p_spans, p_recorded, p_cleared,
                                 p_account, p_address, p_now, p_forget_after, p_pending_ttl,
                                 p_first_block, p_longest_block, p_login, p_old_hash,
                                 p_new_hash);
         IF p_certificate IS NOT NULL THEN
             UPDATE certificates SET last_used_at = ",
        now!(),
        "
              WHERE account_id = p_account AND fingerprint = p_certificate;
         END IF;
         IF p_event_account IS NULL THEN
             RETURN;
         END IF;
         IF p_outcome = 'signed-in' THEN
             SELECT s.id, s.at, s.address, s.method, s.outcome
               INTO v_last, r_at, r_address, r_method, r_outcome
               FROM sign_ins s
              WHERE s.account_id = p_event_account AND s.outcome = 'signed-in'
              ORDER BY s.id DESC LIMIT 1;
             SELECT count(*) INTO r_failed FROM sign_ins s
              WHERE s.account_id = p_event_account AND s.outcome <> 'signed-in'
                AND s.id > coalesce(v_last, 0);
         END IF;
         PERFORM sign_in_record(p_event_account, p_client, p_method, p_outcome, p_keep);
     END
     $$;"
    ),
];

/// The advisory lock that serialises migrations (any number; ours).
const MIGRATION_LOCK: i64 = 0x5353_4c53_5256;

/// How long a command may wait for the database, for a pooled connection and its statement
/// together: a database that is gone or hangs gives an error within this, never a hang.
const COMMAND_DEADLINE: Duration = Duration::from_millis(2500);

/// How long opening the store may take once the database answered (its migrations wait for
/// another instance's).
const OPEN_DEADLINE: Duration = Duration::from_secs(30);

/// The least time worth sending a statement with: less left after the wait for a pooled
/// connection, the command is refused without sending anything.
const LEAST_WAIT: Duration = Duration::from_millis(200);

/// How long a pooled connection may stay unused before it is closed: less than the idle
/// timeouts of what may sit between the instance and PostgreSQL (HAProxy's `timeout
/// client`/`timeout server`, a firewall's), which would end it unseen, and the first write
/// on it would fail.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the kernel may hold unacknowledged data on a connection before it drops it; and
/// after how long idle a connection is probed, how often, how many times, before it is
/// dropped (a server that lost power or its network).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(8);
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVES_RETRIES: u32 = 3;

/// How long PostgreSQL lets one of our statements run (or wait for a lock): less than
/// [`COMMAND_DEADLINE`], so that a statement held up on a server that answers is cancelled
/// there and its connection kept; and floats written in full (read back from text, they must
/// be the same numbers; PostgreSQL 12 and later do so by default): set with `SET LOCAL` in the
/// statement's own transaction, as PgBouncer refuses them as startup options and a session
/// setting would outlive the transaction behind it.
const SETTINGS: &str = "SET LOCAL statement_timeout = 2000; SET LOCAL extra_float_digits = 3;";

/// The statement timeout of the migrations' transaction, which waits for the migration lock.
const OPEN_SETTINGS: &str = "SET LOCAL statement_timeout = 25000;";

/// Connections kept at most; more threads wait for one (within their [`COMMAND_DEADLINE`]).
const MAX_CONNECTIONS: u32 = 32;

/// How many times a transaction aborted for serialization or a deadlock is run.
const ATTEMPTS: usize = 5;

/// The parameters of a statement in a transaction, each with its type (sent with the
/// statement, so that it needs no Parse of its own).
type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Store(Box::new(e))
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        Error::Store(format!("no connection to the database: {e}").into())
    }
}

/// A row of an `EXECUTE`, every value in its text form.
impl Columns for SimpleQueryRow {
    fn text(&self, i: usize) -> Result<String> {
        self.optional_text(i)?
            .ok_or_else(|| Error::Store(format!("column {i} is NULL").into()))
    }
    fn optional_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?.map(str::to_string))
    }
    fn integer(&self, i: usize) -> Result<i64> {
        let text = self.text(i)?;
        text.parse()
            .map_err(|e| Error::Store(format!("column {i} ({text:?}): {e}").into()))
    }
    fn real(&self, i: usize) -> Result<f64> {
        let text = self.text(i)?;
        text.parse()
            .map_err(|e| Error::Store(format!("column {i} ({text:?}): {e}").into()))
    }
    fn boolean(&self, i: usize) -> Result<bool> {
        match self.text(i)?.as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(Error::Store(
                format!("column {i} ({other:?}) is not a boolean").into(),
            )),
        }
    }
}

impl Columns for Row {
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.try_get(i)?)
    }
    fn optional_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
    fn integer(&self, i: usize) -> Result<i64> {
        Ok(self.try_get(i)?)
    }
    fn real(&self, i: usize) -> Result<f64> {
        Ok(self.try_get(i)?)
    }
    fn boolean(&self, i: usize) -> Result<bool> {
        Ok(self.try_get(i)?)
    }
}

/// Checks a `postgres://` URL; the error says what is wrong, in the driver's words.
pub(super) fn check_url(url: &str) -> std::result::Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A pooled connection: the link, and the statements it prepared (on its server connection;
/// behind PgBouncer, on one of them).
struct Pooled {
    link: Link,
    prepared: HashSet<String>,
}

/// Opens the pool's connections (what `r2d2_postgres` does, to each host within its deadline,
/// with the statements prepared kept beside each link).
struct Connector(Hosts);

/// A failed connection, said with its causes (the pool keeps only an error's text).
#[derive(Debug)]
struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl ManageConnection for Connector {
    type Connection = Pooled;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<Pooled, ConnectError> {
        Ok(Pooled {
            link: self.0.connect().map_err(ConnectError)?,
            prepared: HashSet::new(),
        })
    }

    /// No query: a link is lent unless it broke or another link to its server broke since it
    /// was made (the server may be gone or hung: all of its links are dropped at once).
    fn is_valid(&self, conn: &mut Pooled) -> std::result::Result<(), ConnectError> {
        if self.0.is_current(&conn.link) {
            Ok(())
        } else {
            Err(ConnectError("made before its server failed".into()))
        }
    }

    fn has_broken(&self, conn: &mut Pooled) -> bool {
        self.0.note(&conn.link);
        !self.0.is_current(&conn.link)
    }
}

/// The accounts in a PostgreSQL database.
pub(super) struct PostgresBackend {
    pool: Pool<Connector>,
}

impl PostgresBackend {
    /// Connects to the database at `url` (its password from the URL, else `PGPASSWORD`) and
    /// brings its schema up to date, or refuses an older one ([`sql::migrate`]).
    pub(super) fn open(url: &str, upgrade: SchemaUpgrade) -> Result<(Self, SchemaChange)> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("--db: not a PostgreSQL URL: {e}")))?;
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        // No startup `options` (PgBouncer refuses them): only settings it passes on.
        config
            .connect_timeout(link::HOST_CONNECT_TIMEOUT)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVES_IDLE)
            .keepalives_interval(KEEPALIVES_INTERVAL)
            .keepalives_retries(KEEPALIVES_RETRIES)
            .application_name(env!("CARGO_PKG_NAME"));
        let pool = Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .min_idle(Some(0))
            .idle_timeout(Some(IDLE_TIMEOUT))
            .connection_timeout(COMMAND_DEADLINE)
            // A check without a query ([`Connector::is_valid`]): links made before their
            // server failed are dropped, not lent.
            .test_on_check_out(true)
            // Failures reach the caller as errors; r2d2 would also log each attempt.
            .error_handler(Box::new(NopErrorHandler))
            .build_unchecked(Connector(Hosts::new(&config)));
        let backend = PostgresBackend { pool };
        let why = |e: Error| {
            let why = match &e {
                Error::Schema { .. } => return e,
                Error::Store(source) => with_causes(source.as_ref()),
                e => e.to_string(),
            };
            Error::Config(format!("cannot open the account database: {why}"))
        };
        // A database that cannot be reached is said within a command's deadline.
        backend.ping().map_err(why)?;
        let change = backend
            .transaction(OPEN_DEADLINE, OPEN_SETTINGS, |tx| {
                execute(
                    tx,
                    "SELECT pg_advisory_xact_lock($1)",
                    &[(&MIGRATION_LOCK, Type::INT8)],
                )?;
                sql::migrate(tx, MIGRATIONS, upgrade)
            })
            .map_err(why)?;
        Ok((backend, change))
    }

    /// Runs `f` on a pooled connection, the wait for it and `f` within `budget` together;
    /// again, up to [`ATTEMPTS`] times, if PostgreSQL aborts it for serialization or a
    /// deadlock; and a read once more on a fresh connection if its connection failed (a
    /// write is not sent again: it may have been done, and only a new read can tell).
    fn run<T>(
        &self,
        access: Access,
        budget: Duration,
        mut f: impl FnMut(&mut Pooled) -> Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + budget;
        let mut attempt = 1;
        let mut read_again = access == Access::Read;
        loop {
            let mut conn = self
                .pool
                .get_timeout(deadline.saturating_duration_since(Instant::now()))?;
            // Too little left to wait for an answer: nothing is sent (the link stays sound).
            if deadline.saturating_duration_since(Instant::now()) < LEAST_WAIT {
                return Err(Error::Store(Box::new(link::NoAnswer)));
            }
            conn.link.set_deadline(deadline);
            let outcome = f(&mut conn);
            let time_left = deadline.saturating_duration_since(Instant::now()) >= LEAST_WAIT;
            match outcome {
                Err(e) if attempt < ATTEMPTS && retryable(&e) && time_left => {
                    log::debug!("transaction retried: {e}");
                    attempt += 1;
                }
                Err(e) if read_again && conn.link.is_broken() && time_left => {
                    log::debug!("read again on a fresh connection: {e}");
                    read_again = false;
                }
                outcome => return outcome,
            }
        }
    }

    /// Runs `f` in a transaction, with `settings` (`SET LOCAL`s) after the usual ones,
    /// committed if it succeeds, within `budget`; run again as [`Self::run`] says for a write
    /// (an abort may come at any statement or at the commit).
    fn transaction<T>(
        &self,
        budget: Duration,
        settings: &str,
        mut f: impl FnMut(&mut Link) -> Result<T>,
    ) -> Result<T> {
        self.run(Access::Write, budget, |conn| {
            let link = &mut conn.link;
            // Until the transaction is ended, the link is not lent again (an error or a
            // panic on the way leaves it so, and it is dropped).
            link.set_in_transaction(true);
            link.simple_query(&format!("BEGIN; {SETTINGS} {settings}"))?;
            let value = f(link);
            if !link.is_usable() {
                return value;
            }
            let end = link.simple_query(if value.is_ok() { "COMMIT" } else { "ROLLBACK" });
            match (value, end) {
                (value, Ok(_)) => {
                    link.set_in_transaction(false);
                    value
                }
                (Ok(_), Err(e)) | (Err(e), Err(_)) => Err(e),
            }
        })
    }

    /// The rows of one statement, on a pooled connection, and how many it changed.
    fn prepared(&self, access: Access, statement: &str, params: &[Param<'_>]) -> Result<Answer> {
        self.run(access, COMMAND_DEADLINE, |conn| {
            run_statement(conn, statement, params)
        })
    }

    /// The rows of one statement that only reads, on a pooled connection.
    fn read(&self, statement: &str, params: &[Param<'_>]) -> Result<Vec<AnyRow>> {
        Ok(self.prepared(Access::Read, statement, params)?.rows)
    }

    /// The first row of one statement that only reads, if any, on a pooled connection.
    fn read_row(&self, statement: &str, params: &[Param<'_>]) -> Result<Option<AnyRow>> {
        Ok(self.read(statement, params)?.into_iter().next())
    }

    /// The first row of one statement that writes, if any, on a pooled connection.
    fn write_row(&self, statement: &str, params: &[Param<'_>]) -> Result<Option<AnyRow>> {
        Ok(self
            .prepared(Access::Write, statement, params)?
            .rows
            .into_iter()
            .next())
    }

    /// How many rows one statement that writes changed, on a pooled connection.
    fn execute(&self, statement: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.prepared(Access::Write, statement, params)?.changed)
    }
}

/// What a statement does: only reads (it may be sent again), or writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    Read,
    Write,
}

/// A statement's parameter: its SQL type and its value, which `EXECUTE` gives as a literal.
#[derive(Clone, Copy, Debug)]
enum Param<'a> {
    Text(Option<&'a str>),
    /// Text never written into a statement's text: a password hash or an account's
    /// information. PostgreSQL logs the text of a statement that fails (a signup of a name
    /// that is taken, say), but not the values bound to it, so a statement with one is sent
    /// with bound parameters instead of as an `EXECUTE`.
    Private(Option<&'a str>),
    BigInt(Option<i64>),
    Int(Option<i32>),
    Double(f64),
    Bool(bool),
    TextArray(&'a [&'a str]),
    IntArray(&'a [i32]),
    DoubleArray(&'a [f64]),
}

/// A `TEXT` parameter.
fn text<'a>(value: impl Into<Option<&'a str>>) -> Param<'a> {
    Param::Text(value.into())
}

/// A `TEXT` parameter that must not appear in a statement's text ([`Param::Private`]).
fn private<'a>(value: impl Into<Option<&'a str>>) -> Param<'a> {
    Param::Private(value.into())
}

/// A `BIGINT` parameter.
fn big<'a>(value: impl Into<Option<i64>>) -> Param<'a> {
    Param::BigInt(value.into())
}

/// An `INTEGER` parameter.
fn int<'a>(value: impl Into<Option<i32>>) -> Param<'a> {
    Param::Int(value.into())
}

impl Param<'_> {
    /// The type the statement declares for it.
    fn sql_type(&self) -> &'static str {
        match self {
            Param::Text(_) | Param::Private(_) => "TEXT",
            Param::BigInt(_) => "BIGINT",
            Param::Int(_) => "INTEGER",
            Param::Double(_) => "DOUBLE PRECISION",
            Param::Bool(_) => "BOOLEAN",
            Param::TextArray(_) => "TEXT[]",
            Param::IntArray(_) => "INTEGER[]",
            Param::DoubleArray(_) => "DOUBLE PRECISION[]",
        }
    }

    /// Appends the value as an SQL literal: text escaped by the driver's own
    /// `escape_literal` (libpq's rules), numbers as Rust writes them (a float's shortest form
    /// that reads back the same).
    fn write_literal(&self, out: &mut String) -> Result<()> {
        use std::fmt::Write as _;
        let list = |out: &mut String, items: &mut dyn Iterator<Item = String>| {
            out.push_str("ARRAY[");
            for (n, item) in items.enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&item);
            }
            out.push(']');
        };
        match *self {
            Param::Private(Some(_)) => {
                return Err(Error::Store(
                    "a private value cannot be written into a statement".into(),
                ));
            }
            Param::Text(None) | Param::Private(None) | Param::BigInt(None) | Param::Int(None) => {
                out.push_str("NULL")
            }
            Param::Text(Some(text)) => out.push_str(&escape_literal(text)),
            Param::BigInt(Some(n)) => write!(out, "{n}").unwrap_or(()),
            Param::Int(Some(n)) => write!(out, "{n}").unwrap_or(()),
            Param::Double(x) if x.is_finite() => write!(out, "{x:?}").unwrap_or(()),
            Param::Double(x) => {
                return Err(Error::Store(format!("not a finite number: {x}").into()));
            }
            Param::Bool(b) => out.push_str(if b { "TRUE" } else { "FALSE" }),
            Param::TextArray(items) => {
                list(out, &mut items.iter().map(|item| escape_literal(item)));
                out.push_str("::TEXT[]");
            }
            Param::IntArray(items) => {
                list(out, &mut items.iter().map(i32::to_string));
                out.push_str("::INTEGER[]");
            }
            Param::DoubleArray(items) => {
                if let Some(x) = items.iter().find(|x| !x.is_finite()) {
                    return Err(Error::Store(format!("not a finite number: {x}").into()));
                }
                list(out, &mut items.iter().map(|x| format!("{x:?}")));
                out.push_str("::DOUBLE PRECISION[]");
            }
        }
        Ok(())
    }
}

impl<'a> Param<'a> {
    /// The value bound to a statement, with its type.
    fn bound(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Param::Text(v) | Param::Private(v) => (v, Type::TEXT),
            Param::BigInt(v) => (v, Type::INT8),
            Param::Int(v) => (v, Type::INT4),
            Param::Double(v) => (v, Type::FLOAT8),
            Param::Bool(v) => (v, Type::BOOL),
            Param::TextArray(v) => (v, Type::TEXT_ARRAY),
            Param::IntArray(v) => (v, Type::INT4_ARRAY),
            Param::DoubleArray(v) => (v, Type::FLOAT8_ARRAY),
        }
    }
}

/// A row of a statement run either way: an `EXECUTE`'s (every value in its text form) or a
/// statement's with bound parameters.
type AnyRow = Box<dyn Columns>;

/// What the server answered a statement: its rows, and how many rows it changed.
struct Answer {
    rows: Vec<AnyRow>,
    changed: u64,
}

/// Runs `statement`: as an `EXECUTE` ([`execute_prepared`]), or, if a parameter is a
/// [`Param::Private`] value, with bound parameters, unnamed, in one flight (one round trip
/// too; no `statement_timeout` of its own, as it needs a statement of its own before it:
/// these are writes of one account's row, and a login's settle when it upgrades the hash; the
/// command's deadline still bounds them on the instance's side).
fn run_statement(conn: &mut Pooled, statement: &str, params: &[Param<'_>]) -> Result<Answer> {
    if !params.iter().any(|p| matches!(p, Param::Private(Some(_)))) {
        return execute_prepared(conn, statement, params);
    }
    let bound: Vec<_> = params.iter().map(Param::bound).collect();
    let (rows, changed) = conn.link.query_typed(statement, &bound)?;
    Ok(Answer {
        rows: rows
            .into_iter()
            .map(|row| Box::new(row) as AnyRow)
            .collect(),
        changed,
    })
}

/// The name `statement` is prepared under on every server connection: derived from the schema
/// version, its text and its parameters' types, so that a statement of that name on any
/// connection (behind PgBouncer, one this client did not prepare) is this statement.
fn statement_name(statement: &str, params: &[Param<'_>]) -> String {
    let mut digest = Sha256::new();
    // A statement's result may change with the schema under the same text: a new name.
    digest.update(MIGRATIONS.len().to_string().as_bytes());
    for param in params {
        digest.update(param.sql_type().as_bytes());
        digest.update(b",");
    }
    digest.update(b"\0");
    digest.update(statement.as_bytes());
    let mut name = String::from("ssc_");
    for byte in &digest.finalize()[..16] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// Runs `statement` as a prepared statement of the server connection: `EXECUTE` with the
/// parameters as literals, one round trip, no parse or plan of the statement itself. The
/// first time a pooled connection runs it, one message prepares it unless the server
/// connection has it and runs it (so a direct connection never sees an error for it); behind
/// PgBouncer, a server connection that lacks it answers "prepared statement does not exist"
/// (PostgreSQL logs that, with the statement's text: ids, names and addresses, nothing
/// private) and gets the same message. Each server connection prepares each statement once.
fn execute_prepared(conn: &mut Pooled, statement: &str, params: &[Param<'_>]) -> Result<Answer> {
    let name = statement_name(statement, params);
    let mut execute = format!("EXECUTE {name}");
    for (n, param) in params.iter().enumerate() {
        execute.push_str(if n == 0 { "(" } else { ", " });
        param.write_literal(&mut execute)?;
    }
    if !params.is_empty() {
        execute.push(')');
    }
    let known = conn.prepared.contains(&name);
    let answered = if known {
        match conn.link.simple_query(&format!("{SETTINGS} {execute}")) {
            // Behind PgBouncer: another server connection than the one that prepared it.
            Err(e) if sql_state(&e) == Some(&SqlState::INVALID_SQL_STATEMENT_NAME) => None,
            answered => Some(answered?),
        }
    } else {
        None
    };
    let messages = match answered {
        Some(messages) => messages,
        None => {
            // Prepares it unless this server connection has it, then runs it: one message,
            // one implicit transaction, so one server connection behind PgBouncer.
            let types: Vec<&str> = params.iter().map(Param::sql_type).collect();
            let types = if types.is_empty() {
                String::new()
            } else {
                format!("({})", types.join(", "))
            };
            let prepare = escape_literal(&format!("PREPARE {name}{types} AS {statement}"));
            let messages = conn.link.simple_query(&format!(
                "{SETTINGS}
                 DO $ssc$ BEGIN
                     IF NOT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = '{name}')
                     THEN
                         EXECUTE {prepare};
                     END IF;
                 END $ssc$; {execute}"
            ))?;
            conn.prepared.insert(name);
            messages
        }
    };
    let mut answer = Answer {
        rows: Vec::new(),
        changed: 0,
    };
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => answer.rows.push(Box::new(row)),
            SimpleQueryMessage::CommandComplete(changed) => answer.changed = changed,
            _ => {}
        }
    }
    Ok(answer)
}

/// The rows of `statement` in a transaction: one round trip, no named statement.
fn query(tx: &mut Link, statement: &str, params: &Params<'_>) -> Result<Vec<Row>> {
    Ok(tx.query_typed(statement, params)?.0)
}

/// How many rows `statement` changed in a transaction: one round trip, no named statement.
fn execute(tx: &mut Link, statement: &str, params: &Params<'_>) -> Result<u64> {
    Ok(tx.query_typed(statement, params)?.1)
}

/// PostgreSQL's SQLSTATE of the failure `e`, if it is PostgreSQL's.
fn sql_state(e: &Error) -> Option<&SqlState> {
    let Error::Store(source) = e else {
        return None;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
}

/// Whether `e` is PostgreSQL's abort of a transaction that may succeed if run again.
fn retryable(e: &Error) -> bool {
    sql_state(e).is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// PostgreSQL's schema version, in the `schema_version` table (made on first use), under
/// the migration lock the caller holds, in its transaction.
impl SchemaVersions for Link {
    fn version(&mut self) -> Result<i64> {
        self.simple_query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let version = query(self, "SELECT version FROM schema_version", &[])?
            .first()
            .map(|row| row.try_get::<_, i32>(0))
            .transpose()?;
        Ok(version.map_or(0, i64::from))
    }
    fn apply(&mut self, sql: &str) -> Result<()> {
        self.simple_query(sql).map(drop)
    }
    fn set_version(&mut self, version: i64) -> Result<()> {
        let version = i32::try_from(version)
            .map_err(|_| Error::Config(format!("schema version {version} out of range")))?;
        execute(self, "DELETE FROM schema_version", &[])?;
        execute(
            self,
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[(&version, Type::INT4)],
        )?;
        Ok(())
    }
}

/// A session's condition on account `$1` at generation `$2` (NULL: the operator's).
const GUARD: &str =
    "id = $1 AND ($2::BIGINT IS NULL OR (credentials_generation = $2 AND locked_at IS NULL))";

/// The keys of an attempt as the functions of migration 8 take them: names, thresholds and
/// spans (0 for a key of failures or signups).
fn key_columns<'a>(
    keys: impl Iterator<Item = (&'a str, u32, f64)>,
) -> (Vec<&'a str>, Vec<i32>, Vec<f64>) {
    let (mut names, mut thresholds, mut spans) = (Vec::new(), Vec::new(), Vec::new());
    for (key, threshold, span) in keys {
        names.push(key);
        thresholds.push(i32::try_from(threshold).unwrap_or(i32::MAX));
        spans.push(span);
    }
    (names, thresholds, spans)
}

impl Backend for PostgresBackend {
    fn insert_account(
        &self,
        username: &str,
        password_hash: &str,
        info: &[(Field, String)],
    ) -> Result<AccountId> {
        let value = |field| value_of(info, field).unwrap_or("");
        let (full_name, email, phone, address) = (
            value(Field::FullName),
            value(Field::Email),
            value(Field::Phone),
            value(Field::Address),
        );
        let inserted = self.write_row(
            &format!(
                "INSERT INTO accounts (username, password_hash, full_name, email, phone, address,
                                       created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, {NOW}, {NOW}) RETURNING id"
            ),
            &[
                text(username),
                private(password_hash),
                private(full_name),
                private(email),
                private(phone),
                private(address),
            ],
        );
        match inserted {
            Ok(Some(row)) => row.integer(0),
            Ok(None) => Err(Error::Store("the new account's id was not returned".into())),
            Err(e) if is_unique_violation(&e) => Err(Error::UserExists(username.to_string())),
            Err(e) => Err(e),
        }
    }

    fn find_login(&self, username: &str) -> Result<Option<LoginRecord>> {
        self.read_row(
            &format!("SELECT {LOGIN_RECORD} FROM accounts WHERE lower(username) = lower($1)"),
            &[text(username)],
        )?
        .map(|row| login_record(&*row, 0))
        .transpose()
    }

    fn session_state(&self, id: AccountId) -> Result<Option<SessionState>> {
        self.read_row(
            &format!("SELECT {SESSION_STATE} FROM accounts WHERE id = $1"),
            &[big(id)],
        )?
        .map(|row| session_state(&*row))
        .transpose()
    }

    fn accounts(&self, username: Option<&str>) -> Result<Vec<AccountSummary>> {
        self.read(
            &format!(
                "SELECT {ACCOUNT_SUMMARY} FROM accounts
                 WHERE $1::TEXT IS NULL OR lower(username) = lower($1)
                 ORDER BY lower(username), id"
            ),
            &[text(username)],
        )?
        .iter()
        .map(|row| account_summary(&**row))
        .collect()
    }

    fn lock(&self, id: AccountId) -> Result<bool> {
        Ok(self.execute(
            &format!("UPDATE accounts SET locked_at = COALESCE(locked_at, {NOW}) WHERE id = $1"),
            &[big(id)],
        )? > 0)
    }

    fn reset_password_hash(&self, id: AccountId, hash: &str) -> Result<bool> {
        Ok(self.execute(
            &format!(
                "UPDATE accounts SET password_hash = $2, updated_at = {NOW},
                                     credentials_generation = credentials_generation + 1
                 WHERE id = $1"
            ),
            &[big(id), private(hash)],
        )? > 0)
    }

    fn known_addresses(&self, id: AccountId) -> Result<Vec<(String, f64)>> {
        self.read(
            "SELECT address, last_login_at FROM known_addresses WHERE account_id = $1
             ORDER BY last_login_at DESC",
            &[big(id)],
        )?
        .iter()
        .map(|row| Ok((row.text(0)?, row.real(1)?)))
        .collect()
    }

    fn account_totals(&self) -> Result<AccountTotals> {
        let day_ago = NOW.replace("now()", "(now() - interval '1 day')");
        let row = self
            .read_row(
                &format!(
                    "SELECT count(*), count(locked_at),
                            count(CASE WHEN last_login_at >= {day_ago} THEN 1 END)
                     FROM accounts"
                ),
                &[],
            )?
            .ok_or_else(|| Error::Store("no totals returned".into()))?;
        Ok(AccountTotals {
            accounts: row.integer(0)?,
            locked: row.integer(1)?,
            logged_in_last_day: row.integer(2)?,
        })
    }

    fn account(&self, id: AccountId, generation: Option<i64>) -> Result<Option<AccountView>> {
        self.read_row(
            &format!("SELECT {ACCOUNT_VIEW} FROM accounts WHERE {GUARD}"),
            &[big(id), big(generation)],
        )?
        .map(|row| account_view(&*row))
        .transpose()
    }

    fn credentials(&self, session: SessionAccount) -> Result<Option<(String, String)>> {
        self.read_row(
            &format!("SELECT username, password_hash FROM accounts WHERE {GUARD}"),
            &[big(session.id), big(Some(session.generation))],
        )?
        .map(|row| Ok((row.text(0)?, row.text(1)?)))
        .transpose()
    }

    fn update_account(
        &self,
        session: SessionAccount,
        changes: &[(Field, String)],
        expected_version: Option<i64>,
    ) -> Result<Option<AccountView>> {
        let change = |field| value_of(changes, field);
        let (full_name, email, phone, address) = (
            change(Field::FullName),
            change(Field::Email),
            change(Field::Phone),
            change(Field::Address),
        );
        self.write_row(
            &format!(
                "UPDATE accounts SET full_name = COALESCE($3, full_name),
                                     email = COALESCE($4, email),
                                     phone = COALESCE($5, phone),
                                     address = COALESCE($6, address),
                                     version = version + 1,
                                     updated_at = {NOW}
                 WHERE {GUARD} AND ($7::BIGINT IS NULL OR version = $7)
                 RETURNING {ACCOUNT_VIEW}"
            ),
            &[
                big(session.id),
                big(Some(session.generation)),
                private(full_name),
                private(email),
                private(phone),
                private(address),
                big(expected_version),
            ],
        )?
        .map(|row| account_view(&*row))
        .transpose()
    }

    fn replace_password_hash(
        &self,
        session: SessionAccount,
        old: &str,
        new: &str,
    ) -> Result<Option<i64>> {
        self.write_row(
            &format!(
                "UPDATE accounts SET password_hash = $4, updated_at = {NOW},
                                     credentials_generation = credentials_generation + 1
                 WHERE {GUARD} AND password_hash = $3
                 RETURNING credentials_generation"
            ),
            &[
                big(session.id),
                big(Some(session.generation)),
                private(old),
                private(new),
            ],
        )?
        .map(|row| row.integer(0))
        .transpose()
    }

    fn delete_account(&self, id: AccountId, generation: Option<i64>, hash: &str) -> Result<bool> {
        Ok(self.execute(
            &format!("DELETE FROM accounts WHERE {GUARD} AND password_hash = $3"),
            &[big(id), big(generation), private(hash)],
        )? > 0)
    }

    fn count_attempt(&self, attempt: &Attempt<'_>, read_login: bool) -> Result<Counted> {
        let keys = attempt.keys;
        let (names, thresholds, spans) = key_columns(keys.counted());
        let policy = attempt.policy;
        let row = self
            .write_row(
                "SELECT r_refused_until, r_limit, r_id, r_hash, r_locked, r_generation
                 FROM throttle_count($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                     $14)",
                &[
                    Param::TextArray(&names),
                    Param::IntArray(&thresholds),
                    Param::DoubleArray(&spans),
                    text(keys.name_key()),
                    text(keys.username()),
                    Param::Bool(read_login),
                    text(keys.address()),
                    Param::Double(attempt.now),
                    Param::Double(attempt.forget_after()),
                    Param::Double(attempt.prune_before()),
                    Param::Double(attempt.known_since()),
                    Param::Double(policy.pending_ttl.as_secs_f64()),
                    Param::Double(policy.first_block.as_secs_f64()),
                    int(Some(PRUNE_BATCH as i32)),
                ],
            )?
            .ok_or_else(|| Error::Store("throttle_count returned no row".into()))?;
        let until = row.real(0)?;
        if until > attempt.now {
            let limit = match row.integer(1)? {
                0 => Limit::Failures,
                1 => Limit::Successes,
                _ => Limit::AtOnce,
            };
            return Ok(Counted::Refused(Refusal { until, limit }));
        }
        let record = match row.optional_text(2)? {
            Some(_) => Some(login_record(&*row, 2)?),
            None => None,
        };
        Ok(Counted::Counted(record))
    }

    fn settle(
        &self,
        attempt: &Attempt<'_>,
        outcome: Outcome,
        login: Option<LoginUpdate<'_>>,
        event: Option<SignInRecord<'_>>,
    ) -> Result<Option<LastSignIn>> {
        let keys = attempt.keys;
        let (all, thresholds, spans) = key_columns(keys.counted());
        let recorded: Vec<&str> = keys.recorded(outcome).map(|(key, _, _)| key).collect();
        let cleared: Vec<&str> = keys.cleared(outcome).collect();
        let account = match (outcome, keys.username()) {
            (Outcome::Passed(id), Some(_)) => Some(id),
            _ => None,
        };
        let rehash = login.and_then(|login| login.rehash);
        let (old_hash, new_hash) = (rehash.map(|(old, _)| old), rehash.map(|(_, new)| new));
        let certificate = login.and_then(|login| login.certificate);
        let policy = attempt.policy;
        let row = self.write_row(
            "SELECT r_at, r_address, r_method, r_outcome, coalesce(r_failed, 0)
             FROM sign_in_settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                 $15, $16, $17, $18, $19, $20, $21)",
            &[
                Param::TextArray(&all),
                Param::IntArray(&thresholds),
                Param::DoubleArray(&spans),
                Param::TextArray(&recorded),
                Param::TextArray(&cleared),
                big(account),
                text(keys.address()),
                Param::Double(attempt.now),
                Param::Double(attempt.forget_after()),
                Param::Double(policy.pending_ttl.as_secs_f64()),
                Param::Double(policy.first_block.as_secs_f64()),
                Param::Double(policy.longest_block.as_secs_f64()),
                Param::Bool(login.is_some()),
                private(old_hash),
                private(new_hash),
                text(certificate),
                big(event.map(|e| e.account)),
                text(event.map(|e| e.address)),
                text(event.map(|e| e.method.name())),
                text(event.map(|e| e.outcome.name())),
                int(Some(HISTORY_KEPT as i32)),
            ],
        )?;
        match (event, row) {
            (Some(event), Some(row)) if event.outcome == SignInOutcome::SignedIn => {
                last_sign_in(&*row).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn record_throttled(
        &self,
        username: &str,
        address: &str,
        method: SignInMethod,
        gap: Duration,
    ) -> Result<()> {
        let since = NOW.replace("now()", "(now() - make_interval(secs => $5))");
        self.execute(
            &format!(
                "SELECT sign_in_record(a.id, $2, $3, $4, $6) FROM accounts a
                  WHERE lower(a.username) = $1 AND NOT EXISTS (
                        SELECT 1 FROM sign_ins s
                         WHERE s.account_id = a.id AND s.outcome = $4
                           AND s.at >= {since})"
            ),
            &[
                text(username),
                text(address),
                text(method.name()),
                text(SignInOutcome::Throttled.name()),
                Param::Double(gap.as_secs_f64()),
                int(Some(HISTORY_KEPT as i32)),
            ],
        )?;
        Ok(())
    }

    fn certificate_enrolled(&self, id: AccountId, fingerprint: &str) -> Result<bool> {
        Ok(self
            .read_row(
                "SELECT 1 FROM certificates WHERE account_id = $1 AND fingerprint = $2",
                &[big(id), text(fingerprint)],
            )?
            .is_some())
    }

    fn enroll_certificate(
        &self,
        session: SessionAccount,
        fingerprint: &str,
        label: &str,
        max: usize,
    ) -> Result<bool> {
        Ok(self.execute(
            &format!(
                "INSERT INTO certificates (account_id, fingerprint, label, enrolled_at)
                 SELECT id, $3, $4, {NOW} FROM accounts
                  WHERE {GUARD}
                    AND (SELECT count(*) FROM certificates WHERE account_id = $1) < $5
                 ON CONFLICT DO NOTHING"
            ),
            &[
                big(session.id),
                big(Some(session.generation)),
                text(fingerprint),
                private(label),
                big(Some(i64::try_from(max).unwrap_or(i64::MAX))),
            ],
        )? > 0)
    }

    fn certificates(
        &self,
        id: AccountId,
        generation: Option<i64>,
    ) -> Result<Option<Vec<CertificateView>>> {
        let found = self.read(
            &format!(
                "WITH a AS (SELECT id FROM accounts WHERE {GUARD})
                 SELECT a.id, {CERTIFICATE_VIEW} FROM a
                   LEFT JOIN certificates c ON c.account_id = a.id
                  ORDER BY c.enrolled_at, c.fingerprint"
            ),
            &[big(id), big(generation)],
        )?;
        let items = found
            .iter()
            .map(|row| joined_item(&**row, 1, certificate_view))
            .collect::<Result<Vec<_>>>()?;
        Ok(joined_list(items))
    }

    fn unenroll_certificate(
        &self,
        id: AccountId,
        generation: Option<i64>,
        fingerprint: &str,
    ) -> Result<bool> {
        Ok(self.execute(
            &format!(
                "DELETE FROM certificates
                  WHERE account_id = (SELECT id FROM accounts WHERE {GUARD})
                    AND fingerprint = $3"
            ),
            &[big(id), big(generation), text(fingerprint)],
        )? > 0)
    }

    fn sign_ins(
        &self,
        id: AccountId,
        generation: Option<i64>,
        limit: usize,
    ) -> Result<Option<Vec<SignInEvent>>> {
        let found = self.read(
            &format!(
                "WITH a AS (SELECT id FROM accounts WHERE {GUARD})
                 SELECT a.id, s.at, s.address, s.method, s.outcome FROM a
                   LEFT JOIN LATERAL (SELECT * FROM sign_ins WHERE account_id = a.id
                                       ORDER BY id DESC LIMIT $3) s ON TRUE
                  ORDER BY s.id DESC"
            ),
            &[
                big(id),
                big(generation),
                big(Some(i64::try_from(limit).unwrap_or(i64::MAX))),
            ],
        )?;
        let items = found
            .iter()
            .map(|row| joined_item(&**row, 1, sign_in_event))
            .collect::<Result<Vec<_>>>()?;
        Ok(joined_list(items))
    }

    fn failure_counts(&self) -> Result<Vec<(String, FailureCount)>> {
        self.read(
            &format!("SELECT {FAILURE_COUNT} FROM login_failures ORDER BY key COLLATE \"C\""),
            &[],
        )?
        .iter()
        .map(|row| failure_count(&**row))
        .collect()
    }

    fn clear_failure_counts(
        &self,
        selection: &KeySelection,
        unlock: Option<AccountId>,
    ) -> Result<Option<usize>> {
        let matching = |tx: &mut Link| -> Result<Vec<String>> {
            let mut keys = Vec::new();
            for row in query(tx, "SELECT key FROM login_failures", &[])? {
                let key = row.text(0)?;
                if (selection.matches)(&key) {
                    keys.push(key);
                }
            }
            Ok(keys)
        };
        let cleared = self.transaction(COMMAND_DEADLINE, "", |tx| {
            // After every attempt in flight under these keys (each holds an anchor), in the
            // keys' one order; then none is in flight, and the keys made meanwhile are seen.
            let mut keys = matching(tx)?;
            keys.extend(selection.anchors.iter().cloned());
            execute(
                tx,
                "SELECT throttle_lock_keys($1)",
                &[(&keys, Type::TEXT_ARRAY)],
            )?;
            let keys = matching(tx)?;
            let cleared = execute(
                tx,
                "DELETE FROM login_failures WHERE key = ANY ($1)",
                &[(&keys, Type::TEXT_ARRAY)],
            )?;
            // The account's row after the keys, as a login's forgiveness takes them.
            if let Some(id) = unlock
                && execute(
                    tx,
                    "UPDATE accounts SET locked_at = NULL WHERE id = $1",
                    &[(&id, Type::INT8)],
                )? == 0
            {
                return Err(Error::NoSuchAccount);
            }
            Ok(usize::try_from(cleared).unwrap_or(usize::MAX))
        });
        match cleared {
            Err(Error::NoSuchAccount) => Ok(None),
            cleared => cleared.map(Some),
        }
    }

    fn ping(&self) -> Result<()> {
        self.run(Access::Read, COMMAND_DEADLINE, |conn| {
            conn.link.simple_query("SELECT 1").map(drop)
        })
    }

    /// Nothing to do: the pool's connections end when the store is dropped, and every write
    /// was committed when it returned.
    fn close(&self) {}
}

/// Whether `e` is a unique-constraint violation.
fn is_unique_violation(e: &Error) -> bool {
    sql_state(e) == Some(&SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
#[path = "../../tests/support/postgres.rs"]
mod test_cluster;

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::db::contract::{TestDatabase, contract_tests, fast, session};
    use crate::db::{AccountStore, LoginOutcome, StoreLocation, StoreOptions, ThrottlePolicy};

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

    /// Every contract again, through a real PgBouncer in transaction pooling (its defaults
    /// otherwise) in front of the test cluster: a server connection per transaction.
    mod through_pgbouncer {
        use std::sync::OnceLock;

        use super::super::test_cluster::pgbouncer::PgBouncer;
        use super::*;

        /// A fresh database of the test cluster, reached through the shared PgBouncer.
        struct BouncedDatabase(String);

        impl BouncedDatabase {
            fn new() -> BouncedDatabase {
                static BOUNCER: OnceLock<PgBouncer> = OnceLock::new();
                let cluster = test_cluster::cluster();
                let bouncer = BOUNCER.get_or_init(|| PgBouncer::start(cluster.port));
                let url = cluster.new_database();
                let name = url.rsplit('/').next().expect("a database name");
                BouncedDatabase(bouncer.url(name))
            }
        }

        impl TestDatabase for BouncedDatabase {
            fn open(&self, options: StoreOptions) -> AccountStore {
                AccountStore::open(&StoreLocation::Postgres(self.0.clone()), options).unwrap()
            }
        }

        contract_tests!(BouncedDatabase::new());
    }

    /// A clear (an operator's `unthrottle`, or `unlock`) takes the keys' locks first: an
    /// attempt in flight under them (here a transaction that holds a key's lock, as
    /// `throttle_count` does, and writes the count back at its end) finishes first, and its
    /// count is cleared too, never written back over the clear.
    #[test]
    fn a_clear_waits_for_an_attempt_in_flight_and_is_not_undone() -> Result<()> {
        let db = PostgresDatabase::new();
        let s = db.open(fast());
        s.create_account("vera", b"pw-vera-1", &[])?;
        s.set_locked("vera", true)?;
        let from: IpAddr = "192.0.2.90".parse().unwrap();
        for _ in 0..3 {
            s.login("vera", b"guess", from)?;
        }
        let mut client = postgres::Client::connect(&db.0, postgres::NoTls).unwrap();
        let mut attempt = client.transaction().unwrap();
        attempt
            .execute("SELECT throttle_lock_keys($1)", &[&vec!["user:vera"]])
            .unwrap();
        let failures: i64 = attempt
            .query_one(
                "SELECT failures FROM login_failures WHERE key = 'user:vera'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(failures, 3);
        let operator = db.open(fast());
        let unlocking = std::thread::spawn(move || operator.set_locked("vera", false));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !unlocking.is_finished(),
            "the clear did not wait for the attempt"
        );
        attempt
            .execute(
                "INSERT INTO login_failures VALUES ('user:vera', $1, 0, 0)
                 ON CONFLICT (key) DO UPDATE SET failures = $1",
                &[&(failures + 1)],
            )
            .unwrap();
        attempt.commit().unwrap();
        unlocking.join().unwrap()?;
        let keys: Vec<String> = s.failure_counts()?.into_iter().map(|(k, _)| k).collect();
        assert!(!keys.iter().any(|k| k.contains("vera")), "{keys:?}");
        assert_eq!(s.account_named("vera")?.locked_at, None);
        Ok(())
    }

    /// A statement has PostgreSQL's deadline, set in its own transaction (PgBouncer refuses
    /// it as a startup option): a login that waits for a key another transaction holds fails
    /// after 2 s, before the command's own deadline, instead of waiting for ever.
    #[test]
    fn a_statement_that_waits_too_long_is_cancelled() -> Result<()> {
        let db = PostgresDatabase::new();
        let s = db.open(fast());
        s.create_account("wanda", b"pw-wanda-1", &[])?;
        let mut client = postgres::Client::connect(&db.0, postgres::NoTls).unwrap();
        let mut holder = client.transaction().unwrap();
        holder
            .execute("SELECT throttle_lock_keys($1)", &[&vec!["user:wanda"]])
            .unwrap();
        let from: IpAddr = "192.0.2.95".parse().unwrap();
        let started = std::time::Instant::now();
        let err = s.login("wanda", b"pw-wanda-1", from).unwrap_err();
        let waited = started.elapsed();
        assert!(err.to_string().contains("statement timeout"), "{err}");
        assert!(
            (Duration::from_millis(1900)..COMMAND_DEADLINE).contains(&waited),
            "{waited:?}"
        );
        holder.rollback().unwrap();
        assert!(matches!(
            s.login("wanda", b"pw-wanda-1", from)?,
            LoginOutcome::Success(_)
        ));
        Ok(())
    }

    /// A missed deadline counts against the server only when the server had the time to
    /// answer or cancel the statement itself: its statement_timeout, set with each statement.
    #[test]
    fn the_server_is_blamed_only_after_its_own_statement_timeout() {
        assert!(SETTINGS.contains("statement_timeout = 2000;"));
        assert!(link::SERVER_SILENT_AFTER > Duration::from_secs(2));
        assert!(link::SERVER_SILENT_AFTER + LEAST_WAIT <= COMMAND_DEADLINE);
    }

    /// A read whose connection died is sent again on a fresh one; a write is not (it may have
    /// been done: only a new read can tell), and the links made before it failed are not lent
    /// again.
    #[test]
    fn a_read_is_sent_again_on_a_fresh_connection_and_a_write_is_not() -> Result<()> {
        let db = PostgresDatabase::new();
        let s = db.open(fast());
        let id = s.create_account("yuri", b"pw-yuri-1", &[])?;
        drop(s);
        let (backend, _) = PostgresBackend::open(&db.0, SchemaUpgrade::Refuse)?;
        let mut admin = postgres::Client::connect(&db.0, postgres::NoTls).unwrap();
        let mut end_connections = || {
            let others = "FROM pg_stat_activity
                          WHERE datname = current_database() AND pid <> pg_backend_pid()";
            admin
                .batch_execute(&format!("SELECT pg_terminate_backend(pid) {others}"))
                .unwrap();
            while admin
                .query_one(&format!("SELECT count(*) {others}"), &[])
                .unwrap()
                .get::<_, i64>(0)
                > 0
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        assert_eq!(backend.accounts(Some("yuri"))?.len(), 1);
        end_connections();
        assert_eq!(backend.accounts(Some("yuri"))?.len(), 1);
        end_connections();
        let err = backend.lock(id).unwrap_err();
        assert!(matches!(err, Error::Store(_)), "{err}");
        assert!(backend.lock(id)?);
        Ok(())
    }

    /// On a cluster whose `lower()` folds KELVIN SIGN to `k` (C.UTF-8, Debian's default), a
    /// name with it is never looked up: it reaches no account, and guesses under it count
    /// against the address only, not against the account they look like.
    #[test]
    fn a_look_alike_name_reaches_no_account() -> Result<()> {
        let own = test_cluster::Cluster::with_locale("C.UTF-8");
        let url = own.new_database();
        let folded: String = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .query_one("SELECT lower(U&'\\212A')", &[])
            .unwrap()
            .get(0);
        assert_eq!(folded, "k", "this cluster does not fold KELVIN SIGN");
        let s = AccountStore::open(&StoreLocation::Postgres(url), fast())?;
        let id = s.create_account("kate", b"pw-kate-1", &[])?;
        let kelvin = "\u{212A}ate";
        let from: IpAddr = "192.0.2.30".parse().unwrap();
        assert_eq!(s.login(kelvin, b"pw-kate-1", from)?, LoginOutcome::Failed);
        for n in 1..=10 {
            let guesser: IpAddr = format!("203.0.113.{n}").parse().unwrap();
            assert_eq!(s.login(kelvin, b"guess", guesser)?, LoginOutcome::Failed);
        }
        let keys: Vec<String> = s.failure_counts()?.into_iter().map(|(k, _)| k).collect();
        assert!(keys.iter().all(|k| k.starts_with("addr:")), "{keys:?}");
        assert!(matches!(s.account_named(kelvin), Err(Error::NoSuchAccount)));
        assert!(matches!(
            s.set_locked(kelvin, true),
            Err(Error::NoSuchAccount)
        ));
        assert_eq!(
            s.login("KATE", b"pw-kate-1", from)?,
            LoginOutcome::Success(id)
        );
        Ok(())
    }

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
        let mut client = postgres::Client::connect(&db.0, postgres::NoTls).unwrap();
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
        let mut client = postgres::Client::connect(&db.0, postgres::NoTls).unwrap();
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
            let err = store.view(session(id)).unwrap_err();
            assert!(matches!(err, Error::Store(_)), "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
        }
        own.start_server();
        assert_eq!(store.view(session(id)).unwrap().username, "rita");
        assert!(store.authenticate("rita", b"pw-rita-1").unwrap().is_some());
    }

    #[test]
    fn version_5_database_gains_the_lock_and_the_credentials_generation() -> Result<()> {
        let db = PostgresDatabase::new();
        {
            let mut client = postgres::Client::connect(&db.0, postgres::NoTls).unwrap();
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

    /// One step of [`the_counts_rules_in_sql_are_throttle_rs`]: a password check by name
    /// `name` (an index into its names) from address `from`, `delay` seconds after the last,
    /// that is not made if `busy`, else succeeds if the account exists and `right`.
    #[derive(Clone, Debug)]
    struct Check {
        name: usize,
        from: usize,
        delay: f64,
        right: bool,
        busy: bool,
        signup: bool,
        read: bool,
        /// Settled only after the next check that is not held, in reverse order.
        hold: bool,
    }

    fn check() -> impl proptest::strategy::Strategy<Value = Check> {
        use proptest::prelude::*;
        (
            0..4usize,
            0..3usize,
            0.0..40.0f64,
            any::<bool>(),
            any::<u8>(),
        )
            .prop_map(|(name, from, delay, right, n)| Check {
                name,
                from,
                delay,
                right,
                busy: n % 5 == 1,
                signup: n < 20,
                read: n % 4 != 0,
                hold: n % 3 == 2,
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The counts' rules, run in Rust over SQLite (`throttle.rs`) and in SQL on
        /// PostgreSQL (migration 8), give the same refusals, records and counts for any
        /// sequence of checks, at the same (made-up) times.
        #[test]
        fn the_counts_rules_in_sql_are_throttle_rs(checks in proptest::collection::vec(check(), 1..40)) {
            use crate::db::sqlite::SqliteBackend;
            use crate::db::throttle::ThrottleKeys;
            let policy = ThrottlePolicy {
                per_account: 2,
                per_address: 3,
                signups_per_address: 2,
                successes_per_account: 3,
                successes_per_address: 4,
                success_window: Duration::from_secs(30),
                first_block: Duration::from_millis(1500),
                longest_block: Duration::from_secs(20),
                forget_after: Duration::from_secs(60),
                pending_ttl: Duration::from_secs(45),
            };
            let dir = tempfile::tempdir().unwrap();
            let migrate = crate::db::SchemaUpgrade::Migrate;
            let sqlite = SqliteBackend::open(&dir.path().join("users.db"), migrate).unwrap().0;
            let postgres = PostgresBackend::open(&PostgresDatabase::new().0, migrate).unwrap().0;
            let backends: [&dyn Backend; 2] = [&sqlite, &postgres];
            let names = ["ann", "BOB", "nobody", "b\u{212A}d"];
            for backend in backends {
                backend.insert_account("ann", "hash-ann", &[]).unwrap();
                backend.insert_account("bob", "hash-bob", &[]).unwrap();
            }
            let addresses = ["192.0.2.1", "192.0.2.2", "2001:db8::1"];
            let mut now = 1_800_000_000.0;
            let mut held: Vec<(ThrottleKeys, f64, Outcome)> = Vec::new();
            for check in checks {
                now += check.delay;
                let from: IpAddr = addresses[check.from].parse().unwrap();
                let keys = if check.signup {
                    ThrottleKeys::signup(from, &policy)
                } else {
                    ThrottleKeys::password_check(names[check.name], from, &policy)
                };
                let attempt = Attempt { policy: &policy, keys: &keys, now };
                let outcomes: Vec<Counted> = backends
                    .iter()
                    .map(|b| b.count_attempt(&attempt, check.read).unwrap())
                    .collect();
                match (&outcomes[0], &outcomes[1]) {
                    (Counted::Refused(a), Counted::Refused(b)) => {
                        proptest::prop_assert!((a.until - b.until).abs() < 1e-6, "{a:?} {b:?}");
                        proptest::prop_assert_eq!(a.limit, b.limit);
                    }
                    (a, b) => proptest::prop_assert_eq!(a, b),
                }
                // A check that read no record (passwd's) succeeds for the account named.
                let named = keys.username().and_then(|name| {
                    backends[0].find_login(name).unwrap().map(|r| r.id)
                });
                let id = match &outcomes[0] {
                    Counted::Counted(Some(record)) => Some(record.id),
                    Counted::Counted(None) if !check.read => named,
                    _ => None,
                };
                let outcome = match id {
                    _ if check.busy => Outcome::Unchecked,
                    Some(id) if check.right => Outcome::Passed(id),
                    _ => Outcome::Failed,
                };
                if let Counted::Counted(_) = outcomes[0] {
                    held.push((keys, now, outcome));
                }
                if !check.hold {
                    for (keys, then, outcome) in held.drain(..).rev() {
                        let attempt = Attempt { policy: &policy, keys: &keys, now: then };
                        for backend in backends {
                            backend.settle(&attempt, outcome, None, None).unwrap();
                        }
                    }
                }
                let [a, b] = backends.map(|b| b.failure_counts().unwrap());
                proptest::prop_assert_eq!(a.len(), b.len(), "{:?} {:?}", a, b);
                for ((ka, ca), (kb, cb)) in a.iter().zip(&b) {
                    proptest::prop_assert_eq!(ka, kb);
                    proptest::prop_assert_eq!(ca.failures, cb.failures);
                    proptest::prop_assert!((ca.last_failure_at - cb.last_failure_at).abs() < 1e-6);
                    proptest::prop_assert!((ca.blocked_until - cb.blocked_until).abs() < 1e-6);
                    proptest::prop_assert_eq!(ca.pending, cb.pending);
                    proptest::prop_assert!((ca.pending_at - cb.pending_at).abs() < 1e-6);
                }
                for id in [1, 2] {
                    let [mut a, mut b] = backends.map(|b| b.known_addresses(id).unwrap());
                    a.sort_by(|x, y| x.0.cmp(&y.0));
                    b.sort_by(|x, y| x.0.cmp(&y.0));
                    proptest::prop_assert_eq!(a, b);
                }
            }
        }
    }

    /// A database that cannot be reached is said so with the reason, not only "error
    /// connecting to server".
    #[test]
    fn a_database_that_cannot_be_reached_is_said_why() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://nobody@127.0.0.1:{port}/accounts");
        let err = AccountStore::open(&StoreLocation::Postgres(url), fast())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("cannot open the account database: no connection")
                && err.contains("Connection refused"),
            "{err}"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("postgres://u:p@127.0.0.1:5432/db").is_ok());
        assert!(check_url("postgres://u@[::1]/db").is_ok());
        assert!(check_url("postgres://u@h:notaport/db").is_err());
    }
}
