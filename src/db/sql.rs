//! What the two SQL backends share, written once: the migration runner, the column lists of
//! the store's rows and how a row maps to the store's types. Each backend gives its driver's
//! row as [`Columns`] and its open transaction as [`SchemaVersions`].

use super::throttle::FailureCount;
use super::{AccountSummary, LoginRecord, SchemaChange, SchemaUpgrade, SessionState};
use crate::error::{Error, Result};
use crate::xml::account::AccountView;
use crate::xml::sign_in::{CertificateView, LastSignIn, SignInEvent, SignInMethod, SignInOutcome};

/// One row as a backend's driver gives it, column by column from 0.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, i: usize) -> Result<String>;
    /// A text column that may be NULL.
    fn optional_text(&self, i: usize) -> Result<Option<String>>;
    /// An integer column.
    fn integer(&self, i: usize) -> Result<i64>;
    /// A floating-point column.
    fn real(&self, i: usize) -> Result<f64>;
    /// A boolean column (SQLite's 0 or 1).
    fn boolean(&self, i: usize) -> Result<bool>;
}

/// The columns of an [`AccountView`], in [`account_view`]'s order.
pub(crate) const ACCOUNT_VIEW: &str = "username, full_name, email, phone, address, created_at, \
                                       updated_at, last_login_at, version";

/// An [`AccountView`] from the columns [`ACCOUNT_VIEW`] names.
pub(crate) fn account_view(row: &dyn Columns) -> Result<AccountView> {
    Ok(AccountView {
        username: row.text(0)?,
        fields: [row.text(1)?, row.text(2)?, row.text(3)?, row.text(4)?],
        created_at: row.text(5)?,
        updated_at: row.text(6)?,
        last_login_at: row.optional_text(7)?,
        version: row.integer(8)?,
    })
}

/// The columns of a [`LoginRecord`], in [`login_record`]'s order.
pub(crate) const LOGIN_RECORD: &str =
    "id, password_hash, locked_at IS NOT NULL, credentials_generation";

/// A [`LoginRecord`] from the columns [`LOGIN_RECORD`] names, from column `first` on.
pub(crate) fn login_record(row: &dyn Columns, first: usize) -> Result<LoginRecord> {
    Ok(LoginRecord {
        id: row.integer(first)?,
        hash: row.text(first + 1)?,
        locked: row.boolean(first + 2)?,
        generation: row.integer(first + 3)?,
    })
}

/// The columns of a [`SessionState`], in [`session_state`]'s order.
pub(crate) const SESSION_STATE: &str = "credentials_generation, locked_at IS NOT NULL";

/// A [`SessionState`] from the columns [`SESSION_STATE`] names.
pub(crate) fn session_state(row: &dyn Columns) -> Result<SessionState> {
    Ok(SessionState {
        generation: row.integer(0)?,
        locked: row.boolean(1)?,
    })
}

/// The columns of an [`AccountSummary`], in [`account_summary`]'s order.
pub(crate) const ACCOUNT_SUMMARY: &str = "id, username, created_at, last_login_at, locked_at";

/// An [`AccountSummary`] from the columns [`ACCOUNT_SUMMARY`] names.
pub(crate) fn account_summary(row: &dyn Columns) -> Result<AccountSummary> {
    Ok(AccountSummary {
        id: row.integer(0)?,
        username: row.text(1)?,
        created_at: row.text(2)?,
        last_login_at: row.optional_text(3)?,
        locked_at: row.optional_text(4)?,
    })
}

/// The columns of a key and its [`FailureCount`], in [`failure_count`]'s order.
pub(crate) const FAILURE_COUNT: &str =
    "key, failures, last_failure_at, blocked_until, pending, pending_at";

/// A key and its [`FailureCount`] from the columns [`FAILURE_COUNT`] names.
pub(crate) fn failure_count(row: &dyn Columns) -> Result<(String, FailureCount)> {
    Ok((
        row.text(0)?,
        FailureCount {
            failures: u32::try_from(row.integer(1)?).unwrap_or(u32::MAX),
            last_failure_at: row.real(2)?,
            blocked_until: row.real(3)?,
            pending: u32::try_from(row.integer(4)?).unwrap_or(u32::MAX),
            pending_at: row.real(5)?,
        },
    ))
}

/// The columns of a [`SignInEvent`], in [`sign_in_event`]'s order.
pub(crate) const SIGN_IN_EVENT: &str = "at, address, method, outcome";

/// A [`SignInEvent`] from the columns [`SIGN_IN_EVENT`] names, from column `first` on.
pub(crate) fn sign_in_event(row: &dyn Columns, first: usize) -> Result<SignInEvent> {
    let stored = |what: &str, name: String| {
        Error::Store(format!("a sign-in event with an unknown {what} {name:?}").into())
    };
    let method = row.text(first + 2)?;
    let outcome = row.text(first + 3)?;
    Ok(SignInEvent {
        at: row.text(first)?,
        address: row.text(first + 1)?,
        method: SignInMethod::from_name(&method).ok_or_else(|| stored("method", method))?,
        outcome: SignInOutcome::from_name(&outcome).ok_or_else(|| stored("outcome", outcome))?,
    })
}

