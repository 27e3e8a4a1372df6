//! Replies of the account protocol: a result code in the style of EPP (RFC 5730), a message
//! for people, and, for some commands, the account's information or the server's greeting.
//!
//! ```xml
//! <reply code="1000"><message>Command completed successfully</message>
//!   <account><username>alice</username>...<version>3</version></account></reply>
//! ```

use std::fmt;

use xmltree::{Element, XMLNode};

use super::account::{AccountView, Field};
use super::document::{child_elements, text, text_element};
use super::sign_in::{
    CertificateView, LastSignIn, SignInEvent, certificate_element, event_element,
    last_sign_in_element, read_certificate, read_event, read_last_sign_in, read_list,
};

/// Result codes, numbered as EPP numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultCode {
    /// 1000: the command succeeded.
    Success = 1000,
    /// 1500: the command succeeded and the server ends the session.
    EndingSession = 1500,
    /// 2001: the document is not a valid command.
    SyntaxError = 2001,
    /// 2002: the command is valid but not now (not logged in, say).
    UseError = 2002,
    /// 2004: a value is outside the policy.
    ValuePolicy = 2004,
    /// 2200: user name or password wrong.
    AuthenticationError = 2200,
    /// 2302: the account exists already.
    ObjectExists = 2302,
    /// 2303: the object does not exist (a certificate `unenroll` names).
    ObjectDoesNotExist = 2303,
    /// 2304: the account changed since the version the client saw.
    Conflict = 2304,
    /// 2400: the server failed.
    CommandFailed = 2400,
    /// 2502: a limit of the session was reached.
    LimitExceeded = 2502,
}

impl ResultCode {
    const ALL: [ResultCode; 11] = [
        ResultCode::Success,
        ResultCode::EndingSession,
        ResultCode::SyntaxError,
        ResultCode::UseError,
        ResultCode::ValuePolicy,
        ResultCode::AuthenticationError,
        ResultCode::ObjectExists,
        ResultCode::ObjectDoesNotExist,
        ResultCode::Conflict,
        ResultCode::CommandFailed,
        ResultCode::LimitExceeded,
    ];

    /// The number on the wire.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// The code with this number.
    pub fn from_number(n: u16) -> Option<ResultCode> {
        ResultCode::ALL.into_iter().find(|c| c.number() == n)
    }

    /// Whether the command succeeded (1xxx).
    pub fn is_success(self) -> bool {
        self.number() < 2000
    }
}

/// What the server tells about itself in reply to `hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The server's program name.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// The commands it understands.
    pub commands: Vec<String>,
}

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The result code.
    pub code: ResultCode,
    /// What happened, for people.
    pub message: String,
    /// The account's information (`view`, `update`).
    pub account: Option<AccountView>,
    /// The server's greeting (`hello`).
    pub greeting: Option<Greeting>,
    /// With 2502: seconds to wait before trying again.
    pub retry_after: Option<u64>,
    /// After signing in (`login`, `certlogin`): the sign-in before, and failures since.
    pub last_sign_in: Option<LastSignIn>,
    /// The account's enrolled certificates (`certs`, `enroll`, `unenroll`).
    pub certificates: Option<Vec<CertificateView>>,
    /// The account's sign-in events, newest first (`history`).
    pub history: Option<Vec<SignInEvent>>,
}

impl Reply {
    /// A reply with a code and message only.
    pub fn new(code: ResultCode, message: impl Into<String>) -> Reply {
        Reply {
            code,
            message: message.into(),
            account: None,
            greeting: None,
            retry_after: None,
            last_sign_in: None,
            certificates: None,
            history: None,
        }
    }

    /// The reply as an XML tree.
    pub fn to_element(&self) -> Element {
        let mut root = Element::new("reply");
        root.attributes
            .insert("code".into(), self.code.number().to_string());
        root.children
            .push(XMLNode::Element(text_element("message", &self.message)));
        if let Some(secs) = self.retry_after {
            root.children.push(XMLNode::Element(text_element(
                "retry_after",
                &secs.to_string(),
            )));
        }
        if let Some(account) = &self.account {
            let mut el = Element::new("account");
            for (name, value) in account.entries() {
                el.children
                    .push(XMLNode::Element(text_element(name, &value)));
            }
            root.children.push(XMLNode::Element(el));
        }
        if let Some(last) = &self.last_sign_in {
            root.children
                .push(XMLNode::Element(last_sign_in_element(last)));
        }
        if let Some(certificates) = &self.certificates {
            let mut el = Element::new("certificates");
            for cert in certificates {
                el.children
                    .push(XMLNode::Element(certificate_element(cert)));
            }
            root.children.push(XMLNode::Element(el));
        }
        if let Some(history) = &self.history {
            let mut el = Element::new("history");
            for event in history {
                el.children.push(XMLNode::Element(event_element(event)));
            }
            root.children.push(XMLNode::Element(el));
        }
        if let Some(greeting) = &self.greeting {
            let mut server = Element::new("server");
            server
                .children
                .push(XMLNode::Element(text_element("name", &greeting.name)));
            server
                .children
                .push(XMLNode::Element(text_element("version", &greeting.version)));
            let mut commands = Element::new("commands");
            for command in &greeting.commands {
                commands
                    .children
                    .push(XMLNode::Element(text_element("command", command)));
            }
            server.children.push(XMLNode::Element(commands));
            root.children.push(XMLNode::Element(server));
        }
        root
    }

