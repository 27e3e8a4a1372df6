//! The interactive Login / Signup portal (`client --portal <host> <port>`): log in (with the
//! password, or with the certificate given with `--cert` once it is enrolled) or sign up,
//! then view and update my information, change my password, delete my account, see my
//! sign-in history, enroll the certificate, list and remove my certificates, log out.
//!
//! Every answer is a line (passwords without echo at a terminal); the end of input at any
//! prompt logs out and ends the portal cleanly. Each value is checked as it is typed, with the
//! policy the server applies (`crate::xml::account`), and only that value is asked for again.
//! An address is typed, and shown, as several lines: it ends with an empty line.

use openssl::ssl::SslConnector;

use super::connect::{ConnectOptions, init_ctx};
use super::connection::AccountConnection;
use super::render::{certificates_text, history_text, message, portal_view_text};
use crate::error::{Error, Result};
use crate::prompt::Prompter;
use crate::xml::account::{Field, PASSWORD_LEN, PolicyError, check_new_password, check_username};
use crate::xml::command::{
    CertLogin, Command, Delete, Enroll, Login, Passwd, Signup, Unenroll, Update,
};
use crate::xml::reply::{Reply, ResultCode};
use crate::xml::sign_in::{CertificateView, check_label};

/// The longest line the portal reads (a full address in UTF-8 fits).
const MAX_ANSWER: usize = 4096;

/// Runs the portal until the user quits or the input ends.
pub(super) fn run(config: &ConnectOptions, trace: bool) -> Result<()> {
    let connector = init_ctx(config)?;
    let certificate = presented_fingerprint(config)?;
    let ask = Prompter::stdin();
    let connect = || greeted(config, &connector, trace);
    let (mut conn, hello) = connect()?;
    if let Some(server) = &hello.greeting {
        println!(
            "Connected to {} port {} ({} {}).",
            config.host,
            config.port,
            message(&server.name),
            message(&server.version)
        );
    }
    loop {
        let with_certificate = match &certificate {
            Some(_) => "\n3) Sign in with this certificate",
            None => "",
        };
        println!("\n1) Log in\n2) Sign up{with_certificate}\nq) Quit");
        let Some(choice) = ask.text("Choose: ", "choice", MAX_ANSWER)? else {
            break;
        };
        let menu = |user: Option<String>, conn: &mut AccountConnection| match user {
            Some(user) => account_menu(&ask, conn, &user, certificate.as_deref()).map(Some),
            None => Ok(None),
        };
        let done = match choice.trim() {
            "1" => log_in(&ask, &mut conn).and_then(|user| menu(user, &mut conn)),
            "2" => sign_up(&ask, &mut conn).and_then(|user| menu(user, &mut conn)),
            "3" if certificate.is_some() => {
                certificate_log_in(&ask, &mut conn).and_then(|user| menu(user, &mut conn))
            }
            "q" | "Q" => break,
            "" => Ok(None),
            other => {
                let choices = if certificate.is_some() {
                    "1, 2, 3 or q"
                } else {
                    "1, 2 or q"
                };
                println!("There is no choice {other:?}; type {choices}.");
                Ok(None)
            }
        };
        match done {
            Ok(Some(Leave::Quit)) => break,
            // The server ended that session: a new one for the next user.
            Ok(Some(Leave::Menu)) => conn = connect()?.0,
            Ok(None) => {}
            Err(Error::ConnectionLost(why)) => {
                println!("The connection to the server was lost ({why}); connecting again.");
                conn = connect()?.0;
            }
            Err(e) => return Err(e),
        }
    }
    let _ = conn.call(&Command::Logout);
    conn.close();
    println!("Bye.");
    Ok(())
}

/// The fingerprint of the certificate given with `--cert`, if any, as the server computes
/// it: what `enroll` stores and what `certs` lists.
fn presented_fingerprint(config: &ConnectOptions) -> Result<Option<String>> {
    let Some((cert, _)) = &config.cert else {
        return Ok(None);
    };
    let pem = std::fs::read(cert).map_err(|e| Error::file("certificate", cert, e))?;
    let x509 = openssl::x509::X509::from_pem(&pem)
        .map_err(|e| Error::tls(format!("cannot read certificate {}", cert.display()), e))?;
    crate::tls::public_key_fingerprint(&x509).map(Some)
}

