//! What every backend must do, as tests: each backend's module runs them all with
//! [`contract_tests!`], given a way to open stores on one fresh database. Several stores on one
//! database stand for several server instances sharing it.

use std::net::IpAddr;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use super::hash_gate::HashTurn;
use super::throttle::{Attempt, Limit, PRUNE_BATCH, ThrottleKeys};
use super::{
    AccountId, AccountStore, Counted, LoginOutcome, SessionAccount, StoreOptions, ThrottlePolicy,
    ThrottleTarget,
};
use crate::error::{Error, Result};
use crate::password::{MIN_ITERATIONS, Pbkdf2Params};
use crate::xml::account::{AccountView, Field};
use crate::xml::sign_in::{
    HISTORY_KEPT, MAX_CERTIFICATES, SignInEvent, SignInMethod, SignInOutcome,
};

/// One fresh database of the backend under test.
pub(crate) trait TestDatabase {
    /// A store on this database; every call is another instance on the same data.
    fn open(&self, options: StoreOptions) -> AccountStore;
}

/// Store options with the cheapest hash, so that tests run fast.
pub(crate) fn fast() -> StoreOptions {
    StoreOptions {
        hash: Pbkdf2Params::new(MIN_ITERATIONS).unwrap(),
        ..StoreOptions::default()
    }
}

/// One `#[test]` per contract, each on a database from `$new_database` (an expression that
/// gives a fresh `impl TestDatabase` each time it is evaluated).
macro_rules! contract_tests {
    ($new_database:expr) => {
        $crate::db::contract::contract_tests!(
            @each $new_database;
            accounts_log_in_by_password,
            names_are_unique_in_any_letter_case,
            accounts_persist_across_stores,
            hashes_are_salted_and_upgraded_at_login,
            logins_are_recorded,
            versions_guard_updates,
            password_change_and_delete_need_the_password,
            ids_are_never_reused,
            failed_logins_are_throttled_per_account_and_address,
            a_burst_of_guesses_is_counted_before_hashing,
            a_check_the_server_was_too_busy_to_make_counts_nothing,
            successful_checks_are_limited_per_account_and_address,
            throttle_counts_are_shared_by_every_store,
            names_no_account_can_have_are_not_counted,
            concurrent_logins,
            concurrent_writers_of_one_name,
            guesses_elsewhere_do_not_lock_the_owner_out_where_he_logs_in,
            guesses_elsewhere_do_not_stop_passwd_where_he_logs_in,
            known_addresses_go_with_the_account,
            wrong_current_passwords_are_throttled,
            signups_are_limited_per_address,
            the_operator_locks_and_unlocks_accounts,
            a_password_reset_changes_the_credentials_generation,
            the_operator_lists_counts_unthrottles_and_deletes,
            stale_counts_go_a_few_at_a_time,
            enrolled_certificates_sign_in_and_others_do_not,
            certificate_failures_count_under_the_address_only,
            every_attempt_on_an_account_goes_into_its_history,
            the_history_keeps_the_newest_events
        );
    };
    (@each $new_database:expr; $($contract:ident),*) => {
        $(
            #[test]
            fn $contract() -> $crate::error::Result<()> {
                $crate::db::contract::$contract(&$new_database)
            }
        )*
    };
}
pub(crate) use contract_tests;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A session of account `id` at its first credentials' generation.
pub(crate) fn session(id: AccountId) -> SessionAccount {
    SessionAccount { id, generation: 0 }
}

/// The address the account's owner uses in tests that do not care about addresses.
fn here() -> IpAddr {
    ip("198.51.100.200")
}

/// The password hash stored for `username`, as the backend gives it.
fn stored_hash(store: &AccountStore, username: &str) -> Result<String> {
    Ok(store
        .backend
        .find_login(username)?
        .expect("the account exists")
        .hash)
}

pub(crate) fn accounts_log_in_by_password(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("aticle", b"123", &[])?;
    assert_eq!(s.authenticate("aticle", b"123")?, Some(id));
    assert_eq!(s.authenticate("aticle", b"124")?, None);
    assert_eq!(s.authenticate("nobody", b"123")?, None);
    assert_eq!(s.authenticate("ATICLE", b"123")?, Some(id));
    Ok(())
}

pub(crate) fn names_are_unique_in_any_letter_case(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    s.create_account("Alice", b"secret-1", &[])?;
    assert!(matches!(
        s.create_account("alice", b"secret-2", &[]),
        Err(Error::UserExists(_))
    ));
    assert_eq!(
        s.view(session(s.authenticate("ALICE", b"secret-1")?.unwrap()))?
            .username,
        "Alice"
    );
    Ok(())
}

pub(crate) fn accounts_persist_across_stores(db: &impl TestDatabase) -> Result<()> {
    let first = db.open(fast());
    first.create_account("bob", b"hunter22", &[])?;
    first.close();
    drop(first);
    assert!(db.open(fast()).authenticate("bob", b"hunter22")?.is_some());
    Ok(())
}

