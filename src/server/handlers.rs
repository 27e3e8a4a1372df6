//! The server's handler of each command of the account protocol, over the state of the
//! session it came in ([`Session`]).

use super::session::Session;
use crate::db::{AccountStore, Limit, LoginOutcome, SessionAccount, SignIn};
use crate::error::Error;
use crate::xml::account::{AccountView, PolicyError, check_new_password, check_username};
use crate::xml::command::{
    CertLogin, Command, CommandKind, Enroll, Login, Signup, Unenroll, Update,
};
use crate::xml::reply::{Greeting, Reply, ResultCode};
use crate::xml::sign_in::{CertificateView, MAX_CERTIFICATES, check_label, parse_fingerprint};

/// What handling a command gives: the reply, and whether the session ends with it.
pub(super) struct Outcome {
    /// The reply to send.
    pub(super) reply: Reply,
    /// Whether to close the connection after sending it.
    pub(super) end_session: bool,
    /// The command handled, if the document was one.
    pub(super) command: Option<CommandKind>,
    /// Whether a login was refused without checking: too many failures.
    pub(super) login_throttled: bool,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome {
            end_session: reply.code == ResultCode::EndingSession,
            reply,
            command: None,
            login_throttled: false,
        }
    }
}

fn policy(e: PolicyError) -> Reply {
    Reply::new(ResultCode::ValuePolicy, e.0)
}

/// Handles `command` for `session`, against `store`.
pub(super) fn handle(command: Command, session: &mut Session, store: &AccountStore) -> Outcome {
    let kind = command.kind();
    Outcome {
        command: Some(kind),
        ..dispatch(command, session, store)
    }
}

/// The handler of each command, by the session's state.
fn dispatch(command: Command, session: &mut Session, store: &AccountStore) -> Outcome {
    let logged_in = session.account.as_ref().map(|(account, _)| *account);
    match (command, logged_in) {
        (Command::Hello, _) => {
            let mut reply = Reply::new(ResultCode::Success, "hello");
            reply.greeting = Some(Greeting {
                name: env!("CARGO_PKG_NAME").into(),
                version: env!("CARGO_PKG_VERSION").into(),
                commands: CommandKind::ALL.map(|c| c.name().to_string()).to_vec(),
            });
            reply.into()
        }
        (Command::Logout, _) => {
            session.account = None;
            Reply::new(ResultCode::EndingSession, "logged out; ending session").into()
        }
        (Command::Signup(_) | Command::Login(_) | Command::CertLogin(_), Some(_)) => Reply::new(
            ResultCode::UseError,
            format!(
                "already logged in as {}; log out and connect again to change accounts",
                session.username().unwrap_or_default()
            ),
        )
        .into(),
        (Command::Signup(s), None) => signup(s, session, store).into(),
        (Command::Login(l), None) => login(l, session, store),
        (Command::CertLogin(c), None) => certificate_login(c, session, store),
        (
            Command::View
            | Command::Update(_)
            | Command::Passwd(_)
            | Command::Delete(_)
            | Command::Enroll(_)
            | Command::Certs
            | Command::Unenroll(_)
            | Command::History,
            None,
        ) => Reply::new(ResultCode::UseError, "not logged in; log in first").into(),
        (Command::Enroll(e), Some(account)) => enroll(e, account, session, store).into(),
        (Command::Certs, Some(account)) => {
            certificates_reply(store.certificates(account), "your certificates", session).into()
        }
        (Command::Unenroll(u), Some(account)) => unenroll(u, account, session, store).into(),
        (Command::History, Some(account)) => match store.history(account) {
            Ok(events) => {
                let mut reply = Reply::new(ResultCode::Success, "your sign-in history");
                reply.history = Some(events);
                reply
            }
            Err(e) => failure(e, session),
        }
        .into(),
        (Command::View, Some(account)) => {
            view_reply(store.view(account), "your account", session).into()
        }
        (Command::Update(u), Some(account)) => update(u, account, session, store).into(),
        (Command::Passwd(p), Some(account)) => {
            if let Err(e) = check_new_password("new_password", &p.new_password) {
                return policy(e).into();
            }
            match store.change_password(
                account,
                p.password.as_bytes(),
                p.new_password.as_bytes(),
                session.client.ip(),
            ) {
                Ok(account) => {
                    if let Some((current, _)) = &mut session.account {
                        *current = account;
                    }
                    Reply::new(
                        ResultCode::Success,
                        "password changed; your other sessions are ended",
                    )
                }
                Err(e) => failure(e, session),
            }
            .into()
        }
        (Command::Delete(d), Some(account)) => {
            match store.delete(account, d.password.as_bytes(), session.client.ip()) {
                Ok(()) => {
                    session.account = None;
                    Reply::new(ResultCode::EndingSession, "account deleted; ending session").into()
                }
                Err(e) => failure(e, session).into(),
            }
        }
    }
}