/// A new session, greeted at once (so the server's wait for a first command is met), and the
/// greeting.
fn greeted(
    config: &ConnectOptions,
    connector: &SslConnector,
    trace: bool,
) -> Result<(AccountConnection, Reply)> {
    let mut conn = AccountConnection::open(config, connector, trace)?;
    let hello = conn.call(&Command::Hello)?;
    Ok((conn, hello))
}

/// How the account menu ended.
#[derive(PartialEq, Eq)]
enum Leave {
    /// Logged out or deleted: back to the first menu.
    Menu,
    /// The input ended: leave the portal.
    Quit,
}

/// Logs in; gives the user name as stored (from `view`), which may differ in case from the
/// one typed.
fn log_in(ask: &Prompter, conn: &mut AccountConnection) -> Result<Option<String>> {
    let Some(username) = ask.text("User name: ", "user name", MAX_ANSWER)? else {
        return Ok(None);
    };
    let Some(password) = ask_password(ask, "Password: ")? else {
        return Ok(None);
    };
    logged_in(
        conn,
        username.clone(),
        &Command::Login(Login { username, password }),
    )
}

/// Signs in by the certificate of the connection, enrolled for the name asked for.
fn certificate_log_in(ask: &Prompter, conn: &mut AccountConnection) -> Result<Option<String>> {
    let Some(username) = ask.text("User name: ", "user name", MAX_ANSWER)? else {
        return Ok(None);
    };
    logged_in(
        conn,
        username.clone(),
        &Command::CertLogin(CertLogin { username }),
    )
}

/// Sends the sign-in (`login` or `certlogin`), then greets the user by the name stored with
/// the account, and says the last sign-in.
fn logged_in(
    conn: &mut AccountConnection,
    username: String,
    sign_in: &Command,
) -> Result<Option<String>> {
    let reply = conn.call(sign_in)?;
    if !reply.code.is_success() {
        report(&reply);
        return Ok(None);
    }
    let stored = conn
        .call(&Command::View)?
        .account
        .map_or(username, |account| account.username);
    println!("Logged in as {}.", message(&stored));
    if let Some(last) = &reply.last_sign_in {
        println!("{}", message(&last.to_string()));
    }
    Ok(Some(stored))
}

/// Signs up, asking for each value until it meets the policy, then logs in; gives the user
/// name as stored.
fn sign_up(ask: &Prompter, conn: &mut AccountConnection) -> Result<Option<String>> {
    println!(
        "A user name has 3 to 32 letters, digits, '.', '_' or '-'; a password 8 to 1024 bytes.\n\
         Your information follows; Enter leaves a field empty. The address may take several\n\
         lines: end it with an empty line."
    );
    let Some(username) = ask_checked(ask, "User name: ", "user name", check_username)? else {
        return Ok(None);
    };
    let Some(password) = new_password(ask)? else {
        return Ok(None);
    };
    let mut info = Vec::new();
    for field in Field::ALL {
        let Some(value) = ask_field(ask, field, "")? else {
            return Ok(None);
        };
        if !value.is_empty() {
            info.push((field, value));
        }
    }
    let reply = conn.call(&Command::Signup(Signup {
        username: username.clone(),
        password: password.clone(),
        info,
    }))?;
    if !reply.code.is_success() {
        report(&reply);
        return Ok(None);
    }
    println!("Account {} created.", message(&username));
    logged_in(
        conn,
        username.clone(),
        &Command::Login(Login { username, password }),
    )
}

/// Asks for a line until `check` accepts it, saying why it did not.
fn ask_checked(
    ask: &Prompter,
    prompt: &str,
    what: &str,
    check: impl Fn(&str) -> Result<(), PolicyError>,
) -> Result<Option<String>> {
    loop {
        let Some(answer) = ask.text(prompt, what, MAX_ANSWER)? else {
            return Ok(None);
        };
        match check(&answer) {
            Ok(()) => return Ok(Some(answer)),
            Err(why) => println!("{why}; try again."),
        }
    }
}