pub(crate) fn hashes_are_salted_and_upgraded_at_login(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    s.create_account("one", b"same-password", &[])?;
    s.create_account("two", b"same-password", &[])?;
    let (a, b) = (stored_hash(&s, "one")?, stored_hash(&s, "two")?);
    assert_ne!(a, b);
    assert!(!a.contains("same-password"));
    assert!(a.contains("$i=1000$"), "{a}");
    let stronger = db.open(StoreOptions {
        hash: Pbkdf2Params::new(2000)?,
        ..fast()
    });
    assert!(stronger.authenticate("one", b"same-password")?.is_some());
    let after = stored_hash(&s, "one")?;
    assert!(after.contains("$i=2000$"), "{after}");
    assert!(stronger.authenticate("one", b"same-password")?.is_some());
    Ok(())
}

pub(crate) fn logins_are_recorded(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("dave", b"pw-dave", &[])?;
    let before = s.view(session(id))?;
    assert_eq!(before.last_login_at, None);
    assert!(before.created_at.ends_with('Z'), "{}", before.created_at);
    s.authenticate("dave", b"pw-dave")?;
    let last = s.view(session(id))?.last_login_at;
    assert!(last.as_ref().is_some_and(|t| t.ends_with('Z')), "{last:?}");
    Ok(())
}

pub(crate) fn versions_guard_updates(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account(
        "erin",
        b"pw-erin-1",
        &[(Field::Email, "erin@example.org".into())],
    )?;
    let v1 = s.view(session(id))?;
    assert_eq!(v1.username, "erin");
    assert_eq!(v1.get(Field::Email), "erin@example.org");
    assert_eq!(v1.get(Field::Phone), "");
    assert_eq!(v1.version, 1);

    assert_eq!(
        s.update(session(id), &[(Field::Phone, "555 0100".into())], Some(1))?
            .version,
        2
    );
    // A second writer that saw version 1 loses; nothing it sent is stored.
    assert!(matches!(
        s.update(session(id), &[(Field::Phone, "999".into())], Some(1)),
        Err(Error::Conflict)
    ));
    let now = s.view(session(id))?;
    assert_eq!(now.get(Field::Phone), "555 0100");
    assert_eq!(now.get(Field::Email), "erin@example.org");
    assert_eq!(now.version, 2);
    // Without a version: last writer wins; an empty value clears.
    assert_eq!(
        s.update(session(id), &[(Field::Email, String::new())], None)?
            .version,
        3
    );
    assert_eq!(s.view(session(id))?.get(Field::Email), "");
    Ok(())
}

pub(crate) fn password_change_and_delete_need_the_password(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("frank", b"pw-frank-1", &[])?;
    assert!(matches!(
        s.change_password(session(id), b"wrong", b"pw-frank-2", here()),
        Err(Error::WrongPassword)
    ));
    let changed = s.change_password(session(id), b"pw-frank-1", b"pw-frank-2", here())?;
    assert_eq!(s.authenticate("frank", b"pw-frank-1")?, None);
    assert_eq!(s.authenticate("frank", b"pw-frank-2")?, Some(id));
    assert!(matches!(
        s.delete(changed, b"pw-frank-1", here()),
        Err(Error::WrongPassword)
    ));
    s.delete(changed, b"pw-frank-2", here())?;
    assert!(matches!(
        s.view(changed),
        Err(Error::SessionEnded("the account no longer exists"))
    ));
    assert_eq!(s.authenticate("frank", b"pw-frank-2")?, None);
    assert!(matches!(
        s.delete(session(id), b"pw-frank-2", here()),
        Err(Error::SessionEnded("the account no longer exists"))
    ));
    Ok(())
}

pub(crate) fn ids_are_never_reused(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let first = s.create_account("ivan", b"pw-ivan-1", &[])?;
    s.delete(session(first), b"pw-ivan-1", here())?;
    let second = s.create_account("judy", b"pw-judy-1", &[])?;
    assert_ne!(
        first, second,
        "a session bound to {first} would act on judy"
    );
    assert!(matches!(
        s.view(session(first)),
        Err(Error::SessionEnded("the account no longer exists"))
    ));
    Ok(())
}

pub(crate) fn failed_logins_are_throttled_per_account_and_address(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("gina", b"pw-gina-1", &[])?;
    let (attacker, owner) = (ip("192.0.2.7"), ip("198.51.100.1"));
    for _ in 0..4 {
        assert_eq!(s.login("gina", b"guess", attacker)?, LoginOutcome::Failed);
    }
    // The fifth failure starts a refusal period for the name, from any address, even
    // with the right password; an unknown name is treated the same way.
    assert_eq!(s.login("gina", b"guess", attacker)?, LoginOutcome::Failed);
    assert!(matches!(
        s.login("GINA", b"pw-gina-1", owner)?,
        LoginOutcome::Throttled(d, _) if d <= Duration::from_secs(1)
    ));
    for _ in 0..5 {
        s.login("nobody", b"guess", owner)?;
    }
    assert!(matches!(
        s.login("nobody", b"guess", owner)?,
        LoginOutcome::Throttled(..)
    ));
    // After the period the owner gets in. That gives the guesser no new guesses, and renews
    // no refusal: one guess once the refusal ends, as without the owner's login, and the
    // next is refused again (for longer). The owner's address is now known, where the
    // name's refusal does not apply.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        s.login("gina", b"pw-gina-1", owner)?,
        LoginOutcome::Success(id)
    );
    assert_eq!(s.login("gina", b"guess", attacker)?, LoginOutcome::Failed);
    assert!(matches!(
        s.login("gina", b"guess", attacker)?,
        LoginOutcome::Throttled(d, Limit::Failures) if d > Duration::from_secs(1)
    ));
    assert_eq!(
        s.login("gina", b"pw-gina-1", owner)?,
        LoginOutcome::Success(id)
    );
    Ok(())
}

