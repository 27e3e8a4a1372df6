//! One command of the account protocol from the command line, for shell scripts and tests:
//! `client [options] <host> <port> COMMAND`.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use getopts::Matches;

use crate::account::{AccountView, Field, PASSWORD_LEN};
use crate::cli::CommandLine;
use crate::client::{ClientConfig, init_ctx};
use crate::command::{Command, Delete, Login, Passwd, Signup, Update};
use crate::connection::AccountConnection;
use crate::error::{Error, Result};
use crate::prompt::Prompter;
use crate::reply::{Reply, ResultCode};

/// The commands a script can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptCommand {
    /// Create an account.
    Signup,
    /// Check a user name and password.
    Login,
    /// Print everything stored about the account.
    View,
    /// Change the account's information.
    Update,
    /// Change the password.
    Passwd,
    /// Delete the account.
    Delete,
}

impl ScriptCommand {
    fn from_name(name: &str) -> Option<ScriptCommand> {
        Some(match name {
            "signup" => ScriptCommand::Signup,
            "login" => ScriptCommand::Login,
            "view" => ScriptCommand::View,
            "update" => ScriptCommand::Update,
            "passwd" => ScriptCommand::Passwd,
            "delete" => ScriptCommand::Delete,
            _ => return None,
        })
    }
}

/// A command and what it works with.
#[derive(Clone, Debug)]
pub struct Script {
    /// The command.
    pub command: ScriptCommand,
    /// The account.
    pub user: String,
    /// `--set` values (signup and update).
    pub sets: Vec<(Field, String)>,
    /// Where passwords come from, if not stdin.
    pub password_file: Option<PathBuf>,
    /// Print the reply document instead of text.
    pub xml: bool,
    /// `--if-version` (update).
    pub if_version: Option<i64>,
}

/// The script a command line asks for; usage errors are reported and give the exit status.
pub fn parse(cli: &CommandLine, m: &Matches, name: &str) -> Result<Script, ExitCode> {
    let command = ScriptCommand::from_name(name).ok_or_else(|| {
        cli.usage_error(&format!(
            "unknown command {name:?}: use signup, login, view, update, passwd or delete"
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
    let takes_sets = matches!(command, ScriptCommand::Signup | ScriptCommand::Update);
    if !sets.is_empty() && !takes_sets {
        return Err(cli.usage_error(&format!("{name} takes no --set")));
    }
    if command == ScriptCommand::Update && sets.is_empty() {
        return Err(cli.usage_error("update needs at least one --set FIELD=VALUE"));
    }
    let if_version = match m.opt_str("if-version") {
        None => None,
        Some(_) if command != ScriptCommand::Update => {
            return Err(cli.usage_error("--if-version goes with update"));
        }
        Some(_) => Some(cli.number(m, "if-version", 0i64)?),
    };
    Ok(Script {
        command,
        user,
        sets,
        password_file: m.opt_str("password-file").map(PathBuf::from),
        xml: m.opt_present("xml"),
        if_version,
    })
}

/// Runs the script and gives the reply that decides its outcome; on success its text (or
/// document, with `--xml`) is printed on stdout.
pub fn run(config: &ClientConfig, script: &Script) -> Result<Reply> {
    let mut passwords = Passwords::new(script.password_file.as_deref())?;
    let password = passwords.next("password")?;
    let connector = init_ctx(config)?;
    let mut conn = AccountConnection::open(config, &connector)?;
    let reply = run_on(&mut conn, script, password, &mut passwords)?;
    let document = conn.last_reply().to_vec();
    if reply.code == ResultCode::Success && script.command != ScriptCommand::Signup {
        let bye = conn.call(&Command::Logout)?;
        log::info!("{bye}");
    }
    if reply.code.is_success() {
        if script.xml {
            println!("{}", String::from_utf8_lossy(&document));
        } else if let Some(account) = &reply.account {
            print!("{}", view_text(account));
        } else {
            println!("{}", reply.message);
        }
    }
    conn.close();
    Ok(reply)
}

fn run_on(
    conn: &mut AccountConnection,
    script: &Script,
    password: String,
    passwords: &mut Passwords,
) -> Result<Reply> {
    if script.command == ScriptCommand::Signup {
        return conn.call(&Command::Signup(Signup {
            username: script.user.clone(),
            password,
            info: script.sets.clone(),
        }));
    }
    let login = conn.call(&Command::Login(Login {
        username: script.user.clone(),
        password: password.clone(),
    }))?;
    if !login.code.is_success() {
        return Ok(login);
    }
    let command = match script.command {
        ScriptCommand::Signup | ScriptCommand::Login => return Ok(login),
        ScriptCommand::View => Command::View,
        ScriptCommand::Update => Command::Update(Update {
            changes: script.sets.clone(),
            version: script.if_version,
        }),
        ScriptCommand::Passwd => Command::Passwd(Passwd {
            password,
            new_password: passwords.next("new password")?,
        }),
        ScriptCommand::Delete => Command::Delete(Delete { password }),
    };
    conn.call(&command)
}

/// `view`'s text: one `field: value` line per field; a backslash in a value is written `\\`
/// and a line break `\n`, so every field stays on its line.
pub fn view_text(account: &AccountView) -> String {
    account
        .entries()
        .into_iter()
        .map(|(name, value)| {
            format!(
                "{name}: {}\n",
                value.replace('\\', "\\\\").replace('\n', "\\n")
            )
        })
        .collect()
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
            return Err(Error::Config(format!(
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
        let missing = || Error::Config(format!("no {what} given: the input ended"));
        match self {
            Passwords::File(lines) => lines.pop_front().ok_or_else(missing),
            Passwords::Stdin(ask) => {
                let bytes = ask
                    .secret(&format!("{what}: "), what, *PASSWORD_LEN.end())?
                    .ok_or_else(missing)?;
                String::from_utf8(bytes)
                    .map_err(|_| Error::Config(format!("the {what} is not valid UTF-8")))
            }
        }
    }
}