fn signup(s: Signup, session: &mut Session, store: &AccountStore) -> Reply {
    if let Err(e) = check_username(&s.username)
        .and_then(|()| check_new_password("password", &s.password))
        .and_then(|()| s.info.iter().try_for_each(|(f, v)| f.check(v)))
    {
        return policy(e);
    }
    match store.signup(
        &s.username,
        s.password.as_bytes(),
        &s.info,
        session.client.ip(),
    ) {
        Ok(_) => Reply::new(
            ResultCode::Success,
            format!("account {} created; log in to use it", s.username),
        ),
        Err(Error::Throttled(wait, _)) => {
            retry_later("too many signups from your address", seconds(wait))
        }
        Err(Error::UserExists(_)) => Reply::new(
            ResultCode::ObjectExists,
            format!("the user name {} is taken", s.username),
        ),
        Err(e) => failure(e, session),
    }
}

fn login(l: Login, session: &mut Session, store: &AccountStore) -> Outcome {
    let signed_in = store.sign_in(
        &l.username,
        l.password.as_bytes(),
        session.client.ip(),
        crate::xml::sign_in::SignInMethod::Password,
    );
    signed_in_reply(
        signed_in,
        &l.username,
        "wrong user name or password",
        session,
    )
}

fn certificate_login(c: CertLogin, session: &mut Session, store: &AccountStore) -> Outcome {
    let Some(fingerprint) = session.certificate.clone() else {
        return no_certificate().into();
    };
    let signed_in = store.sign_in_with_certificate(&c.username, &fingerprint, session.client.ip());
    signed_in_reply(
        signed_in,
        &c.username,
        "the certificate is not enrolled for that user name",
        session,
    )
}

/// The reply to a sign-in (`login`, `certlogin`) as `username` that came to `signed_in`; a
/// failure says `failed` (the same words whether the user exists or not).
fn signed_in_reply(
    signed_in: crate::Result<SignIn>,
    username: &str,
    failed: &str,
    session: &mut Session,
) -> Outcome {
    match signed_in.map(|s| (s.outcome, s.generation, s.last)) {
        Ok((LoginOutcome::Success(id), generation, last)) => {
            session.account = Some((SessionAccount { id, generation }, username.to_string()));
            let mut reply = Reply::new(ResultCode::Success, format!("logged in as {username}"));
            reply.last_sign_in = last;
            reply
        }
        // Told only to whoever gave the right credentials.
        Ok((LoginOutcome::Locked, ..)) => Reply::new(
            ResultCode::AuthenticationError,
            "the account is locked; ask the operator",
        ),
        Ok((LoginOutcome::Failed, ..)) => Reply::new(
            ResultCode::AuthenticationError,
            format!("authentication failed: {failed}"),
        ),
        Ok((LoginOutcome::Throttled(wait, limit), ..)) => {
            let why = match limit {
                Limit::Failures => "too many failed logins",
                Limit::Successes => "too many logins",
                Limit::AtOnce => "too many logins at once",
            };
            return Outcome {
                login_throttled: true,
                ..retry_later(why, seconds(wait)).into()
            };
        }
        Err(e) => failure(e, session),
    }
    .into()
}

