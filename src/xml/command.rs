//! Commands of the account protocol. Each is a type with `parse` (server side, from the XML
//! tree, refusing unknown or repeated elements and attributes), `to_element` (client side) and
//! a handler in [`Command::apply`].
//!
//! A command is a document whose root element names it and whose children carry its values:
//! `<login><username>alice</username><password>...</password></login>`.

use std::net::IpAddr;

use xmltree::{Element, XMLNode};

use crate::account::{AccountView, Field, check_new_password, check_username};
use crate::db::{AccountId, AccountStore, LoginOutcome};
use crate::error::Error;
use crate::reply::{Greeting, Reply, ResultCode, child_elements, text, text_element};

/// The names of the commands, as `hello` lists them.
pub const COMMAND_NAMES: [&str; 8] = [
    "hello", "signup", "login", "view", "update", "passwd", "delete", "logout",
];

/// Elements whose text is a password, masked wherever documents are shown.
pub const SECRET_ELEMENTS: [&str; 2] = ["password", "new_password"];

/// One command of the account protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Asks for the server's version and commands.
    Hello,
    /// Creates an account.
    Signup(Signup),
    /// Binds the session to an account.
    Login(Login),
    /// Gives everything stored about the logged-in account but its password hash.
    View,
    /// Changes the logged-in account's information.
    Update(Update),
    /// Changes the logged-in account's password.
    Passwd(Passwd),
    /// Deletes the logged-in account and ends the session.
    Delete(Delete),
    /// Ends the session.
    Logout,
}

/// `signup`: a new account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signup {
    /// The user name wanted.
    pub username: String,
    /// The password.
    pub password: String,
    /// Information to store with it.
    pub info: Vec<(Field, String)>,
}

/// `login`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// `update`: new values for some fields (an empty value clears one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The new values.
    pub changes: Vec<(Field, String)>,
    /// The version the client last saw; the update is refused if the account moved on.
    pub version: Option<i64>,
}

/// `passwd`: a new password, confirmed by the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passwd {
    /// The current password.
    pub password: String,
    /// The new password.
    pub new_password: String,
}

/// `delete`: the account's end, confirmed by its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// The password.
    pub password: String,
}

/// The state of one session: where it comes from and which account, if any, it is logged in
/// as. It lives with the connection and nowhere else.
#[derive(Debug)]
pub struct Session {
    from: IpAddr,
    account: Option<(AccountId, String)>,
}

impl Session {
    /// A new session from `from`, not logged in.
    pub fn new(from: IpAddr) -> Session {
        Session {
            from,
            account: None,
        }
    }

    /// The name the session is logged in as.
    pub fn username(&self) -> Option<&str> {
        self.account.as_ref().map(|(_, name)| name.as_str())
    }
}

/// What handling a command gives: the reply, and whether the session ends with it.
pub struct Outcome {
    /// The reply to send.
    pub reply: Reply,
    /// Whether to close the connection after sending it.
    pub end_session: bool,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome {
            end_session: reply.code == ResultCode::EndingSession,
            reply,
        }
    }
}

fn policy(e: crate::account::PolicyError) -> Reply {
    Reply::new(ResultCode::ValuePolicy, e.0)
}

/// The values of a command element, checked against what the command takes.
struct Values {
    command: String,
    values: Vec<(String, String)>,
}

impl Values {
    /// Reads `el`'s children; refuses any element not in `allowed`, any repeated one, any
    /// attribute not in `attributes`, nested elements inside a value and stray text.
    fn read(el: &Element, allowed: &[&str], attributes: &[&str]) -> Result<Values, String> {
        let command = el.name.clone();
        if let Some(name) = el
            .attributes
            .keys()
            .filter(|a| !attributes.contains(&a.as_str()))
            .min()
        {
            return Err(format!("<{command}> has no attribute {name:?}"));
        }
        let mut values: Vec<(String, String)> = Vec::new();
        for node in &el.children {
            match node {
                XMLNode::Element(child) => {
                    let name = &child.name;
                    if !allowed.contains(&name.as_str()) {
                        return Err(format!("<{command}> has no element <{name}>"));
                    }
                    if values.iter().any(|(n, _)| n == name) {
                        return Err(format!("<{name}> given twice in <{command}>"));
                    }
                    if !child.attributes.is_empty() || child_elements(child).next().is_some() {
                        return Err(format!(
                            "<{name}> takes only text, no attributes or elements"
                        ));
                    }
                    values.push((name.clone(), text(child)));
                }
                XMLNode::Text(t) | XMLNode::CData(t) if !t.trim().is_empty() => {
                    return Err(format!("unexpected text in <{command}>"));
                }
                _ => {}
            }
        }
        Ok(Values { command, values })
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.values.iter().position(|(n, _)| n == name)?;
        Some(self.values.remove(at).1)
    }

