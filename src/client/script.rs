//! One command of the account protocol from the command line, for shell scripts and tests:
//! `client [options] <host> <port> COMMAND`.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use getopts::{Matches, Options};

use super::connect::{ConnectOptions, init_ctx};
use super::connection::AccountConnection;
use super::render::{certificates_text, history_text, message, view_text};
use crate::cli::CommandLine;
use crate::error::{Error, Result};
use crate::prompt::Prompter;
use crate::xml::account::{Field, PASSWORD_LEN};
use crate::xml::command::{
    CertLogin, Command, CommandKind, Delete, Enroll, Login, Passwd, Signup, Unenroll, Update,
};
use crate::xml::reply::{Reply, ResultCode};
use crate::xml::sign_in::{check_label, parse_fingerprint};

/// The commands a script can run: every command but `hello`, `logout` and `certlogin`, which
/// a script runs on its own.
const SCRIPT_COMMANDS: [CommandKind; 10] = [
    CommandKind::Signup,
    CommandKind::Login,
    CommandKind::View,
    CommandKind::Update,
    CommandKind::Passwd,
    CommandKind::Delete,
    CommandKind::Enroll,
    CommandKind::Certs,
    CommandKind::Unenroll,
    CommandKind::History,
];

/// The options that go with a command only.
pub(super) const OPTIONS: [&str; 7] = [
    "user",
    "set",
    "password-file",
    "if-version",
    "xml",
    "cert-login",
    "label",
];

/// The names of the commands a script can run, for help and errors.
pub(super) fn command_names() -> String {
    CommandKind::list(&SCRIPT_COMMANDS)
}

/// Declares the [`OPTIONS`].
pub(super) fn declare(opts: &mut Options) {
    opts.optopt("", "user", "the account a command works on", "NAME");
    opts.optmulti(
        "",
        "set",
        "with signup and update: give FIELD (full_name, email, phone, address) a VALUE",
        "FIELD=VALUE",
    );
    opts.optopt(
        "",
        "password-file",
        "read passwords from this file, one line each, instead of standard input",
        "FILE",
    );
    opts.optopt(
        "",
        "if-version",
        "with update: refuse (2304) if the account is no longer at version N",
        "N",
    );
    opts.optflag(
        "",
        "xml",
        "print the server's reply document instead of its text",
    );
    opts.optflag(
        "",
        "cert-login",
        "log in by the certificate given with --cert, enrolled for --user, instead of a password",
    );
    opts.optopt(
        "",
        "label",
        "with enroll: a label to tell the certificate by (laptop, say)",
        "TEXT",
    );
}

/// A command and what it works with.
#[derive(Clone, Debug)]
pub(super) struct Script {
    /// The command.
    pub(super) command: CommandKind,
    /// The account.
    pub(super) user: String,
    /// `--set` values (signup and update).
    pub(super) sets: Vec<(Field, String)>,
    /// Where passwords come from, if not stdin.
    pub(super) password_file: Option<PathBuf>,
    /// Print the reply document instead of text.
    pub(super) xml: bool,
    /// `--if-version` (update).
    pub(super) if_version: Option<i64>,
    /// `--cert-login`: log in by the client certificate.
    pub(super) cert_login: bool,
    /// `--label` (enroll).
    pub(super) label: String,
    /// The fingerprint given after `unenroll`.
    pub(super) fingerprint: Option<String>,
}

