//! The operator's tool behind `./admin`: lists, shows, locks, unlocks, resets the password of
//! and deletes accounts, clears failed-login counts and gives figures, on the same store (and
//! `--db` URL) as the server, while servers run.
//!
//! Every change is one transaction of the store, so it is safe beside running servers: a lock
//! refuses the account's next login in any instance, and a password reset ends the account's
//! open sessions at their next command (a session compares the account's credentials'
//! generation with the one it logged in with). Exit status 0 on success, 1 when refused (the
//! reason on stderr), 2 for a usage error. No password is taken from the command line, and
//! none is printed but one made by `--generate`.
//!
//! Only `migrate` upgrades the store's schema: every other command refuses a schema that is not
//! at this program's version, so that a newer `./admin` never upgrades it under servers of an
//! older version.

use std::net::{IpAddr, Ipv6Addr};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use getopts::{Matches, Options};
use serde::Serialize;

use crate::cli::CommandLine;
use crate::db::{
    AccountStore, AccountSummary, FailureCount, SchemaChange, SchemaUpgrade, StoreLocation,
    StoreOptions, ThrottleTarget,
};
use crate::error::{Error, Result};
use crate::prompt::Prompter;
use crate::xml::account::{
    Field, PASSWORD_LEN, check_new_password, check_username, is_invisible, terminal_text,
};
use crate::xml::sign_in::{HISTORY_KEPT, parse_fingerprint};

const ABOUT: &str = "Manages the accounts of the account service, on the server's store \
                     (--db), while servers run.

Commands:
  list [--locked] [--json]   every account: name, created, last login, state
  show NAME                  every field but the password hash, the lock and the throttle,
                             the enrolled certificates and the last sign-in attempts
  lock NAME                  refuse the account's logins (its owner learns it only with the
                             right password); its open sessions end at their next command
  unlock NAME                lift the lock and clear the user's failed-login counts
  reset-password NAME        a new password, one line from standard input, asked twice on a
                             terminal (or --generate: a random one, printed once); the
                             account's sessions end
  delete NAME                delete the account and everything stored with it
  unenroll NAME FINGERPRINT  remove a certificate enrolled for signing in (as show lists
                             it); the sessions signed in with it stay
  unthrottle --user NAME     clear the login counts of a user name (failed, and right
                             passwords this minute)
  unthrottle --address A     clear those of an address (an IPv6 address: its /64); a bare
                             NAME or A is taken when it can be only one of the two
  stats                      accounts, logins and failures over the last day, refusals now
  migrate                    upgrade the store's schema to this program's version (the
                             other commands refuse an older one; servers migrate at start)

Exit status: 0 done, 1 refused (the reason on stderr), 2 usage error.";

/// Bytes of randomness in a generated password (24 characters of URL-safe base64).
const GENERATED_BYTES: usize = 18;

/// A day, in seconds.
const DAY: f64 = 86_400.0;

/// The options that go with one command only, each with its command.
const COMMAND_OPTIONS: [(&str, &str); 5] = [
    ("locked", "list"),
    ("json", "list"),
    ("generate", "reset-password"),
    ("user", "unthrottle"),
    ("address", "unthrottle"),
];

/// The `admin` program.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = CommandLine::new(
        &args,
        "usage: {argv0} [--db URL] <command> [NAME|ADDRESS] [FINGERPRINT]",
        ABOUT,
        1..=3,
    );
    let m = match cli.parse(options(), &args) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let command = match AdminCommand::parse(&m) {
        Ok(command) => command,
        Err(why) => return cli.usage_error(&why),
    };
    let db_text = m.opt_str("db").unwrap_or_else(|| "users.db".into());
    let location = match StoreLocation::parse(&db_text) {
        Ok(location) => location,
        Err(why) => return cli.usage_error(&format!("--db: {why}")),
    };
    if let StoreLocation::Sqlite(path) = &location
        && !path.exists()
    {
        return cli.fail(&format!(
            "no account database at {} (--db names the server's)",
            path.display()
        ));
    }
    let upgrade = match command {
        AdminCommand::Migrate => SchemaUpgrade::Migrate,
        _ => SchemaUpgrade::Refuse,
    };
    let (store, schema) =
        match AccountStore::open_with_schema(&location, StoreOptions::default(), upgrade) {
            Ok(opened) => opened,
            Err(Error::Schema { found, known }) => {
                return cli.fail(&schema_refusal(&cli.argv0, found, known));
            }
            Err(e) => return cli.fail(&e),
        };
    let listing = Listing {
        locked_only: m.opt_present("locked"),
        json: m.opt_present("json"),
    };
    let outcome = run(&command, &store, listing, schema);
    store.close();
    match outcome {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => cli.fail(&refusal(&command, e)),
    }
}