    fn required(&mut self, name: &str) -> Result<String, String> {
        self.take(name)
            .ok_or_else(|| format!("<{}> needs <{name}>", self.command))
    }

    /// The remaining values, all account fields.
    fn fields(self) -> Vec<(Field, String)> {
        self.values
            .into_iter()
            .filter_map(|(name, value)| Field::from_name(&name).map(|f| (f, value)))
            .collect()
    }
}

fn field_names() -> Vec<&'static str> {
    Field::ALL.iter().map(|f| f.name()).collect()
}

impl Command {
    /// Reads a command from a document's root element. A refusal says what is wrong; its reply
    /// is a syntax error (2001).
    pub fn parse(root: &Element) -> Result<Command, String> {
        let no_values = |root: &Element| Values::read(root, &[], &[]).map(|_| ());
        match root.name.as_str() {
            "hello" => no_values(root).map(|()| Command::Hello),
            "view" => no_values(root).map(|()| Command::View),
            "logout" => no_values(root).map(|()| Command::Logout),
            "signup" => {
                let mut allowed = vec!["username", "password"];
                allowed.extend(field_names());
                let mut v = Values::read(root, &allowed, &[])?;
                Ok(Command::Signup(Signup {
                    username: v.required("username")?,
                    password: v.required("password")?,
                    info: v.fields(),
                }))
            }
            "login" => {
                let mut v = Values::read(root, &["username", "password"], &[])?;
                Ok(Command::Login(Login {
                    username: v.required("username")?,
                    password: v.required("password")?,
                }))
            }
            "update" => {
                let v = Values::read(root, &field_names(), &["version"])?;
                let version = match root.attributes.get("version") {
                    None => None,
                    Some(text) => {
                        Some(text.parse().ok().filter(|v: &i64| *v >= 1).ok_or_else(|| {
                            format!("<update version={text:?}>: not a version number")
                        })?)
                    }
                };
                let changes = v.fields();
                if changes.is_empty() {
                    return Err("<update> changes nothing: give at least one field".into());
                }
                Ok(Command::Update(Update { changes, version }))
            }
            "passwd" => {
                let mut v = Values::read(root, &["password", "new_password"], &[])?;
                Ok(Command::Passwd(Passwd {
                    password: v.required("password")?,
                    new_password: v.required("new_password")?,
                }))
            }
            "delete" => {
                let mut v = Values::read(root, &["password"], &[])?;
                Ok(Command::Delete(Delete {
                    password: v.required("password")?,
                }))
            }
            other => Err(format!(
                "unknown command <{other}>; the commands are {}",
                COMMAND_NAMES.join(", ")
            )),
        }
    }

    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Hello => "hello",
            Command::Signup(_) => "signup",
            Command::Login(_) => "login",
            Command::View => "view",
            Command::Update(_) => "update",
            Command::Passwd(_) => "passwd",
            Command::Delete(_) => "delete",
            Command::Logout => "logout",
        }
    }

    /// The command as an XML tree (the client side).
    pub fn to_element(&self) -> Element {
        let mut root = Element::new(self.name());
        let mut add = |name: &str, value: &str| {
            root.children
                .push(XMLNode::Element(text_element(name, value)));
        };
        match self {
            Command::Hello | Command::View | Command::Logout => {}
            Command::Signup(s) => {
                add("username", &s.username);
                add("password", &s.password);
                for (field, value) in &s.info {
                    add(field.name(), value);
                }
            }
            Command::Login(l) => {
                add("username", &l.username);
                add("password", &l.password);
            }
            Command::Update(u) => {
                for (field, value) in &u.changes {
                    add(field.name(), value);
                }
                if let Some(version) = u.version {
                    root.attributes
                        .insert("version".into(), version.to_string());
                }
            }
            Command::Passwd(p) => {
                add("password", &p.password);
                add("new_password", &p.new_password);
            }
            Command::Delete(d) => add("password", &d.password),
        }
        root
    }

    /// Handles the command for `session`, against `store`.
    pub fn apply(self, session: &mut Session, store: &AccountStore) -> Outcome {
        let logged_in = session.account.as_ref().map(|(id, _)| *id);
        match (self, logged_in) {
            (Command::Hello, _) => {
                let mut reply = Reply::new(ResultCode::Success, "hello");
                reply.greeting = Some(Greeting {
                    name: env!("CARGO_PKG_NAME").into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    commands: COMMAND_NAMES.map(String::from).to_vec(),
                });
                reply.into()
            }
            (Command::Logout, _) => {
                session.account = None;
                Reply::new(ResultCode::EndingSession, "logged out; ending session").into()
            }
            (Command::Signup(_) | Command::Login(_), Some(_)) => Reply::new(
                ResultCode::UseError,
                format!(
                    "already logged in as {}; log out and connect again to change accounts",
                    session.username().unwrap_or_default()
                ),
            )
            .into(),
            (Command::Signup(s), None) => signup(s, session, store).into(),
            (Command::Login(l), None) => login(l, session, store).into(),
            (
                Command::View | Command::Update(_) | Command::Passwd(_) | Command::Delete(_),
                None,
            ) => Reply::new(ResultCode::UseError, "not logged in; log in first").into(),
            (Command::View, Some(id)) => view_reply(store.view(id), "your account", session).into(),
            (Command::Update(u), Some(id)) => update(u, id, session, store).into(),
            (Command::Passwd(p), Some(id)) => {
                if let Err(e) = check_new_password("new_password", &p.new_password) {
                    return policy(e).into();
                }
                store
                    .change_password(id, p.password.as_bytes(), p.new_password.as_bytes())
                    .map_or_else(
                        |e| failure(e, session),
                        |()| Reply::new(ResultCode::Success, "password changed"),
                    )
                    .into()
            }
            (Command::Delete(d), Some(id)) => match store.delete(id, d.password.as_bytes()) {
                Ok(()) => {
                    session.account = None;
                    Reply::new(ResultCode::EndingSession, "account deleted; ending session").into()
                }
                Err(e) => failure(e, session).into(),
            },
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
    match store.create_account(&s.username, s.password.as_bytes(), &s.info) {
        Ok(_) => Reply::new(
            ResultCode::Success,
            format!("account {} created; log in to use it", s.username),
        ),
        Err(Error::UserExists(_)) => Reply::new(
            ResultCode::ObjectExists,
            format!("the user name {} is taken", s.username),
        ),
        Err(e) => failure(e, session),
    }
}

fn login(l: Login, session: &mut Session, store: &AccountStore) -> Reply {
    match store.login(&l.username, l.password.as_bytes(), session.from) {
        Ok(LoginOutcome::Success(id)) => {
            session.account = Some((id, l.username.clone()));
            Reply::new(ResultCode::Success, format!("logged in as {}", l.username))
        }
        // The same words whether the user exists or not.
        Ok(LoginOutcome::Failed) => Reply::new(
            ResultCode::AuthenticationError,
            "authentication failed: wrong user name or password",
        ),
        Ok(LoginOutcome::Throttled(wait)) => {
            retry_later("too many failed logins", wait.as_secs_f64().ceil() as u64)
        }
        Err(e) => failure(e, session),
    }
}

fn update(u: Update, id: AccountId, session: &mut Session, store: &AccountStore) -> Reply {
    if let Err(e) = u.changes.iter().try_for_each(|(f, v)| f.check(v)) {
        return policy(e);
    }
    match store.update(id, &u.changes, u.version) {
        Ok(_) => view_reply(store.view(id), "updated", session),
        Err(e) => failure(e, session),
    }
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

/// The reply for a store error. An account that vanished (deleted by another session) also
/// logs this session out.
fn failure(e: Error, session: &mut Session) -> Reply {
    match e {
        Error::NoSuchAccount => {
            session.account = None;
            Reply::new(
                ResultCode::ObjectDoesNotExist,
                "the account no longer exists; logged out",
            )
        }
        Error::WrongPassword => Reply::new(
            ResultCode::AuthenticationError,
            "authentication failed: wrong password",
        ),
        Error::Busy => retry_later("the server is busy", 1),
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

/// A copy of a document with every password replaced by `***`, for showing it.
pub fn mask_secrets(root: &Element) -> Element {
    let mut masked = root.clone();
    for node in &mut masked.children {
        if let XMLNode::Element(child) = node
            && SECRET_ELEMENTS.contains(&child.name.as_str())
        {
            child.children = vec![XMLNode::Text("***".into())];
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::{MIN_ITERATIONS, Pbkdf2Params};
    use crate::xml::parse_document;

    fn parse(text: &str) -> Result<Command, String> {
        Command::parse(&parse_document(text.as_bytes()).unwrap())
    }

    fn refused(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn every_command_round_trips() {
        let commands = [
            Command::Hello,
            Command::Signup(Signup {
                username: "alice".into(),
                password: "pass word<&>".into(),
                info: vec![(Field::Email, "a@example.org".into())],
            }),
            Command::Login(Login {
                username: "alice".into(),
                password: "secret-pw".into(),
            }),
            Command::View,
            Command::Update(Update {
                changes: vec![
                    (Field::Address, "1 Road\nTown".into()),
                    (Field::Phone, String::new()),
                ],
                version: Some(4),
            }),
            Command::Passwd(Passwd {
                password: "old-secret".into(),
                new_password: "new-secret".into(),
            }),
            Command::Delete(Delete {
                password: "secret-pw".into(),
            }),
            Command::Logout,
        ];
        for command in commands {
            let bytes = crate::xml::write_document(&command.to_element());
            assert_eq!(
                Command::parse(&parse_document(&bytes).unwrap()).unwrap(),
                command
            );
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (doc, words) in [
            ("<dance/>", "unknown command <dance>"),
            ("<view><x/></view>", "<view> has no element <x>"),
            (
                "<login><username>a</username></login>",
                "<login> needs <password>",
            ),
            (
                "<login><username>a</username><username>b</username><password>p</password></login>",
                "given twice",
            ),
            ("<login foo=\"1\"/>", "no attribute"),
            ("<update/>", "changes nothing"),
            ("<update version=\"x\"><email/></update>", "not a version"),
            ("<update version=\"0\"><email/></update>", "not a version"),
            (
                "<update b=\"1\" a=\"2\"><email/></update>",
                "no attribute \"a\"",
            ),
            (
                "<update><password>p</password></update>",
                "no element <password>",
            ),
            (
                "<delete>stray<password>p</password></delete>",
                "unexpected text",
            ),
            (
                "<delete><password><b/></password></delete>",
                "takes only text",
            ),
        ] {
            let message = refused(doc);
            assert!(message.contains(words), "{doc}: {message}");
        }
    }

    #[test]
    fn secrets_are_masked() {
        let doc = Command::Passwd(Passwd {
            password: "old-secret".into(),
            new_password: "new-secret".into(),
        })
        .to_element();
        let shown = String::from_utf8(crate::xml::write_document(&mask_secrets(&doc))).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<password>***</password>"));
    }

    #[test]
    fn handlers_follow_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::db::StoreOptions {
            hash: Pbkdf2Params::new(MIN_ITERATIONS).unwrap(),
            ..Default::default()
        };
        let store = AccountStore::open(&dir.path().join("users.db"), options).unwrap();
        let mut session = Session::new(IpAddr::from([127, 0, 0, 1]));
        let run = |command: Command, session: &mut Session| command.apply(session, &store);
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