/// The script a command line asks for; usage errors are reported and give the exit status.
pub(super) fn parse(
    cli: &CommandLine,
    m: &Matches,
    name: &str,
    argument: Option<&str>,
) -> Result<Script, ExitCode> {
    let command = CommandKind::from_name(name)
        .filter(|kind| SCRIPT_COMMANDS.contains(kind))
        .ok_or_else(|| {
            cli.usage_error(&format!(
                "unknown command {name:?}: use {}",
                command_names()
            ))
        })?;
    let user = m
        .opt_str("user")
        .ok_or_else(|| cli.usage_error(&format!("{name} needs --user NAME")))?;
    let mut sets: Vec<(Field, String)> = Vec::new();
    for text in m.opt_strs("set") {
        let (field, value) = text
            .split_once('=')
            .ok_or_else(|| cli.usage_error(&format!("--set {text:?}: write FIELD=VALUE")))?;
        let field = Field::from_name(field).ok_or_else(|| {
            cli.usage_error(&format!(
                "--set: no field {field:?}; the fields are {}",
                Field::ALL.map(Field::name).join(", ")
            ))
        })?;
        if sets.iter().any(|(f, _)| *f == field) {
            return Err(cli.usage_error(&format!("--set {field} given twice")));
        }
        sets.push((field, value.to_string()));
    }
    let takes_sets = matches!(command, CommandKind::Signup | CommandKind::Update);
    if !sets.is_empty() && !takes_sets {
        return Err(cli.usage_error(&format!("{name} takes no --set")));
    }
    if command == CommandKind::Update && sets.is_empty() {
        return Err(cli.usage_error("update needs at least one --set FIELD=VALUE"));
    }
    let if_version = match m.opt_str("if-version") {
        None => None,
        Some(_) if command != CommandKind::Update => {
            return Err(cli.usage_error("--if-version goes with update"));
        }
        Some(_) => Some(cli.number(m, "if-version", 0i64)?),
    };
    let cert_login = m.opt_present("cert-login");
    if cert_login && command == CommandKind::Signup {
        return Err(cli.usage_error("--cert-login goes with commands that log in, not signup"));
    }
    if cert_login && !m.opt_present("cert") {
        return Err(
            cli.usage_error("--cert-login needs --cert FILE: the certificate enrolled for --user")
        );
    }
    let label = m.opt_str("label").unwrap_or_default();
    if m.opt_present("label") && command != CommandKind::Enroll {
        return Err(cli.usage_error("--label goes with enroll"));
    }
    if command == CommandKind::Enroll && !m.opt_present("cert") {
        return Err(cli.usage_error("enroll needs --cert FILE: the certificate to enroll"));
    }
    if let Err(why) = check_label(&label) {
        return Err(cli.usage_error(&format!("--{why}")));
    }
    let fingerprint = match (command, argument) {
        (CommandKind::Unenroll, Some(typed)) => {
            Some(parse_fingerprint(typed).map_err(|why| cli.usage_error(&why.to_string()))?)
        }
        (CommandKind::Unenroll, None) => {
            return Err(cli.usage_error(
                "unenroll needs the certificate's FINGERPRINT after it (as certs lists them)",
            ));
        }
        (_, Some(extra)) => {
            return Err(cli.usage_error(&format!("{name} takes no argument; {extra:?} is one")));
        }
        (_, None) => None,
    };
    Ok(Script {
        command,
        user,
        sets,
        password_file: m.opt_str("password-file").map(PathBuf::from),
        xml: m.opt_present("xml"),
        if_version,
        cert_login,
        label,
        fingerprint,
    })
}

/// Runs the script and gives the reply that decides its outcome; on success its text (or
/// document, with `--xml`) is printed on stdout.
pub(super) fn run(options: &ConnectOptions, trace: bool, script: &Script) -> Result<Reply> {
    let mut passwords = Passwords::new(script.password_file.as_deref())?;
    // Read before connecting, so that the server does not wait while it is typed.
    let needs_password =
        !script.cert_login || matches!(script.command, CommandKind::Passwd | CommandKind::Delete);
    let password = match needs_password {
        true => Some(passwords.next("password")?),
        false => None,
    };
    let connector = init_ctx(options)?;
    let mut conn = AccountConnection::open(options, &connector, trace)?;
    let reply = run_on(&mut conn, script, password, &mut passwords)?;
    let document = conn.last_reply().to_vec();
    if reply.code == ResultCode::Success && script.command != CommandKind::Signup {
        let bye = conn.call(&Command::Logout)?;
        log::info!("{bye}");
    }
    if reply.code.is_success() {
        if script.xml {
            println!("{}", String::from_utf8_lossy(&document));
        } else if let Some(account) = &reply.account {
            print!("{}", view_text(account));
        } else if let (CommandKind::Certs, Some(certificates)) =
            (script.command, &reply.certificates)
        {
            print!("{}", certificates_text(certificates));
        } else if let Some(history) = &reply.history {
            print!("{}", history_text(history));
        } else {
            println!("{}", message(&reply.message));
        }
    }
    conn.close();
    Ok(reply)
}