pub(crate) fn a_burst_of_guesses_is_counted_before_hashing(db: &impl TestDatabase) -> Result<()> {
    let s = Arc::new(db.open(fast()));
    s.create_account("kate", b"pw-kate-1", &[])?;
    let from = ip("192.0.2.9");
    let outcomes: Vec<LoginOutcome> = (0..24)
        .map(|_| {
            let s = s.clone();
            thread::spawn(move || s.login("kate", b"guess", from).unwrap())
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

pub(crate) fn a_check_the_server_was_too_busy_to_make_counts_nothing(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = Arc::new(db.open(StoreOptions {
        hash_threads: 1,
        hash_wait: Duration::from_millis(20),
        ..fast()
    }));
    let id = s.create_account("hugo", b"pw-hugo-1", &[])?;
    // Every place in the gate is taken until released.
    let (held, release) = (mpsc::channel(), mpsc::channel::<()>());
    let holder = {
        let s = s.clone();
        thread::spawn(move || {
            s.gate.run(HashTurn::Check, "", || {
                held.0.send(()).unwrap();
                release.1.recv().ok();
            })
        })
    };
    held.1.recv().unwrap();
    let from = ip("192.0.2.60");
    for _ in 0..8 {
        assert!(matches!(s.login("hugo", b"guess", from), Err(Error::Busy)));
    }
    assert!(matches!(
        s.change_password(session(id), b"guess", b"pw-hugo-2", from),
        Err(Error::Busy)
    ));
    for n in 0..3 {
        assert!(matches!(
            s.signup(&format!("new{n}"), b"pw-new-01", &[], from),
            Err(Error::Busy)
        ));
    }
    release.0.send(()).unwrap();
    holder.join().unwrap().unwrap();
    assert_eq!(s.failure_counts()?, []);
    assert_eq!(
        s.login("hugo", b"pw-hugo-1", from)?,
        LoginOutcome::Success(id)
    );
    Ok(())
}

pub(crate) fn successful_checks_are_limited_per_account_and_address(
    db: &impl TestDatabase,
) -> Result<()> {
    let mut options = fast();
    options.throttle.successes_per_account = 3;
    options.throttle.successes_per_address = 4;
    let s = db.open(options);
    let ivy = s.create_account("ivy", b"pw-ivy-01", &[])?;
    let jon = s.create_account("jon", b"pw-jon-01", &[])?;
    let (home, away) = (ip("192.0.2.70"), ip("192.0.2.71"));
    // A failure does not use up any of the successes allowed.
    assert_eq!(s.login("ivy", b"guess", home)?, LoginOutcome::Failed);
    for from in [home, away, home] {
        assert_eq!(
            s.login("ivy", b"pw-ivy-01", from)?,
            LoginOutcome::Success(ivy)
        );
    }
    // Past the account's limit, a check is refused unmade, from anywhere, to the window's end.
    let window = 50..=60;
    assert!(matches!(
        s.login("IVY", b"pw-ivy-01", away)?,
        LoginOutcome::Throttled(d, Limit::Successes) if window.contains(&d.as_secs())
    ));
    assert!(matches!(
        s.change_password(session(ivy), b"pw-ivy-01", b"pw-ivy-02", away),
        Err(Error::Throttled(_, Limit::Successes))
    ));
    // Past the address's, a check of any account from there is refused.
    for _ in 0..2 {
        assert_eq!(
            s.login("jon", b"pw-jon-01", home)?,
            LoginOutcome::Success(jon)
        );
    }
    assert!(matches!(
        s.login("jon", b"pw-jon-01", home)?,
        LoginOutcome::Throttled(_, Limit::Successes)
    ));
    assert_eq!(
        s.login("jon", b"pw-jon-01", away)?,
        LoginOutcome::Success(jon)
    );
    Ok(())
}

pub(crate) fn throttle_counts_are_shared_by_every_store(db: &impl TestDatabase) -> Result<()> {
    let (one, two) = (db.open(fast()), db.open(fast()));
    one.create_account("lena", b"pw-lena-1", &[])?;
    let from = ip("192.0.2.11");
    for n in 0..5 {
        let store = if n % 2 == 0 { &one } else { &two };
        assert_eq!(store.login("lena", b"guess", from)?, LoginOutcome::Failed);
    }
    for store in [&one, &two] {
        assert!(matches!(
            store.login("lena", b"pw-lena-1", from)?,
            LoginOutcome::Throttled(..)
        ));
    }
    Ok(())
}

pub(crate) fn names_no_account_can_have_are_not_counted(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let junk = "x".repeat(60_000);
    assert_eq!(
        s.login(&junk, b"guess", ip("192.0.2.10"))?,
        LoginOutcome::Failed
    );
    let counts = s.failure_counts()?;
    let count = |key: &str| counts.iter().find(|(k, _)| k == key).map(|(_, c)| *c);
    let counts = [count(&format!("user:{junk}")), count("addr:192.0.2.10")];
    assert_eq!(counts[0], None);
    assert_eq!(counts[1].map(|c| c.failures), Some(1));
    Ok(())
}

pub(crate) fn concurrent_logins(db: &impl TestDatabase) -> Result<()> {
    let s = Arc::new(db.open(fast()));
    for i in 0..8 {
        s.create_account(&format!("user{i}"), format!("password-{i}").as_bytes(), &[])?;
    }
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let s = Arc::clone(&s);
            thread::spawn(move || -> Result<()> {
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

pub(crate) fn concurrent_writers_of_one_name(db: &impl TestDatabase) -> Result<()> {
    // Several instances sign up one name (in several letter cases) and update one account at
    // once: exactly one signup wins, and every update is counted once.
    let stores: Vec<Arc<AccountStore>> = (0..4).map(|_| Arc::new(db.open(fast()))).collect();
    let signups: Vec<_> = (0..8)
        .map(|n| {
            let s = Arc::clone(&stores[n % stores.len()]);
            let name = if n % 2 == 0 { "Mallory" } else { "mallory" };
            thread::spawn(move || s.create_account(name, b"pw-mallory", &[]))
        })
        .collect();
    let results: Vec<Result<i64>> = signups.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(Error::UserExists(_))))
    );
    let id = won[0];
    let updates: Vec<_> = (0..16)
        .map(|n| {
            let s = Arc::clone(&stores[n % stores.len()]);
            thread::spawn(move || {
                s.update(session(id), &[(Field::Phone, format!("555 {n:04}"))], None)
            })
        })
        .collect();
    for t in updates {
        t.join().unwrap()?;
    }
    assert_eq!(stores[0].view(session(id))?.version, 17);
    Ok(())
}

pub(crate) fn guesses_elsewhere_do_not_lock_the_owner_out_where_he_logs_in(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("olga", b"pw-olga-1", &[])?;
    let home = ip("198.51.100.7");
    assert_eq!(
        s.login("olga", b"pw-olga-1", home)?,
        LoginOutcome::Success(id)
    );
    // Guesses from ten addresses, two each: the name is refused everywhere else...
    for n in 1..=10 {
        let guesser = ip(&format!("203.0.113.{n}"));
        for _ in 0..2 {
            let outcome = s.login("olga", b"guess", guesser)?;
            assert_ne!(outcome, LoginOutcome::Success(id));
        }
    }
    assert!(matches!(
        s.login("olga", b"guess", ip("203.0.113.99"))?,
        LoginOutcome::Throttled(..)
    ));
    assert!(matches!(
        s.login("OLGA", b"pw-olga-1", ip("192.0.2.50"))?,
        LoginOutcome::Throttled(..)
    ));
    // ... but not at home, with the right password, in any letter case.
    assert_eq!(
        s.login("Olga", b"pw-olga-1", home)?,
        LoginOutcome::Success(id)
    );
    assert_eq!(
        s.login("olga", b"pw-olga-1", home)?,
        LoginOutcome::Success(id)
    );
    // At home, guessing is still limited by the name and address together.
    for _ in 0..5 {
        assert_eq!(s.login("olga", b"guess", home)?, LoginOutcome::Failed);
    }
    assert!(matches!(
        s.login("olga", b"pw-olga-1", home)?,
        LoginOutcome::Throttled(..)
    ));
    Ok(())
}

pub(crate) fn guesses_elsewhere_do_not_stop_passwd_where_he_logs_in(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("hugo", b"pw-hugo-1", &[])?;
    let home = ip("198.51.100.9");
    assert_eq!(
        s.login("hugo", b"pw-hugo-1", home)?,
        LoginOutcome::Success(id)
    );
    for n in 1..=6 {
        s.login("hugo", b"guess", ip(&format!("203.0.113.{n}")))?;
    }
    assert!(matches!(
        s.change_password(session(id), b"pw-hugo-1", b"pw-hugo-2", ip("192.0.2.99")),
        Err(Error::Throttled(..))
    ));
    let changed = s.change_password(session(id), b"pw-hugo-1", b"pw-hugo-2", home)?;
    s.delete(changed, b"pw-hugo-2", home)?;
    Ok(())
}

pub(crate) fn known_addresses_go_with_the_account(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let home = ip("198.51.100.8");
    let first = s.create_account("petra", b"pw-petra-1", &[])?;
    assert_eq!(
        s.login("petra", b"pw-petra-1", home)?,
        LoginOutcome::Success(first)
    );
    s.delete(session(first), b"pw-petra-1", home)?;
    let second = s.create_account("petra", b"pw-petra-2", &[])?;
    for n in 1..=5 {
        s.login("petra", b"guess", ip(&format!("203.0.113.{n}")))?;
    }
    // The new account has never logged in from there.
    assert!(matches!(
        s.login("petra", b"pw-petra-2", home)?,
        LoginOutcome::Throttled(..)
    ));
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        s.login("petra", b"pw-petra-2", home)?,
        LoginOutcome::Success(second)
    );
    Ok(())
}

pub(crate) fn wrong_current_passwords_are_throttled(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("quinn", b"pw-quinn-1", &[])?;
    let from = ip("192.0.2.60");
    for _ in 0..5 {
        assert!(matches!(
            s.change_password(session(id), b"guess", b"pw-quinn-2", from),
            Err(Error::WrongPassword)
        ));
    }
    assert!(matches!(
        s.change_password(session(id), b"pw-quinn-1", b"pw-quinn-2", from),
        Err(Error::Throttled(..))
    ));
    assert!(matches!(
        s.delete(session(id), b"pw-quinn-1", from),
        Err(Error::Throttled(..))
    ));
    // The same counts as logins: the name is refused there too.
    assert!(matches!(
        s.login("quinn", b"pw-quinn-1", from)?,
        LoginOutcome::Throttled(..)
    ));
    thread::sleep(Duration::from_millis(1100));
    s.change_password(session(id), b"pw-quinn-1", b"pw-quinn-2", from)?;
    assert_eq!(
        s.login("quinn", b"pw-quinn-2", from)?,
        LoginOutcome::Success(id)
    );
    Ok(())
}

pub(crate) fn signups_are_limited_per_address(db: &impl TestDatabase) -> Result<()> {
    let mut options = fast();
    options.throttle.signups_per_address = 3;
    let s = db.open(options);
    let (from, elsewhere) = (ip("192.0.2.70"), ip("192.0.2.71"));
    for n in 0..3 {
        s.signup(&format!("signer{n}"), b"pw-signer-1", &[], from)?;
    }
    assert!(matches!(
        s.signup("signer3", b"pw-signer-1", &[], from),
        Err(Error::Throttled(..))
    ));
    s.signup("signer4", b"pw-signer-1", &[], elsewhere)?;
    assert!(s.authenticate("signer3", b"pw-signer-1")?.is_none());
    Ok(())
}

pub(crate) fn the_operator_locks_and_unlocks_accounts(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("Lars", b"pw-lars-1", &[])?;
    let other = db.open(fast());
    let attacker = ip("192.0.2.44");
    other.set_locked("LARS", true)?;
    let locked_at = s.account_named("lars")?.locked_at.expect("locked");
    // Locking twice keeps the first time.
    s.set_locked("lars", true)?;
    assert_eq!(s.account_named("lars")?.locked_at, Some(locked_at));
    assert!(s.session_state(id)?.locked);
    // Only the right password learns of the lock; a wrong one fails as usual.
    assert_eq!(s.login("lars", b"pw-lars-1", here())?, LoginOutcome::Locked);
    assert_eq!(s.login("lars", b"guess", here())?, LoginOutcome::Failed);
    for _ in 0..3 {
        assert_eq!(s.login("lars", b"guess", attacker)?, LoginOutcome::Failed);
    }
    assert!(
        s.failure_counts()?
            .iter()
            .any(|(key, _)| key == "pair:lars@192.0.2.44")
    );
    // Unlocking clears the name's and its pairs' counts, not the addresses'.
    s.set_locked("lars", false)?;
    let keys: Vec<String> = s.failure_counts()?.into_iter().map(|(k, _)| k).collect();
    assert!(!keys.iter().any(|k| k.contains("lars")), "{keys:?}");
    assert!(keys.contains(&"addr:192.0.2.44".to_string()), "{keys:?}");
    assert_eq!(s.account_named("lars")?.locked_at, None);
    assert_eq!(
        s.login("lars", b"pw-lars-1", attacker)?,
        LoginOutcome::Success(id)
    );
    assert!(matches!(
        s.set_locked("nobody", true),
        Err(Error::NoSuchAccount)
    ));
    Ok(())
}

pub(crate) fn a_password_reset_changes_the_credentials_generation(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("mona", b"pw-mona-1", &[])?;
    let signed_in = s.sign_in("mona", b"pw-mona-1", here(), SignInMethod::Password)?;
    let generation = signed_in.generation;
    assert_eq!(signed_in.outcome, LoginOutcome::Success(id));
    assert_eq!(s.session_state(id)?.generation, generation);
    let before = SessionAccount { id, generation };
    db.open(fast()).reset_password("MONA", b"pw-mona-2")?;
    assert_eq!(s.session_state(id)?.generation, generation + 1);
    // A session from before the reset is refused by each of its commands' own statements.
    let reset = |r: Result<()>| {
        matches!(
            r,
            Err(Error::SessionEnded("the password was changed or reset"))
        )
    };
    assert!(reset(s.view(before).map(drop)));
    assert!(reset(
        s.update(before, &[(Field::Phone, "1".into())], None)
            .map(drop)
    ));
    assert!(reset(
        s.change_password(before, b"pw-mona-2", b"pw-mona-9", here())
            .map(drop)
    ));
    assert!(reset(s.delete(before, b"pw-mona-2", here())));
    assert_eq!(s.login("mona", b"pw-mona-1", here())?, LoginOutcome::Failed);
    let signed_in = s.sign_in("mona", b"pw-mona-2", here(), SignInMethod::Password)?;
    assert_eq!(signed_in.outcome, LoginOutcome::Success(id));
    assert_eq!(signed_in.generation, before.generation + 1);
    let other = SessionAccount {
        id,
        generation: signed_in.generation,
    };
    // The owner's own password change ends his other sessions; the one that made it goes on.
    let after = s.change_password(other, b"pw-mona-2", b"pw-mona-3", here())?;
    assert_eq!(after.generation, other.generation + 1);
    assert!(reset(s.view(other).map(drop)));
    assert_eq!(s.view(after)?.username, "mona");
    // A lock ends them, and so does the account's end.
    s.set_locked("mona", true)?;
    let locked = |r: Result<AccountView>| {
        matches!(
            r,
            Err(Error::SessionEnded(
                "the account was locked by the operator"
            ))
        )
    };
    assert!(locked(s.view(after)));
    assert!(locked(s.update(after, &[], None)));
    s.set_locked("mona", false)?;
    assert_eq!(s.update(after, &[], Some(1))?.version, 2);
    assert!(matches!(
        s.update(after, &[], Some(1)),
        Err(Error::Conflict)
    ));
    s.remove("mona")?;
    assert!(matches!(
        s.view(after),
        Err(Error::SessionEnded("the account no longer exists"))
    ));
    assert!(matches!(
        s.reset_password("nobody", b"pw-nobody-1"),
        Err(Error::NoSuchAccount)
    ));
    Ok(())
}

pub(crate) fn the_operator_lists_counts_unthrottles_and_deletes(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    assert_eq!(s.account_totals()?, Default::default());
    s.create_account("zed", b"pw-zed-01", &[])?;
    let nils = s.create_account("Nils", b"pw-nils-1", &[])?;
    s.create_account("olaf", b"pw-olaf-1", &[])?;
    let names: Vec<String> = s.accounts()?.into_iter().map(|a| a.username).collect();
    assert_eq!(names, ["Nils", "olaf", "zed"]);
    assert_eq!(
        s.login("nils", b"pw-nils-1", here())?,
        LoginOutcome::Success(nils)
    );
    s.set_locked("olaf", true)?;
    let totals = s.account_totals()?;
    assert_eq!(
        (totals.accounts, totals.locked, totals.logged_in_last_day),
        (3, 1, 1)
    );
    let (v4, v6) = (ip("192.0.2.50"), ip("2001:db8:1:2::7"));
    for from in [v4, v6] {
        s.login("olaf", b"guess", from)?;
    }
    assert_eq!(
        s.clear_failure_counts(&ThrottleTarget::Address(ip("2001:db8:1:2::99")))?,
        2,
        "addr and pair"
    );
    let keys: Vec<String> = s.failure_counts()?.into_iter().map(|(k, _)| k).collect();
    // A success takes its failure back (none are left at its address, nor under its name) and
    // stays counted as a success; a failure takes back its success.
    assert_eq!(
        keys,
        [
            "addr:192.0.2.50",
            "pair:olaf@192.0.2.50",
            "success-addr:198.51.100.200",
            "success:nils",
            "user:olaf"
        ]
    );
    assert_eq!(
        s.clear_failure_counts(&ThrottleTarget::User("OLAF".into()))?,
        2,
        "user and pair"
    );
    assert_eq!(s.clear_failure_counts(&ThrottleTarget::Address(v4))?, 1);
    assert_eq!(
        s.clear_failure_counts(&ThrottleTarget::Address(ip("198.51.100.200")))?,
        1
    );
    assert_eq!(
        s.clear_failure_counts(&ThrottleTarget::User("Nils".into()))?,
        1
    );
    assert!(s.failure_counts()?.is_empty());
    s.remove("NILS")?;
    assert!(matches!(
        s.view(session(nils)),
        Err(Error::SessionEnded("the account no longer exists"))
    ));
    assert!(matches!(s.remove("nils"), Err(Error::NoSuchAccount)));
    assert!(matches!(s.account_named("nils"), Err(Error::NoSuchAccount)));
    Ok(())
}

pub(crate) fn stale_counts_go_a_few_at_a_time(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(fast());
    let policy = ThrottlePolicy::default();
    let count_at = |from: IpAddr, now: f64| -> Result<()> {
        let keys = ThrottleKeys::signup(from, &policy);
        let attempt = Attempt {
            policy: &policy,
            keys: &keys,
            now,
        };
        assert_eq!(
            s.backend.count_attempt(&attempt, false)?,
            Counted::Counted(None)
        );
        Ok(())
    };
    let then = 1_800_000_000.0;
    for n in 0..100u8 {
        count_at(IpAddr::from([10, 0, 0, n]), then + f64::from(n))?;
    }
    // Each attempt after they went stale removes a batch, the oldest first.
    let later = then + policy.forget_after.as_secs_f64() + 1000.0;
    count_at(ip("192.0.2.80"), later)?;
    let keys: Vec<String> = s.failure_counts()?.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 100 + 1 - PRUNE_BATCH as usize, "{keys:?}");
    assert!(!keys.contains(&"signup:10.0.0.0".to_string()));
    assert!(keys.contains(&"signup:10.0.0.99".to_string()));
    for _ in 0..3 {
        count_at(ip("192.0.2.80"), later)?;
    }
    assert_eq!(s.failure_counts()?.len(), 1);
    Ok(())
}

/// A fingerprint, all of one hex digit.
fn fingerprint(digit: char) -> String {
    digit.to_string().repeat(64)
}

/// The outcome of a sign-in by the certificate of `fp` as `name` from `from`.
fn certificate_sign_in(s: &AccountStore, name: &str, fp: &str, from: IpAddr) -> LoginOutcome {
    s.sign_in_with_certificate(name, fp, from).unwrap().outcome
}

pub(crate) fn enrolled_certificates_sign_in_and_others_do_not(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("rita", b"pw-rita-1", &[])?;
    let (laptop, phone) = (fingerprint('a'), fingerprint('b'));
    assert_eq!(
        certificate_sign_in(&s, "rita", &laptop, here()),
        LoginOutcome::Failed
    );
    let certs = s.enroll(session(id), &laptop, "laptop")?;
    assert_eq!(certs.len(), 1);
    assert_eq!(
        (certs[0].fingerprint.as_str(), certs[0].label.as_str()),
        (laptop.as_str(), "laptop")
    );
    assert_eq!(certs[0].last_used_at, None);
    assert!(matches!(
        s.enroll(session(id), &laptop, "again"),
        Err(Error::CertificateEnrolled)
    ));
    // Another instance signs in with it, by the name in any letter case.
    let other = db.open(fast());
    let signed_in = other.sign_in_with_certificate("RITA", &laptop, ip("192.0.2.7"))?;
    assert_eq!(signed_in.outcome, LoginOutcome::Success(id));
    assert_eq!(signed_in.generation, 0);
    assert!(s.certificates(session(id))?[0].last_used_at.is_some());
    assert!(s.account_named("rita")?.last_login_at.is_some());
    assert_eq!(
        certificate_sign_in(&s, "rita", &phone, here()),
        LoginOutcome::Failed
    );
    assert_eq!(
        certificate_sign_in(&s, "nobody", &laptop, here()),
        LoginOutcome::Failed
    );
    assert!(s.unenroll(session(id), &laptop)?.is_empty());
    assert!(matches!(
        s.unenroll(session(id), &laptop),
        Err(Error::NoSuchCertificate)
    ));
    assert_eq!(
        certificate_sign_in(&s, "rita", &laptop, here()),
        LoginOutcome::Failed
    );
    // At most MAX_CERTIFICATES, in the order enrolled; the operator removes one.
    let many: Vec<String> = "0123456789cdef"
        .chars()
        .take(MAX_CERTIFICATES + 1)
        .map(fingerprint)
        .collect();
    for fp in &many[..MAX_CERTIFICATES] {
        s.enroll(session(id), fp, "")?;
    }
    assert!(matches!(
        s.enroll(session(id), &many[MAX_CERTIFICATES], ""),
        Err(Error::TooManyCertificates)
    ));
    s.operator_unenroll(id, &many[0])?;
    assert!(matches!(
        s.operator_unenroll(id, &many[0]),
        Err(Error::NoSuchCertificate)
    ));
    let (certs, _) = s.operator_sign_in_view(id, 5)?;
    assert_eq!(certs.len(), MAX_CERTIFICATES - 1);
    // A locked account's certificate is refused as locked, told only to its holder; an
    // ended session can no longer enroll or list.
    s.set_locked("rita", true)?;
    assert_eq!(
        certificate_sign_in(&s, "rita", &many[1], here()),
        LoginOutcome::Locked
    );
    assert!(matches!(
        s.certificates(session(id)),
        Err(Error::SessionEnded(_))
    ));
    assert!(matches!(
        s.enroll(session(id), &laptop, ""),
        Err(Error::SessionEnded(_))
    ));
    s.set_locked("rita", false)?;
    // The account's certificates go with it.
    s.remove("rita")?;
    assert!(!s.backend.certificate_enrolled(id, &many[1])?);
    assert!(matches!(
        s.operator_sign_in_view(id, 5),
        Err(Error::NoSuchAccount)
    ));
    Ok(())
}

pub(crate) fn certificate_failures_count_under_the_address_only(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    s.create_account("sven", b"pw-sven-1", &[])?;
    let prober = ip("203.0.113.30");
    let per_address = ThrottlePolicy::default().per_address;
    for _ in 0..per_address {
        assert_eq!(
            certificate_sign_in(&s, "sven", &fingerprint('c'), prober),
            LoginOutcome::Failed
        );
    }
    assert!(matches!(
        certificate_sign_in(&s, "sven", &fingerprint('c'), prober),
        LoginOutcome::Throttled(_, Limit::Failures)
    ));
    let keys: Vec<String> = s.failure_counts()?.into_iter().map(|(k, _)| k).collect();
    assert!(keys.iter().all(|k| !k.contains("sven")), "{keys:?}");
    // Not a guess of the password: the owner logs in from elsewhere at once.
    assert!(matches!(
        s.login("sven", b"pw-sven-1", here())?,
        LoginOutcome::Success(_)
    ));
    Ok(())
}

/// An account's history without the times, newest first.
fn events_of(s: &AccountStore, id: AccountId) -> Vec<(String, SignInMethod, SignInOutcome)> {
    let (_, history) = s.operator_sign_in_view(id, HISTORY_KEPT).unwrap();
    history
        .into_iter()
        .map(|e: SignInEvent| (e.address, e.method, e.outcome))
        .collect()
}

pub(crate) fn every_attempt_on_an_account_goes_into_its_history(
    db: &impl TestDatabase,
) -> Result<()> {
    let s = db.open(fast());
    let id = s.create_account("tess", b"pw-tess-1", &[])?;
    let (home, away) = (ip("192.0.2.40"), ip("2001:db8::40"));
    let first = s.sign_in("tess", b"pw-tess-1", home, SignInMethod::Password)?;
    assert_eq!(
        first.last.unwrap().to_string(),
        "Last sign-in: none on record; 0 failed attempts on record."
    );
    let wrong = s.sign_in("tess", b"guess-one", away, SignInMethod::Legacy)?;
    assert_eq!(wrong.outcome, LoginOutcome::Failed);
    assert_eq!(wrong.last, None);
    s.enroll(session(id), &fingerprint('d'), "")?;
    assert_eq!(
        certificate_sign_in(&s, "tess", &fingerprint('e'), away),
        LoginOutcome::Failed
    );
    let by_certificate = s.sign_in_with_certificate("tess", &fingerprint('d'), away)?;
    let last = by_certificate.last.unwrap();
    assert_eq!(last.failed_since, 2);
    let previous = last.previous.unwrap();
    assert_eq!(
        (previous.address.as_str(), previous.method, previous.outcome),
        (
            "192.0.2.40",
            SignInMethod::Password,
            SignInOutcome::SignedIn
        )
    );
    // The password confirmed by passwd or delete is no sign-in, and names without an account
    // have no history.
    assert!(s.delete(session(id), b"wrong-pw", home).is_err());
    s.login("nobody", b"guess-two", home)?;
    assert_eq!(
        events_of(&s, id),
        [
            (
                "2001:db8::40".to_string(),
                SignInMethod::Certificate,
                SignInOutcome::SignedIn
            ),
            (
                "2001:db8::40".to_string(),
                SignInMethod::Certificate,
                SignInOutcome::UnknownCertificate
            ),
            (
                "2001:db8::40".to_string(),
                SignInMethod::Legacy,
                SignInOutcome::WrongPassword
            ),
            (
                "192.0.2.40".to_string(),
                SignInMethod::Password,
                SignInOutcome::SignedIn
            ),
        ]
    );
    // Throttled attempts are recorded once a minute per address; a locked account's right
    // password as locked.
    let guesser = ip("203.0.113.41");
    while !matches!(
        s.login("tess", b"guess-more", guesser)?,
        LoginOutcome::Throttled(..)
    ) {}
    s.login("tess", b"guess-more", guesser)?;
    s.set_locked("tess", true)?;
    assert_eq!(s.login("tess", b"pw-tess-1", home)?, LoginOutcome::Locked);
    let events = events_of(&s, id);
    let count = |outcome| events.iter().filter(|(_, _, o)| *o == outcome).count();
    assert_eq!(count(SignInOutcome::Throttled), 1, "{events:?}");
    assert_eq!(count(SignInOutcome::Locked), 1, "{events:?}");
    assert_eq!(
        events[0],
        (
            "192.0.2.40".to_string(),
            SignInMethod::Password,
            SignInOutcome::Locked
        )
    );
    // The history goes with the account.
    s.set_locked("tess", false)?;
    s.remove("tess")?;
    assert!(
        s.backend
            .sign_ins(id, None, HISTORY_KEPT)?
            .is_none_or(|events| events.is_empty())
    );
    Ok(())
}

pub(crate) fn the_history_keeps_the_newest_events(db: &impl TestDatabase) -> Result<()> {
    let s = db.open(StoreOptions {
        throttle: ThrottlePolicy {
            successes_per_account: 1000,
            successes_per_address: 1000,
            ..ThrottlePolicy::default()
        },
        ..fast()
    });
    let id = s.create_account("ugo", b"pw-ugo-01", &[])?;
    s.enroll(session(id), &fingerprint('f'), "")?;
    let signed_in = 60;
    for n in 0..signed_in {
        let from = ip(&format!("198.51.100.{n}"));
        let outcome = certificate_sign_in(&s, "ugo", &fingerprint('f'), from);
        assert_eq!(outcome, LoginOutcome::Success(id));
    }
    let history = s.history(session(id))?;
    assert_eq!(history.len(), HISTORY_KEPT);
    assert_eq!(history[0].address, format!("198.51.100.{}", signed_in - 1));
    assert_eq!(
        history[HISTORY_KEPT - 1].address,
        format!("198.51.100.{}", signed_in - HISTORY_KEPT)
    );
    Ok(())
}
