//! Commands of the account protocol. Each is a type with `parse` (server side, from the XML
//! tree, refusing unknown or repeated elements and attributes) and `to_element` (client side);
//! the server's handlers are in `server::handlers`.
//!
//! A command is a document whose root element names it and whose children carry its values:
//! `<login><username>alice</username><password>...</password></login>`.

use std::fmt;

use xmltree::{Element, XMLNode};

use super::account::Field;
use super::document::{child_elements, text, text_element};

/// The most commands one session may send; the next is answered with 2502 and the session
/// ends.
pub const MAX_COMMANDS_PER_SESSION: usize = 10_000;

/// The commands by name: the one list of them, in the order `hello` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// `hello`: the server's version and commands.
    Hello,
    /// `signup`: create an account.
    Signup,
    /// `login`: bind the session to an account.
    Login,
    /// `view`: everything stored about the account.
    View,
    /// `update`: change the account's information.
    Update,
    /// `passwd`: change the password.
    Passwd,
    /// `delete`: delete the account.
    Delete,
    /// `logout`: end the session.
    Logout,
    /// `certlogin`: bind the session to an account by the connection's client certificate.
    CertLogin,
    /// `enroll`: enroll the connection's client certificate for the account.
    Enroll,
    /// `certs`: the account's enrolled certificates.
    Certs,
    /// `unenroll`: remove one of them.
    Unenroll,
    /// `history`: the account's recent sign-in attempts.
    History,
}

impl CommandKind {
    /// Every command, in the order `hello` lists them.
    pub const ALL: [CommandKind; 13] = [
        CommandKind::Hello,
        CommandKind::Signup,
        CommandKind::Login,
        CommandKind::View,
        CommandKind::Update,
        CommandKind::Passwd,
        CommandKind::Delete,
        CommandKind::Logout,
        CommandKind::CertLogin,
        CommandKind::Enroll,
        CommandKind::Certs,
        CommandKind::Unenroll,
        CommandKind::History,
    ];

    /// The command's name: its document's root element.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Hello => "hello",
            CommandKind::Signup => "signup",
            CommandKind::Login => "login",
            CommandKind::View => "view",
            CommandKind::Update => "update",
            CommandKind::Passwd => "passwd",
            CommandKind::Delete => "delete",
            CommandKind::Logout => "logout",
            CommandKind::CertLogin => "certlogin",
            CommandKind::Enroll => "enroll",
            CommandKind::Certs => "certs",
            CommandKind::Unenroll => "unenroll",
            CommandKind::History => "history",
        }
    }

    /// The command called `name`.
    pub fn from_name(name: &str) -> Option<CommandKind> {
        CommandKind::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The names of `kinds`, joined by `, ` (for messages that list them).
    pub fn list(kinds: &[CommandKind]) -> String {
        kinds
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// Binds the session to an account by the connection's client certificate.
    CertLogin(CertLogin),
    /// Enrolls the connection's client certificate for the logged-in account.
    Enroll(Enroll),
    /// Gives the logged-in account's enrolled certificates.
    Certs,
    /// Removes one of the logged-in account's enrolled certificates.
    Unenroll(Unenroll),
    /// Gives the logged-in account's recent sign-in attempts, newest first.
    History,
}

/// `certlogin`: the account whose enrolled certificate the connection presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertLogin {
    /// The user name.
    pub username: String,
}

/// `enroll`: the connection's certificate, with a label to tell it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enroll {
    /// The label (may be empty).
    pub label: String,
}