fn run_on(
    conn: &mut AccountConnection,
    script: &Script,
    password: Option<String>,
    passwords: &mut Passwords,
) -> Result<Reply> {
    let mut password = || match &password {
        Some(password) => Ok(password.clone()),
        None => passwords.next("password"),
    };
    if script.command == CommandKind::Signup {
        return conn.call(&Command::Signup(Signup {
            username: script.user.clone(),
            password: password()?,
            info: script.sets.clone(),
        }));
    }
    let username = script.user.clone();
    let login = if script.cert_login {
        conn.call(&Command::CertLogin(CertLogin { username }))?
    } else {
        conn.call(&Command::Login(Login {
            username,
            password: password()?,
        }))?
    };
    if !login.code.is_success() {
        return Ok(login);
    }
    if let Some(last) = &login.last_sign_in {
        eprintln!("{}", message(&last.to_string()));
    }
    let command = match script.command {
        CommandKind::Hello
        | CommandKind::Signup
        | CommandKind::Login
        | CommandKind::CertLogin
        | CommandKind::Logout => {
            return Ok(login);
        }
        CommandKind::View => Command::View,
        CommandKind::Update => Command::Update(Update {
            changes: script.sets.clone(),
            version: script.if_version,
        }),
        CommandKind::Passwd => Command::Passwd(Passwd {
            password: password()?,
            new_password: passwords.next("new password")?,
        }),
        CommandKind::Delete => Command::Delete(Delete {
            password: password()?,
        }),
        CommandKind::Enroll => Command::Enroll(Enroll {
            label: script.label.clone(),
        }),
        CommandKind::Certs => Command::Certs,
        CommandKind::Unenroll => Command::Unenroll(Unenroll {
            fingerprint: script.fingerprint.clone().unwrap_or_default(),
        }),
        CommandKind::History => Command::History,
    };
    conn.call(&command)
}

/// Passwords from `--password-file` (one a line) or from stdin.
enum Passwords {
    File(VecDeque<String>),
    Stdin(Prompter),
}

/// The largest password file read.
const MAX_PASSWORD_FILE: u64 = 8 * 1024;

impl Passwords {
    fn new(file: Option<&Path>) -> Result<Passwords> {
        let Some(path) = file else {
            return Ok(Passwords::Stdin(Prompter::stdin()));
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PASSWORD_FILE + 1).read_to_string(&mut text))
            .map_err(|e| Error::file("password file", path, e))?;
        if text.len() as u64 > MAX_PASSWORD_FILE {
            return Err(Error::Input(format!(
                "the password file {} is larger than {MAX_PASSWORD_FILE} bytes",
                path.display()
            )));
        }
        Ok(Passwords::File(
            text.lines()
                .map(|l| l.trim_end_matches('\r').to_string())
                .collect(),
        ))
    }

    fn next(&mut self, what: &str) -> Result<String> {
        let missing = || Error::Input(format!("no {what} given: the input ended"));
        match self {
            Passwords::File(lines) => lines.pop_front().ok_or_else(missing),
            Passwords::Stdin(ask) => {
                let bytes = ask
                    .secret(&format!("{what}: "), what, *PASSWORD_LEN.end())?
                    .ok_or_else(missing)?;
                String::from_utf8(bytes)
                    .map_err(|_| Error::Input(format!("the {what} is not valid UTF-8")))
            }
        }
    }
}