fn account_menu(
    ask: &Prompter,
    conn: &mut AccountConnection,
    user: &str,
    certificate: Option<&str>,
) -> Result<Leave> {
    let last = if certificate.is_some() { 8 } else { 7 };
    loop {
        let enroll_entry = match certificate {
            Some(_) => "\n8) Enroll this certificate",
            None => "",
        };
        println!(
            "\nAccount of {user}:\n1) View my information\n2) Update my information\n\
             3) Change my password\n4) Delete my account\n5) Log out\n\
             6) My sign-in history\n7) My certificates{enroll_entry}"
        );
        let Some(choice) = ask.text("Choose: ", "choice", MAX_ANSWER)? else {
            return Ok(Leave::Quit);
        };
        let done = match choice.trim() {
            "1" => view(conn)?,
            "2" => update(ask, conn)?,
            "3" => change_password(ask, conn)?,
            "4" => delete(ask, conn)?,
            "5" => {
                report(&conn.call(&Command::Logout)?);
                return Ok(Leave::Menu);
            }
            "6" => history(conn)?,
            "7" => certificates(ask, conn, certificate)?,
            "8" if certificate.is_some() => enroll(ask, conn)?,
            "" => None,
            other => {
                println!("There is no choice {other:?}; type a number from 1 to {last}.");
                None
            }
        };
        match done {
            Some(reply) if reply.code == ResultCode::EndingSession => return Ok(Leave::Menu),
            Some(reply) if reply.code == ResultCode::ObjectDoesNotExist => return Ok(Leave::Menu),
            Some(_) | None => {}
        }
    }
}

fn view(conn: &mut AccountConnection) -> Result<Option<Reply>> {
    let reply = conn.call(&Command::View)?;
    match &reply.account {
        Some(account) => print!("{}", portal_view_text(account)),
        None => report(&reply),
    }
    Ok(Some(reply))
}

fn history(conn: &mut AccountConnection) -> Result<Option<Reply>> {
    let reply = conn.call(&Command::History)?;
    match &reply.history {
        Some(events) => print!("{}", history_text(events)),
        None => report(&reply),
    }
    Ok(Some(reply))
}

/// Lists the enrolled certificates, numbered (the one given with `--cert`, `this`, marked),
/// and removes the one whose number is typed.
fn certificates(
    ask: &Prompter,
    conn: &mut AccountConnection,
    this: Option<&str>,
) -> Result<Option<Reply>> {
    let reply = conn.call(&Command::Certs)?;
    let Some(certs) = reply.certificates.clone() else {
        report(&reply);
        return Ok(Some(reply));
    };
    if certs.is_empty() {
        print!("{}", certificates_text(&certs));
        return Ok(None);
    }
    for (n, cert) in certs.iter().enumerate() {
        let line = certificates_text(std::slice::from_ref(cert));
        let marked = match this {
            Some(fp) if fp == cert.fingerprint => " (this one)",
            _ => "",
        };
        println!("{}) {}{marked}", n + 1, line.trim_end());
    }
    let Some(answer) = ask.text(
        "Number of a certificate to remove, or Enter to keep them all: ",
        "choice",
        MAX_ANSWER,
    )?
    else {
        return Ok(None);
    };
    let chosen: Option<&CertificateView> = match answer.trim() {
        "" => return Ok(None),
        typed => typed
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| certs.get(n)),
    };
    let Some(cert) = chosen else {
        println!(
            "There is no certificate {:?}; nothing removed.",
            answer.trim()
        );
        return Ok(None);
    };
    let removed = conn.call(&Command::Unenroll(Unenroll {
        fingerprint: cert.fingerprint.clone(),
    }))?;
    report(&removed);
    // A certificate removed meanwhile is no reason to leave the menu.
    Ok((removed.code != ResultCode::ObjectDoesNotExist).then_some(removed))
}

fn enroll(ask: &Prompter, conn: &mut AccountConnection) -> Result<Option<Reply>> {
    let Some(label) = ask_checked(ask, "Label (laptop, say; Enter for none): ", "label", |l| {
        check_label(l)
    })?
    else {
        return Ok(None);
    };
    let reply = conn.call(&Command::Enroll(Enroll { label }))?;
    report(&reply);
    Ok(Some(reply))
}