/// A [`LastSignIn`] from a row of the last sign-in's [`SIGN_IN_EVENT`] columns (NULL if there
/// was none, its outcome the sign-in's) and then the count of failures since.
pub(crate) fn last_sign_in(row: &dyn Columns) -> Result<LastSignIn> {
    Ok(LastSignIn {
        previous: joined_item(row, 0, sign_in_event)?,
        failed_since: u32::try_from(row.integer(4)?).unwrap_or(u32::MAX),
    })
}

/// The columns of a [`CertificateView`], in [`certificate_view`]'s order.
pub(crate) const CERTIFICATE_VIEW: &str = "fingerprint, label, enrolled_at, last_used_at";

/// A [`CertificateView`] from the columns [`CERTIFICATE_VIEW`] names, from column `first` on.
pub(crate) fn certificate_view(row: &dyn Columns, first: usize) -> Result<CertificateView> {
    Ok(CertificateView {
        fingerprint: row.text(first)?,
        label: row.text(first + 1)?,
        enrolled_at: row.text(first + 2)?,
        last_used_at: row.optional_text(first + 3)?,
    })
}

/// An item of a list read with a LEFT JOIN from the account's row: `None` for the row of an
/// account without items (column `first` NULL), else the item, read by `item` from column
/// `first` on.
pub(crate) fn joined_item<T>(
    row: &dyn Columns,
    first: usize,
    item: impl Fn(&dyn Columns, usize) -> Result<T>,
) -> Result<Option<T>> {
    match row.optional_text(first)? {
        Some(_) => item(row, first).map(Some),
        None => Ok(None),
    }
}

/// The list of an account's items from the rows of [`joined_item`]: `None` if there was no
/// row (no account).
pub(crate) fn joined_list<T>(rows: Vec<Option<T>>) -> Option<Vec<T>> {
    (!rows.is_empty()).then(|| rows.into_iter().flatten().collect())
}

/// A backend's schema version and migrations, inside the one transaction that migrates.
pub(crate) trait SchemaVersions {
    /// The version the database is at (0 for a new one).
    fn version(&mut self) -> Result<i64>;
    /// Runs one migration's SQL.
    fn apply(&mut self, sql: &str) -> Result<()>;
    /// Records the version the database is now at.
    fn set_version(&mut self, version: i64) -> Result<()>;
}

/// Brings the schema up to the newest of `migrations` (entry `n` takes it from version `n` to
/// `n + 1`), inside the caller's transaction, or with [`SchemaUpgrade::Refuse`] refuses an
/// older one ([`Error::Schema`]); refuses a database newer than this program. Gives the
/// version found and the one the schema is at now.
pub(crate) fn migrate(
    db: &mut dyn SchemaVersions,
    migrations: &[&str],
    upgrade: SchemaUpgrade,
) -> Result<SchemaChange> {
    let version = db.version()?;
    let known = migrations.len() as i64;
    if !(0..=known).contains(&version) || (version < known && upgrade == SchemaUpgrade::Refuse) {
        return Err(Error::Schema {
            found: version,
            known,
        });
    }
    for (to, sql) in (1..).zip(migrations).skip(version as usize) {
        db.apply(sql)?;
        log::info!("account database migrated to schema version {to}");
    }
    if version < known {
        db.set_version(known)?;
    }
    Ok(SchemaChange {
        from: version,
        to: known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema version and the migrations applied, in memory.
    #[derive(Default)]
    struct Versions {
        version: i64,
        applied: Vec<String>,
    }

    impl SchemaVersions for Versions {
        fn version(&mut self) -> Result<i64> {
            Ok(self.version)
        }
        fn apply(&mut self, sql: &str) -> Result<()> {
            self.applied.push(sql.to_string());
            Ok(())
        }
        fn set_version(&mut self, version: i64) -> Result<()> {
            self.version = version;
            Ok(())
        }
    }

    #[test]
    fn an_older_schema_is_migrated_only_when_asked() {
        let migrations = ["one", "two", "three"];
        let mut db = Versions {
            version: 1,
            ..Versions::default()
        };
        let refused = migrate(&mut db, &migrations, SchemaUpgrade::Refuse).unwrap_err();
        assert!(matches!(refused, Error::Schema { found: 1, known: 3 }));
        assert!(db.applied.is_empty());
        let change = migrate(&mut db, &migrations, SchemaUpgrade::Migrate).unwrap();
        assert_eq!(change, SchemaChange { from: 1, to: 3 });
        assert_eq!(
            (db.version, db.applied.as_slice()),
            (3, &["two".to_string(), "three".to_string()][..])
        );
        let current = migrate(&mut db, &migrations, SchemaUpgrade::Refuse).unwrap();
        assert_eq!(current, SchemaChange { from: 3, to: 3 });
        db.version = 4;
        for upgrade in [SchemaUpgrade::Refuse, SchemaUpgrade::Migrate] {
            let newer = migrate(&mut db, &migrations, upgrade).unwrap_err();
            assert!(newer.to_string().contains("newer"), "{newer}");
        }
    }
}