    /// Reads a reply from its XML tree (the client side).
    pub fn from_element(root: &Element) -> Result<Reply, String> {
        if root.name != "reply" {
            return Err(format!("expected <reply>, got <{}>", root.name));
        }
        let code = root
            .attributes
            .get("code")
            .and_then(|c| c.parse().ok())
            .and_then(ResultCode::from_number)
            .ok_or("<reply> without a known code")?;
        let message = root.get_child("message").map(text).unwrap_or_default();
        let account = root.get_child("account").map(read_account).transpose()?;
        let greeting = root.get_child("server").map(|server| Greeting {
            name: server.get_child("name").map(text).unwrap_or_default(),
            version: server.get_child("version").map(text).unwrap_or_default(),
            commands: server
                .get_child("commands")
                .map(|c| child_elements(c).map(text).collect())
                .unwrap_or_default(),
        });
        let retry_after = root
            .get_child("retry_after")
            .map(|el| {
                text(el)
                    .parse()
                    .map_err(|_| "<retry_after> is not a number")
            })
            .transpose()?;
        Ok(Reply {
            code,
            message,
            account,
            greeting,
            retry_after,
            last_sign_in: root
                .get_child("last_sign_in")
                .map(read_last_sign_in)
                .transpose()?,
            certificates: root
                .get_child("certificates")
                .map(|el| read_list(el, |c| Ok(read_certificate(c))))
                .transpose()?,
            history: root
                .get_child("history")
                .map(|el| read_list(el, read_event))
                .transpose()?,
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.number(), self.message)
    }
}

fn read_account(el: &Element) -> Result<AccountView, String> {
    let get = |name: &str| el.get_child(name).map(text).unwrap_or_default();
    let last_login = get("last_login_at");
    Ok(AccountView {
        username: get("username"),
        fields: Field::ALL.map(|f| get(f.name())),
        created_at: get("created_at"),
        updated_at: get("updated_at"),
        last_login_at: (!last_login.is_empty()).then_some(last_login),
        version: get("version")
            .parse()
            .map_err(|_| "<account> without a valid <version>")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::document::{parse_document, write_document};

    fn round_trip(reply: &Reply) -> Reply {
        let bytes = write_document(&reply.to_element());
        Reply::from_element(&parse_document(&bytes).unwrap()).unwrap()
    }

    #[test]
    fn codes() {
        for code in ResultCode::ALL {
            assert_eq!(ResultCode::from_number(code.number()), Some(code));
        }
        assert!(ResultCode::EndingSession.is_success());
        assert!(!ResultCode::SyntaxError.is_success());
        assert_eq!(ResultCode::from_number(1001), None);
    }

    #[test]
    fn replies_round_trip() {
        let plain = Reply::new(ResultCode::Conflict, "changed <meanwhile> & since");
        assert_eq!(round_trip(&plain), plain);
        let mut wait = Reply::new(ResultCode::LimitExceeded, "later");
        wait.retry_after = Some(4);
        assert_eq!(round_trip(&wait), wait);
        let mut with_account = Reply::new(ResultCode::Success, "ok");
        with_account.account = Some(AccountView {
            username: "alice".into(),
            fields: [
                "Alice A.".into(),
                "a@example.org".into(),
                String::new(),
                "1 Road\nTown".into(),
            ],
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-02T00:00:00.000Z".into(),
            last_login_at: None,
            version: 7,
        });
        assert_eq!(round_trip(&with_account), with_account);
        let mut hello = Reply::new(ResultCode::Success, "hi");
        hello.greeting = Some(Greeting {
            name: "server".into(),
            version: "1.0".into(),
            commands: vec!["hello".into(), "login".into()],
        });
        assert_eq!(round_trip(&hello), hello);
        let mut signed_in = Reply::new(ResultCode::Success, "in");
        let event = SignInEvent {
            at: "2026-12-03T10:00:00.000Z".into(),
            address: "::1".into(),
            method: crate::xml::sign_in::SignInMethod::Password,
            outcome: crate::xml::sign_in::SignInOutcome::WrongPassword,
        };
        signed_in.last_sign_in = Some(LastSignIn {
            previous: Some(event.clone()),
            failed_since: 3,
        });
        assert_eq!(round_trip(&signed_in), signed_in);
        let mut lists = Reply::new(ResultCode::Success, "lists");
        lists.history = Some(vec![event.clone(), event]);
        lists.certificates = Some(vec![CertificateView {
            fingerprint: "ab".repeat(32),
            label: "laptop".into(),
            enrolled_at: "2026-12-03T10:00:00.000Z".into(),
            last_used_at: None,
        }]);
        assert_eq!(round_trip(&lists), lists);
        let mut empty = Reply::new(ResultCode::Success, "none");
        empty.history = Some(vec![]);
        empty.certificates = Some(vec![]);
        assert_eq!(round_trip(&empty), empty);
    }

    #[test]
    fn exact_bytes_of_a_reply() {
        let bytes = write_document(&Reply::new(ResultCode::Success, "done").to_element());
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <reply code=\"1000\"><message>done</message></reply>"
        );
    }
}