fn update(ask: &Prompter, conn: &mut AccountConnection) -> Result<Option<Reply>> {
    let current = conn.call(&Command::View)?;
    let Some(account) = &current.account else {
        report(&current);
        return Ok(Some(current));
    };
    println!("Enter keeps a value, '-' clears it; an address ends with an empty line.");
    let mut changes = Vec::new();
    for field in Field::ALL {
        let Some(value) = ask_field(ask, field, account.get(field))? else {
            return Ok(None);
        };
        if value != account.get(field) {
            changes.push((field, value));
        }
    }
    if changes.is_empty() {
        println!("Nothing changed.");
        return Ok(None);
    }
    let reply = conn.call(&Command::Update(Update {
        changes,
        version: Some(account.version),
    }))?;
    report(&reply);
    Ok(Some(reply))
}

fn change_password(ask: &Prompter, conn: &mut AccountConnection) -> Result<Option<Reply>> {
    let Some(password) = ask_password(ask, "Current password: ")? else {
        return Ok(None);
    };
    let Some(new_password) = new_password(ask)? else {
        return Ok(None);
    };
    let reply = conn.call(&Command::Passwd(Passwd {
        password,
        new_password,
    }))?;
    report(&reply);
    Ok(Some(reply))
}

fn delete(ask: &Prompter, conn: &mut AccountConnection) -> Result<Option<Reply>> {
    let Some(answer) = ask.text(
        "Delete your account and everything stored with it? Type yes to confirm: ",
        "answer",
        MAX_ANSWER,
    )?
    else {
        return Ok(None);
    };
    if answer.trim() != "yes" {
        println!("Not deleted.");
        return Ok(None);
    }
    let Some(password) = ask_password(ask, "Password: ")? else {
        return Ok(None);
    };
    let reply = conn.call(&Command::Delete(Delete { password }))?;
    report(&reply);
    Ok(Some(reply))
}

/// Asks for a field's new value, showing the current one, until it meets the field's policy:
/// Enter keeps the current value, `-` clears it. An address is read line by line up to an
/// empty line.
fn ask_field(ask: &Prompter, field: Field, current: &str) -> Result<Option<String>> {
    let prompt = match (current.is_empty(), field) {
        (true, _) => format!("{field}: "),
        (false, Field::Address) => {
            println!("{field} now:");
            for line in current.lines() {
                println!("  {}", message(line));
            }
            format!("{field} [Enter keeps it]: ")
        }
        (false, _) => format!("{field} [{}]: ", message(current)),
    };
    loop {
        let Some(first) = ask.text(&prompt, field.name(), MAX_ANSWER)? else {
            return Ok(None);
        };
        let value = match first.as_str() {
            "" => return Ok(Some(current.to_string())),
            "-" => return Ok(Some(String::new())),
            _ if field == Field::Address => {
                let mut lines = vec![first];
                loop {
                    let Some(line) =
                        ask.text("  next line (Enter ends): ", "address", MAX_ANSWER)?
                    else {
                        break;
                    };
                    if line.is_empty() {
                        break;
                    }
                    lines.push(line);
                }
                lines.join("\n")
            }
            _ => first,
        };
        match field.check(&value) {
            Ok(()) => return Ok(Some(value)),
            Err(why) => println!("{why}; try again."),
        }
    }
}

fn ask_password(ask: &Prompter, prompt: &str) -> Result<Option<String>> {
    ask.password(prompt, "password", *PASSWORD_LEN.end())?
        .map(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| Error::Input("the password is not valid UTF-8".into()))
        })
        .transpose()
}

/// A new password that meets the policy, typed twice.
fn new_password(ask: &Prompter) -> Result<Option<String>> {
    loop {
        let Some(first) = ask_password(ask, "New password: ")? else {
            return Ok(None);
        };
        if let Err(why) = check_new_password("password", &first) {
            println!("{why}; try again.");
            continue;
        }
        let Some(again) = ask_password(ask, "New password again: ")? else {
            return Ok(None);
        };
        if first == again {
            return Ok(Some(first));
        }
        println!("The two passwords differ; try again.");
    }
}

/// Tells the user what the server said.
fn report(reply: &Reply) {
    if reply.code.is_success() {
        println!("{}.", capitalised(&message(&reply.message)));
    } else {
        println!(
            "Refused ({}): {}.",
            reply.code.number(),
            message(&reply.message)
        );
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