/// The options of `./admin`, but the common ones.
fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "",
        "db",
        "the account store, as the server's --db: a SQLite file (sqlite:PATH or PATH) or a \
         postgres:// URL (its password also from PGPASSWORD) [users.db]",
        "URL",
    );
    opts.optflag("", "locked", "list: only the locked accounts");
    opts.optflag("", "json", "list: as JSON");
    opts.optflag(
        "",
        "generate",
        "reset-password: make a random password and print it (once)",
    );
    opts.optopt(
        "",
        "user",
        "unthrottle: the failed-login counts of this user name",
        "NAME",
    );
    opts.optopt(
        "",
        "address",
        "unthrottle: those of this address (an IPv6 address: its /64)",
        "A",
    );
    opts
}

/// One command of `./admin`, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AdminCommand {
    List,
    Show(String),
    Lock(String),
    Unlock(String),
    ResetPassword { name: String, generate: bool },
    Delete(String),
    Unenroll { name: String, fingerprint: String },
    Unthrottle(ThrottleTarget),
    Stats,
    Migrate,
}

impl AdminCommand {
    /// The command in `m`'s free arguments and options; the error says what is wrong with
    /// them.
    fn parse(m: &Matches) -> std::result::Result<AdminCommand, String> {
        let (name, arg, second) = match m.free.as_slice() {
            [name] => (name.as_str(), None, None),
            [name, arg] => (name.as_str(), Some(arg.clone()), None),
            [name, arg, second] if name == "unenroll" => {
                (name.as_str(), Some(arg.clone()), Some(second.as_str()))
            }
            [name, ..] => return Err(format!("{name}: takes at most one argument")),
            _ => return Err("expected a command".into()),
        };
        if let Some((option, command)) = COMMAND_OPTIONS
            .iter()
            .find(|(option, command)| m.opt_present(option) && *command != name)
        {
            return Err(format!("--{option} goes with {command} only"));
        }
        let needs_arg = |what: &str| arg.clone().ok_or(format!("{name}: expected {what}"));
        let command = match name {
            "list" | "stats" | "migrate" if arg.is_some() => {
                return Err(format!("{name}: takes no argument"));
            }
            "list" => AdminCommand::List,
            "stats" => AdminCommand::Stats,
            "migrate" => AdminCommand::Migrate,
            "show" => AdminCommand::Show(needs_arg("an account name")?),
            "lock" => AdminCommand::Lock(needs_arg("an account name")?),
            "unlock" => AdminCommand::Unlock(needs_arg("an account name")?),
            "reset-password" => AdminCommand::ResetPassword {
                name: needs_arg("an account name")?,
                generate: m.opt_present("generate"),
            },
            "delete" => AdminCommand::Delete(needs_arg("an account name")?),
            "unenroll" => AdminCommand::Unenroll {
                name: needs_arg("an account name and a fingerprint")?,
                fingerprint: parse_fingerprint(
                    second.ok_or("unenroll: expected an account name and a fingerprint")?,
                )
                .map_err(|e| format!("unenroll: {e}"))?,
            },
            "unthrottle" => AdminCommand::Unthrottle(throttle_target(
                arg,
                m.opt_str("user"),
                m.opt_str("address"),
            )?),
            other => return Err(format!("no command {other:?}")),
        };
        Ok(command)
    }
}