/// The refusal of a command that needs the connection's client certificate, when it
/// presented none.
fn no_certificate() -> Reply {
    Reply::new(
        ResultCode::UseError,
        "this connection presented no client certificate; connect with --cert FILE",
    )
}

fn enroll(
    e: Enroll,
    account: SessionAccount,
    session: &mut Session,
    store: &AccountStore,
) -> Reply {
    let Some(fingerprint) = session.certificate.clone() else {
        return no_certificate();
    };
    if let Err(e) = check_label(&e.label) {
        return policy(e);
    }
    certificates_reply(
        store.enroll(account, &fingerprint, &e.label),
        &format!("certificate {fingerprint} enrolled; sign in with it as --cert-login"),
        session,
    )
}

fn unenroll(
    u: Unenroll,
    account: SessionAccount,
    session: &mut Session,
    store: &AccountStore,
) -> Reply {
    let fingerprint = match parse_fingerprint(&u.fingerprint) {
        Ok(fingerprint) => fingerprint,
        Err(e) => return policy(e),
    };
    certificates_reply(
        store.unenroll(account, &fingerprint),
        &format!("certificate {fingerprint} removed"),
        session,
    )
}

fn certificates_reply(
    certificates: crate::Result<Vec<CertificateView>>,
    message: &str,
    session: &mut Session,
) -> Reply {
    match certificates {
        Ok(certificates) => {
            let mut reply = Reply::new(ResultCode::Success, message);
            reply.certificates = Some(certificates);
            reply
        }
        Err(e) => failure(e, session),
    }
}

fn update(
    u: Update,
    account: SessionAccount,
    session: &mut Session,
    store: &AccountStore,
) -> Reply {
    if let Err(e) = u.changes.iter().try_for_each(|(f, v)| f.check(v)) {
        return policy(e);
    }
    view_reply(
        store.update(account, &u.changes, u.version),
        "updated",
        session,
    )
}

fn view_reply(view: crate::Result<AccountView>, message: &str, session: &mut Session) -> Reply {
    match view {
        Ok(account) => {
            let mut reply = Reply::new(ResultCode::Success, message);
            reply.account = Some(account);
            reply
        }
        Err(e) => failure(e, session),
    }
}

/// The reply for a store error. A session whose account is gone, or was locked or had its
/// password reset by the operator, is logged out and ends.
fn failure(e: Error, session: &mut Session) -> Reply {
    match e {
        Error::SessionEnded(why) => {
            session.account = None;
            Reply::new(
                ResultCode::EndingSession,
                format!("logged out: {why}; ending session"),
            )
        }
        Error::NoSuchAccount => {
            session.account = None;
            Reply::new(
                ResultCode::ObjectDoesNotExist,
                "the account no longer exists; logged out",
            )
        }
        Error::CertificateEnrolled => Reply::new(
            ResultCode::ObjectExists,
            "this certificate is enrolled for your account already",
        ),
        Error::NoSuchCertificate => Reply::new(
            ResultCode::ObjectDoesNotExist,
            "no certificate with that fingerprint is enrolled for your account",
        ),
        Error::TooManyCertificates => Reply::new(
            ResultCode::ValuePolicy,
            format!(
                "an account may have at most {MAX_CERTIFICATES} certificates enrolled; \
                 unenroll one first"
            ),
        ),
        Error::WrongPassword => Reply::new(
            ResultCode::AuthenticationError,
            "authentication failed: wrong password",
        ),
        Error::Busy => retry_later("the server is busy", 1),
        Error::Throttled(wait, limit) => {
            let why = match limit {
                Limit::Failures => "too many wrong passwords",
                Limit::Successes => "too many password checks",
                Limit::AtOnce => "too many password checks at once",
            };
            retry_later(why, seconds(wait))
        }
        Error::Conflict => Reply::new(
            ResultCode::Conflict,
            "the account changed since you last saw it; view it and try again",
        ),
        e => {
            log::error!("command failed: {e}");
            Reply::new(ResultCode::CommandFailed, "the server could not do that")
        }
    }
}