/// `unenroll`: which certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unenroll {
    /// Its fingerprint, as typed (the handler reads it with `sign_in::parse_fingerprint`).
    pub fingerprint: String,
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
        let Some(kind) = CommandKind::from_name(&root.name) else {
            return Err(format!(
                "unknown command <{}>; the commands are {}",
                root.name,
                CommandKind::list(&CommandKind::ALL)
            ));
        };
        let no_values = |root: &Element| Values::read(root, &[], &[]).map(|_| ());
        match kind {
            CommandKind::Hello => no_values(root).map(|()| Command::Hello),
            CommandKind::View => no_values(root).map(|()| Command::View),
            CommandKind::Logout => no_values(root).map(|()| Command::Logout),
            CommandKind::Certs => no_values(root).map(|()| Command::Certs),
            CommandKind::History => no_values(root).map(|()| Command::History),
            CommandKind::CertLogin => {
                let mut v = Values::read(root, &["username"], &[])?;
                Ok(Command::CertLogin(CertLogin {
                    username: v.required("username")?,
                }))
            }
            CommandKind::Enroll => {
                let mut v = Values::read(root, &["label"], &[])?;
                Ok(Command::Enroll(Enroll {
                    label: v.take("label").unwrap_or_default(),
                }))
            }
            CommandKind::Unenroll => {
                let mut v = Values::read(root, &["fingerprint"], &[])?;
                Ok(Command::Unenroll(Unenroll {
                    fingerprint: v.required("fingerprint")?,
                }))
            }
            CommandKind::Signup => {
                let mut allowed = vec!["username", "password"];
                allowed.extend(field_names());
                let mut v = Values::read(root, &allowed, &[])?;
                Ok(Command::Signup(Signup {
                    username: v.required("username")?,
                    password: v.required("password")?,
                    info: v.fields(),
                }))
            }
            CommandKind::Login => {
                let mut v = Values::read(root, &["username", "password"], &[])?;
                Ok(Command::Login(Login {
                    username: v.required("username")?,
                    password: v.required("password")?,
                }))
            }
            CommandKind::Update => {
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
            CommandKind::Passwd => {
                let mut v = Values::read(root, &["password", "new_password"], &[])?;
                Ok(Command::Passwd(Passwd {
                    password: v.required("password")?,
                    new_password: v.required("new_password")?,
                }))
            }
            CommandKind::Delete => {
                let mut v = Values::read(root, &["password"], &[])?;
                Ok(Command::Delete(Delete {
                    password: v.required("password")?,
                }))
            }
        }
    }

    /// Which command this is.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Hello => CommandKind::Hello,
            Command::Signup(_) => CommandKind::Signup,
            Command::Login(_) => CommandKind::Login,
            Command::View => CommandKind::View,
            Command::Update(_) => CommandKind::Update,
            Command::Passwd(_) => CommandKind::Passwd,
            Command::Delete(_) => CommandKind::Delete,
            Command::Logout => CommandKind::Logout,
            Command::CertLogin(_) => CommandKind::CertLogin,
            Command::Enroll(_) => CommandKind::Enroll,
            Command::Certs => CommandKind::Certs,
            Command::Unenroll(_) => CommandKind::Unenroll,
            Command::History => CommandKind::History,
        }
    }

    /// The command as an XML tree (the client side).
    pub fn to_element(&self) -> Element {
        let mut root = Element::new(self.kind().name());
        let mut add = |name: &str, value: &str| {
            root.children
                .push(XMLNode::Element(text_element(name, value)));
        };
        match self {
            Command::Hello
            | Command::View
            | Command::Logout
            | Command::Certs
            | Command::History => {}
            Command::CertLogin(c) => add("username", &c.username),
            Command::Enroll(e) => {
                if !e.label.is_empty() {
                    add("label", &e.label);
                }
            }
            Command::Unenroll(u) => add("fingerprint", &u.fingerprint),
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
    use crate::xml::document::{parse_document, write_document};

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
            Command::CertLogin(CertLogin {
                username: "alice".into(),
            }),
            Command::Enroll(Enroll {
                label: "laptop".into(),
            }),
            Command::Enroll(Enroll {
                label: String::new(),
            }),
            Command::Certs,
            Command::Unenroll(Unenroll {
                fingerprint: "ab".repeat(32),
            }),
            Command::History,
        ];
        for command in commands {
            let bytes = write_document(&command.to_element());
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
        let shown = String::from_utf8(write_document(&mask_secrets(&doc))).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<password>***</password>"));
    }
}