/// Whose counts `unthrottle` clears: `--user NAME`, `--address A`, or one bare argument that
/// can be only one of the two (`10.1.2.3` may be either: a user name may be all digits and
/// dots).
fn throttle_target(
    bare: Option<String>,
    user: Option<String>,
    address: Option<String>,
) -> std::result::Result<ThrottleTarget, String> {
    match (bare, user, address) {
        (None, Some(name), None) => Ok(ThrottleTarget::User(name)),
        (None, None, Some(text)) => parse_address(&text)
            .map(ThrottleTarget::Address)
            .ok_or(format!("unthrottle: --address {text:?} is not an address")),
        (Some(text), None, None) => match parse_address(&text) {
            Some(_) if check_username(&text).is_ok() => Err(format!(
                "unthrottle: {text:?} may be a user name or an address; say which with \
                 --user NAME or --address A"
            )),
            Some(ip) => Ok(ThrottleTarget::Address(ip)),
            None => Ok(ThrottleTarget::User(text)),
        },
        _ => Err("unthrottle: expected --user NAME or --address A".into()),
    }
}

/// An address as `unthrottle` takes it: IPv4 or IPv6, or an IPv6 /64 as `PREFIX::/64`.
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse().ok().or_else(|| {
        let prefix = text.strip_suffix("/64")?;
        prefix.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    })
}

/// How `list` shows the accounts.
#[derive(Clone, Copy, Debug, Default)]
struct Listing {
    locked_only: bool,
    json: bool,
}

/// An error as the operator reads it: which account was not found.
fn refusal(command: &AdminCommand, e: Error) -> String {
    let name = match command {
        AdminCommand::Show(n)
        | AdminCommand::Lock(n)
        | AdminCommand::Unlock(n)
        | AdminCommand::ResetPassword { name: n, .. }
        | AdminCommand::Delete(n)
        | AdminCommand::Unenroll { name: n, .. } => n.as_str(),
        _ => "",
    };
    match e {
        Error::NoSuchAccount => format!("no account named {name:?}"),
        Error::Conflict => format!("the account {name:?} changed meanwhile; try again"),
        e => e.to_string(),
    }
}

/// Why the commands but `migrate` do not work on a store at schema version `found` when this
/// program's is `known`, and what to do; `argv0` is this program.
fn schema_refusal(argv0: &str, found: i64, known: i64) -> String {
    if found > known {
        format!(
            "the account database is at schema version {found}, newer than this program knows \
             ({known}): use the {argv0} of the servers' version"
        )
    } else if found == 0 {
        format!(
            "the account database has no schema yet: start a server on it, or run `{argv0} \
             migrate`"
        )
    } else {
        format!(
            "the account database is at schema version {found}, this program's is {known}: \
             start a server of this version on it (servers migrate when they start), or run \
             `{argv0} migrate` once the servers that use it are stopped or upgraded"
        )
    }
}

/// What `migrate` did to the schema, in words.
fn migrated(schema: SchemaChange) -> String {
    if schema.from == schema.to {
        format!(
            "the account database is at schema version {}, this program's: nothing to do\n",
            schema.to
        )
    } else {
        format!(
            "migrated the account database from schema version {} to {}\n",
            schema.from, schema.to
        )
    }
}

/// Runs `command` on `store` (opened at `schema`) and gives what to print.
fn run(
    command: &AdminCommand,
    store: &AccountStore,
    listing: Listing,
    schema: SchemaChange,
) -> Result<String> {
    let now = crate::db::unix_now();
    match command {
        AdminCommand::List => list(store, listing, now),
        AdminCommand::Show(name) => show(store, name, now),
        AdminCommand::Lock(name) => {
            store.set_locked(name, true)?;
            Ok(format!(
                "account {} locked; its logins are refused and its sessions end\n",
                store.account_named(name)?.username
            ))
        }
        AdminCommand::Unlock(name) => {
            store.set_locked(name, false)?;
            Ok(format!(
                "account {} unlocked; its failed-login counts cleared\n",
                store.account_named(name)?.username
            ))
        }
        AdminCommand::ResetPassword { name, generate } => {
            let account = store.account_named(name)?;
            let password = if *generate {
                generate_password()?
            } else {
                read_password()?
            };
            check_new_password("password", &password).map_err(|e| Error::Input(e.0))?;
            store.reset_password(&account.username, password.as_bytes())?;
            let mut out = format!(
                "password of {} reset; its open sessions end at their next command\n",
                account.username
            );
            if *generate {
                out.push_str(&format!("new password: {password}\n"));
            }
            Ok(out)
        }
        AdminCommand::Delete(name) => {
            let account = store.account_named(name)?;
            store.remove(&account.username)?;
            Ok(format!("account {} deleted\n", account.username))
        }
        AdminCommand::Unenroll { name, fingerprint } => {
            let account = store.account_named(name)?;
            store.operator_unenroll(account.id, fingerprint)?;
            Ok(format!(
                "certificate {fingerprint} of {} removed\n",
                account.username
            ))
        }
        AdminCommand::Unthrottle(target) => {
            let cleared = store.clear_failure_counts(target)?;
            Ok(format!(
                "{cleared} throttle count{} of {target} cleared\n",
                if cleared == 1 { "" } else { "s" }
            ))
        }
        AdminCommand::Stats => stats(store, now),
        AdminCommand::Migrate => Ok(migrated(schema)),
    }
}