/// A wait in whole seconds, rounded up.
fn seconds(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil() as u64
}

/// A 2502 reply that says when to try again.
fn retry_later(why: &str, secs: u64) -> Reply {
    let unit = if secs == 1 { "second" } else { "seconds" };
    let mut reply = Reply::new(
        ResultCode::LimitExceeded,
        format!("{why}; retry after {secs} {unit}"),
    );
    reply.retry_after = Some(secs);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::ClientAddress;
    use crate::db::StoreLocation;
    use crate::password::{MIN_ITERATIONS, Pbkdf2Params};
    use crate::xml::account::Field;
    use crate::xml::command::{Delete, Update};

    #[test]
    fn handlers_follow_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::db::StoreOptions {
            hash: Pbkdf2Params::new(MIN_ITERATIONS).unwrap(),
            ..Default::default()
        };
        let location = StoreLocation::Sqlite(dir.path().join("users.db"));
        let store = AccountStore::open(&location, options).unwrap();
        let mut session =
            Session::new(ClientAddress::new("127.0.0.1:40000".parse().unwrap()), None);
        let run = |command: Command, session: &mut Session| handle(command, session, &store);
        let code = |o: Outcome| o.reply.code;

        assert_eq!(code(run(Command::View, &mut session)), ResultCode::UseError);
        let signup = Command::Signup(Signup {
            username: "alice".into(),
            password: "long-enough".into(),
            info: vec![],
        });
        assert_eq!(code(run(signup.clone(), &mut session)), ResultCode::Success);
        assert_eq!(code(run(signup, &mut session)), ResultCode::ObjectExists);
        let short = Command::Signup(Signup {
            username: "bob".into(),
            password: "short".into(),
            info: vec![],
        });
        assert_eq!(code(run(short, &mut session)), ResultCode::ValuePolicy);

        let login = |password: &str| {
            Command::Login(Login {
                username: "ALICE".into(),
                password: password.into(),
            })
        };
        let wrong = run(login("wrong-one"), &mut session).reply;
        let nobody = run(
            Command::Login(Login {
                username: "nobody".into(),
                password: "wrong-one".into(),
            }),
            &mut session,
        )
        .reply;
        assert_eq!(
            wrong, nobody,
            "a failed login must not tell whether the user exists"
        );
        assert_eq!(wrong.code, ResultCode::AuthenticationError);
        assert_eq!(
            code(run(login("long-enough"), &mut session)),
            ResultCode::Success
        );
        assert_eq!(
            code(run(login("long-enough"), &mut session)),
            ResultCode::UseError
        );

        let view = run(Command::View, &mut session).reply;
        let account = view.account.unwrap();
        assert_eq!(account.username, "alice");
        assert!(account.last_login_at.is_some());

        let update = |version| {
            Command::Update(Update {
                changes: vec![(Field::Email, "alice@example.org".into())],
                version: Some(version),
            })
        };
        let updated = run(update(account.version), &mut session).reply;
        assert_eq!(updated.code, ResultCode::Success);
        assert_eq!(updated.account.unwrap().version, account.version + 1);
        assert_eq!(
            code(run(update(account.version), &mut session)),
            ResultCode::Conflict
        );
        let bad_email = Command::Update(Update {
            changes: vec![(Field::Email, "nope".into())],
            version: None,
        });
        assert_eq!(code(run(bad_email, &mut session)), ResultCode::ValuePolicy);

        let delete = |password: &str| {
            Command::Delete(Delete {
                password: password.into(),
            })
        };
        assert_eq!(
            code(run(delete("wrong-one"), &mut session)),
            ResultCode::AuthenticationError
        );
        let deleted = run(delete("long-enough"), &mut session);
        assert_eq!(deleted.reply.code, ResultCode::EndingSession);
        assert!(deleted.end_session);
        assert_eq!(session.username(), None);
    }
}