/// An account's state: locked by the operator, refused for failed logins (or too many right
/// passwords this minute), or active.
fn state(account: &AccountSummary, counts: &[(String, FailureCount)], now: f64) -> String {
    if let Some(at) = &account.locked_at {
        return format!("locked by the operator since {at}");
    }
    let name = account.username.to_lowercase();
    let failures = refused_until(counts, &format!("user:{name}"), now);
    let successes = refused_until(counts, &format!("success:{name}"), now);
    match (failures, successes) {
        (Some(until), _) => format!("throttled until {}", iso_time(until)),
        (None, Some(until)) => format!(
            "throttled until {}: too many logins this minute",
            iso_time(until)
        ),
        (None, None) => "active".into(),
    }
}

/// When the refusals of `key` end, if they have not yet.
fn refused_until(counts: &[(String, FailureCount)], key: &str, now: f64) -> Option<f64> {
    counts
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, c)| c.blocked_until)
        .filter(|until| *until > now)
}

/// One account of `list --json`.
#[derive(Serialize)]
struct ListedAccount<'a> {
    name: &'a str,
    created: &'a str,
    last_login: Option<&'a str>,
    locked_at: Option<&'a str>,
    state: String,
}

/// The accounts, one line each (or as JSON), their values escaped for the terminal.
fn list(store: &AccountStore, listing: Listing, now: f64) -> Result<String> {
    let counts = store.failure_counts()?;
    let accounts: Vec<AccountSummary> = store
        .accounts()?
        .into_iter()
        .filter(|a| !listing.locked_only || a.locked_at.is_some())
        .collect();
    let listed: Vec<ListedAccount<'_>> = accounts
        .iter()
        .map(|a| ListedAccount {
            name: &a.username,
            created: &a.created_at,
            last_login: a.last_login_at.as_deref(),
            locked_at: a.locked_at.as_deref(),
            state: state(a, &counts, now),
        })
        .collect();
    if listing.json {
        let json = serde_json::to_string_pretty(&listed)
            .map_err(|e| Error::Input(format!("cannot write JSON: {e}")))?;
        return Ok(terminal_safe_json(&json) + "\n");
    }
    let rows: Vec<[String; 4]> = listed
        .iter()
        .map(|a| [a.name, a.created, a.last_login.unwrap_or("never"), &a.state].map(terminal_text))
        .collect();
    let width = rows
        .iter()
        .map(|[name, ..]| name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:width$}  {:24}  {:24}  STATE\n",
        "NAME", "CREATED", "LAST LOGIN"
    );
    for [name, created, last_login, state] in &rows {
        out.push_str(&format!(
            "{name:width$}  {created:24}  {last_login:24}  {state}\n"
        ));
    }
    Ok(out)
}

/// `json` with DEL, the C1 control characters and the characters that change how text reads
/// ([`is_invisible`]: direction overrides and the like), which JSON lets a string hold as
/// they are and a terminal may obey (U+009B starts a control sequence, as ESC `[` does),
/// written as `\uXXXX` escapes: the same JSON value. (JSON escapes the other control
/// characters.)
fn terminal_safe_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if is_invisible(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Everything about the account called `name` but its password hash, one line each, its
/// values escaped for the terminal.
fn show(store: &AccountStore, name: &str, now: f64) -> Result<String> {
    let account = store.account_named(name)?;
    let view = store.operator_view(account.id)?;
    let counts = store.failure_counts()?;
    let mut lines = vec![
        ("name", view.username.clone()),
        ("id", account.id.to_string()),
    ];
    lines.extend(Field::ALL.map(|f| (f.name(), view.get(f).to_string())));
    lines.extend([
        ("created", view.created_at.clone()),
        ("updated", view.updated_at.clone()),
        (
            "last login",
            view.last_login_at.clone().unwrap_or("never".into()),
        ),
        ("version", view.version.to_string()),
        ("state", state(&account, &counts, now)),
    ]);
    let lowered = account.username.to_lowercase();
    let name_key = format!("user:{lowered}");
    lines.push(("failed logins", describe_count(&counts, &name_key, now)));
    let mut out = String::new();
    for (label, value) in lines {
        out.push_str(&format!("{label:14} {}\n", terminal_text(&value)));
    }
    let known = store.known_addresses(account.id)?;
    if known.is_empty() {
        out.push_str("known addresses: none\n");
    } else {
        out.push_str("known addresses:\n");
    }
    for (address, last) in known {
        out.push_str(&format!(
            "  {:24} last right password {}; failures here: {}; from the address: {}\n",
            terminal_text(&address),
            iso_time(last),
            describe_count(&counts, &format!("pair:{lowered}@{address}"), now),
            describe_count(&counts, &format!("addr:{address}"), now),
        ));
    }
    let (certificates, history) = store.operator_sign_in_view(account.id, SHOWN_SIGN_INS)?;
    if certificates.is_empty() {
        out.push_str("certificates: none\n");
    } else {
        out.push_str("certificates:\n");
    }
    for cert in certificates {
        out.push_str(&format!(
            "  {}  enrolled {}  last used {}  {}\n",
            cert.fingerprint,
            cert.enrolled_at,
            cert.last_used_at.as_deref().unwrap_or("never"),
            terminal_text(&cert.label)
        ));
    }
    if history.is_empty() {
        out.push_str("last sign-ins: none\n");
    } else {
        out.push_str(&format!(
            "last sign-ins (newest first, of {HISTORY_KEPT} kept):\n"
        ));
    }
    for event in history {
        out.push_str(&format!("  {}\n", terminal_text(&event.to_string())));
    }
    Ok(out)
}

/// How many of an account's sign-in events `show` lists.
const SHOWN_SIGN_INS: usize = 5;

/// A key's count in words: "none", or how many failures, the last when, and any refusal.
fn describe_count(counts: &[(String, FailureCount)], key: &str, now: f64) -> String {
    let Some((_, count)) = counts.iter().find(|(k, _)| k == key) else {
        return "none".into();
    };
    let mut text = format!(
        "{} (last {})",
        count.failures,
        iso_time(count.last_failure_at)
    );
    if count.blocked_until > now {
        text.push_str(&format!(
            ", refused until {}",
            iso_time(count.blocked_until)
        ));
    }
    text
}

fn stats(store: &AccountStore, now: f64) -> Result<String> {
    let totals = store.account_totals()?;
    let counts = store.failure_counts()?;
    let failures: u64 = counts
        .iter()
        .filter(|(k, c)| k.starts_with("addr:") && c.last_failure_at >= now - DAY)
        .map(|(_, c)| u64::from(c.failures))
        .sum();
    let refused = |prefix: &str| {
        let keys: Vec<&str> = counts
            .iter()
            .filter(|(_, c)| c.blocked_until > now)
            .filter_map(|(k, _)| k.strip_prefix(prefix))
            .collect();
        if keys.is_empty() {
            "none".to_string()
        } else {
            terminal_text(&keys.join(", "))
        }
    };
    Ok(format!(
        "accounts:              {}\n\
         locked:                {}\n\
         logins, last day:      {} (accounts whose last login was within the day)\n\
         failures, last day:    {failures} (failed password checks still counted per address; \
         a count is forgotten 15 minutes after its last failure)\n\
         throttled names:       {}\n\
         throttled addresses:   {}\n",
        totals.accounts,
        totals.locked,
        totals.logged_in_last_day,
        refused("user:"),
        refused("addr:"),
    ))
}

/// A random password: [`GENERATED_BYTES`] from OpenSSL's generator, in URL-safe base64.
fn generate_password() -> Result<String> {
    let mut bytes = [0u8; GENERATED_BYTES];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|e| Error::tls("cannot make a random password", e))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The new password: asked twice without echo on a terminal (refused if the two differ), else
/// one line of standard input.
fn read_password() -> Result<String> {
    let ask = Prompter::stdin();
    let (what, limit) = ("new password", *PASSWORD_LEN.end());
    let password = ask.secret("new password: ", what, limit)?.ok_or_else(|| {
        Error::Input("no new password on standard input (or use --generate)".into())
    })?;
    if ask.is_terminal()
        && ask.secret("new password again: ", what, limit)?.as_ref() != Some(&password)
    {
        return Err(Error::Input(
            "the two passwords differ; nothing changed".into(),
        ));
    }
    String::from_utf8(password)
        .map_err(|_| Error::Input("the new password is not valid UTF-8".into()))
}

/// Seconds since the Unix epoch as ISO 8601 UTC to the second, as the store writes times.
fn iso_time(secs: f64) -> String {
    let secs = secs.max(0.0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command in `args` (after the program's name), or why not.
    fn parsed(args: &[&str]) -> std::result::Result<AdminCommand, String> {
        let m = options().parse(args).map_err(|e| e.to_string())?;
        AdminCommand::parse(&m)
    }

    #[test]
    fn commands_are_parsed_strictly() {
        assert_eq!(
            parsed(&["show", "ann"]),
            Ok(AdminCommand::Show("ann".into()))
        );
        assert_eq!(
            parsed(&["reset-password", "--generate", "ann"]),
            Ok(AdminCommand::ResetPassword {
                name: "ann".into(),
                generate: true
            })
        );
        let fingerprint = "AB:".repeat(31) + "AB";
        assert_eq!(
            parsed(&["unenroll", "ann", &fingerprint]),
            Ok(AdminCommand::Unenroll {
                name: "ann".into(),
                fingerprint: "ab".repeat(32)
            })
        );
        for wrong in [
            &["show"][..],
            &["list", "x"],
            &["lock", "ann", "--generate"],
            &["list", "--user", "ann"],
            &["frobnicate"],
            &["unenroll", "ann"],
            &["unenroll", "ann", "beef"],
            &["lock", "ann", "bob"],
        ] {
            assert!(parsed(wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn unthrottle_says_whose_counts() {
        let user = |name: &str| Ok(AdminCommand::Unthrottle(ThrottleTarget::User(name.into())));
        let address = |ip: &str| {
            Ok(AdminCommand::Unthrottle(ThrottleTarget::Address(
                ip.parse().unwrap(),
            )))
        };
        assert_eq!(
            parsed(&["unthrottle", "--user", "10.1.2.3"]),
            user("10.1.2.3")
        );
        assert_eq!(
            parsed(&["unthrottle", "--address", "10.1.2.3"]),
            address("10.1.2.3")
        );
        assert_eq!(parsed(&["unthrottle", "alice"]), user("alice"));
        assert_eq!(
            parsed(&["unthrottle", "2001:db8::/64"]),
            address("2001:db8::")
        );
        assert_eq!(parsed(&["unthrottle", "::1"]), address("::1"));
        let ambiguous = parsed(&["unthrottle", "10.1.2.3"]).unwrap_err();
        assert!(
            ambiguous.contains("--user NAME") && ambiguous.contains("--address A"),
            "{ambiguous}"
        );
        for wrong in [
            &["unthrottle"][..],
            &["unthrottle", "--address", "alice"],
            &["unthrottle", "--address", "10.1.2.3/64"],
            &["unthrottle", "--user", "a", "--address", "::1"],
            &["unthrottle", "--user", "a", "b"],
        ] {
            assert!(parsed(wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn json_keeps_no_control_character_as_it_is() {
        let value = "a\u{1b}[1mb\u{7f}c\u{9b}2Jd\u{202e}";
        let json = terminal_safe_json(&serde_json::to_string(value).unwrap());
        assert_eq!(json, "\"a\\u001b[1mb\\u007fc\\u009b2Jd\\u202e\"");
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), value);
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(iso_time(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(951_782_400.5), "2000-02-29T00:00:00Z");
        assert_eq!(iso_time(1_796_163_330.0), "2026-12-01T22:15:30Z");
    }

    #[test]
    fn generated_passwords_pass_the_policy_and_differ() {
        let (a, b) = (generate_password().unwrap(), generate_password().unwrap());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(check_new_password("password", &a).is_ok());
    }
}
