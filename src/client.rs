//! The client: a port of the original `client.c`, function by function.
//!
//! | C function                    | here                                  |
//! |-------------------------------|---------------------------------------|
//! | `OpenConnection(host, port)`  | `open_connection` (in `connect`)      |
//! | `InitCTX()`                   | `init_ctx` (in `connect`)             |
//! | `ShowCerts(ssl)`              | `show_certs` (in `legacy`)            |
//! | `main()`                      | [`main`], then `run` (in `legacy`)    |
//!
//! With no command it does the original's exchange and prints its prompts and transcript byte
//! for byte. Unlike the original it verifies the server's certificate (unless `--insecure`),
//! reads the password without echo from a terminal, has no fixed-size buffers, and bounds every
//! wait. With `--portal` it opens the interactive Login / Signup portal; with a command it runs
//! that one command of the account protocol for scripts.
//!
//! Its parts:
//! - `connect`: where and how to connect (options shared with `./bench`), the TLS set-up and
//!   handshake;
//! - `legacy`: the original's exchange;
//! - `connection`: an account-protocol session, one command and reply at a time;
//! - `portal`: the interactive Login / Signup portal;
//! - `script`: one command from the command line;
//! - `render`: an account's information as text.

pub(crate) mod connect;
pub(crate) mod connection;
mod legacy;
mod portal;
mod render;
mod script;

use std::path::PathBuf;
use std::process::ExitCode;

use getopts::Options;

use crate::cli::CommandLine;
use connect::ConnectOptions;
use script::Script;

/// What the client is asked to do.
#[derive(Clone, Debug)]
enum Action {
    /// The original's exchange.
    Legacy,
    /// The interactive Login / Signup portal.
    Portal,
    /// One command of the account protocol.
    Script(Script),
}

/// Everything the client is told on its command line.
#[derive(Clone, Debug)]
struct Invocation {
    /// Where and how to connect.
    connect: ConnectOptions,
    /// Print every frame of the account protocol on stderr (passwords masked).
    trace: bool,
    /// What to do there.
    action: Action,
}

/// The `client` program: parses the command line and runs the exchange.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = command_line(&args);
    let invocation = match parse_invocation(&cli, &args) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let (options, trace) = (&invocation.connect, invocation.trace);
    let done = match &invocation.action {
        Action::Legacy => match legacy::run(options) {
            Ok(legacy::Answer::Invalid) => return ExitCode::FAILURE,
            Ok(legacy::Answer::Accepted) => Ok(()),
            Err(e) => Err(e),
        },
        Action::Portal => portal::run(options, trace),
        Action::Script(script) => match script::run(options, trace, script) {
            Ok(reply) if reply.code.is_success() => Ok(()),
            Ok(refusal) => {
                let words = render::message(&refusal.message);
                eprintln!("{}: {} {words}", cli.argv0, refusal.code.number());
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli.fail(&e),
    }
}

/// The client's command line: the original's usage line, and what else it takes.
fn command_line(args: &[String]) -> CommandLine {
    let about = format!(
        "       client [options] <hostname> <portnum> COMMAND   (one command, for scripts)
       client [options] --portal <hostname> <portnum>  (the Login / Signup portal)

Without a command: logs in with the original's legacy exchange over TLS 1.2, reading
the user name and password from the terminal (the password without echo), or as two
lines from standard input when it is not a terminal.

COMMAND is one of {} (unenroll takes
the certificate's FINGERPRINT after it). Every command but signup first logs in as
--user, with its password, or with --cert-login by the enrolled certificate given with
--cert (no password read; passwd and delete still read it); passwords are read from
standard input, one line each (passwd reads the current, then the new one), or from
--password-file. After logging in, the last sign-in and the failed attempts since are
said on standard error. Exit status: 0 done, 1 refused by the server (its message on
stderr), 2 usage error.",
        script::command_names()
    );
    // The original's line stays on stdout, byte for byte; the fuller one goes with the reason.
    CommandLine::new(args, "usage: {argv0} <hostname> <portnum>", about, 2..=4)
        .expecting("a host and a port")
        .full_usage(
            "usage: {argv0} [options] [--portal] <hostname> <portnum> [COMMAND [FINGERPRINT]]",
        )
}

fn parse_invocation(cli: &CommandLine, args: &[String]) -> Result<Invocation, ExitCode> {
    let mut opts = Options::new();
    ConnectOptions::declare(&mut opts);
    opts.optflag("", "portal", "open the interactive Login / Signup portal");
    script::declare(&mut opts);
    opts.optopt(
        "",
        "reuse-session",
        "resume the TLS session saved in FILE (a shorter handshake; the server keeps the client \
         certificate it was made with), and save the new one there",
        "FILE",
    );
    opts.optflag(
        "",
        "trace",
        "print every frame sent and received on stderr (passwords masked)",
    );
    let m = cli.parse(opts, args)?;
    let mut connect = ConnectOptions::from_matches(cli, &m, &m.free[0], &m.free[1])?;
    connect.reuse_session = m.opt_str("reuse-session").map(PathBuf::from);
    let trace = m.opt_present("trace");
    let action = match (m.free.get(2), m.opt_present("portal")) {
        (Some(_), true) => return Err(cli.usage_error("--portal takes no command")),
        (Some(name), false) => Action::Script(script::parse(
            cli,
            &m,
            name,
            m.free.get(3).map(String::as_str),
        )?),
        (None, portal) => {
            if let Some(name) = script::OPTIONS.iter().find(|o| m.opt_present(o)) {
                return Err(cli.usage_error(&format!("--{name} goes with a command")));
            }
            if portal {
                Action::Portal
            } else if trace {
                return Err(cli.usage_error("--trace goes with --portal or a command"));
            } else {
                Action::Legacy
            }
        }
    };
    Ok(Invocation {
        connect,
        trace,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parsing() {
        let args = |extra: &[&str]| -> Vec<String> {
            std::iter::once("client")
                .chain(extra.iter().copied())
                .map(String::from)
                .collect()
        };
        let a = args(&["[::1]", "8081"]);
        let cli = command_line(&a);
        let parsed = parse_invocation(&cli, &a).unwrap();
        assert_eq!(parsed.connect.host, "::1");
        assert_eq!(parsed.connect.port, 8081);
        assert!(matches!(parsed.action, Action::Legacy));
        let a = args(&["--cert", "me.pem", "h", "1"]);
        let parsed = parse_invocation(&cli, &a).unwrap();
        assert_eq!(
            parsed.connect.cert,
            Some((PathBuf::from("me.pem"), PathBuf::from("me.pem")))
        );
        assert!(parsed.connect.cafiles.is_empty());
        let a = args(&[
            "--cafile",
            "mycert.pem",
            "--cafile",
            "mycert-ec.pem",
            "h",
            "1",
        ]);
        assert_eq!(
            parse_invocation(&cli, &a).unwrap().connect.cafiles,
            [PathBuf::from("mycert.pem"), PathBuf::from("mycert-ec.pem")]
        );
        let a = args(&["--portal", "--trace", "h", "1"]);
        assert!(matches!(
            parse_invocation(&cli, &a).unwrap().action,
            Action::Portal
        ));
        let a = args(&[
            "--user",
            "alice",
            "--set",
            "email=a@b.c",
            "h",
            "1",
            "update",
        ]);
        let Action::Script(script) = parse_invocation(&cli, &a).unwrap().action else {
            panic!("not a script");
        };
        assert_eq!(script.user, "alice");
        for bad in [
            &["h"][..],
            &["h", "1", "2"],
            &["h", "x"],
            &["--key", "k", "h", "1"],
            &["--insecure", "--cafile", "c", "h", "1"],
            &["--portal", "h", "1", "view"],
            &["--user", "alice", "h", "1"],
            &["--trace", "h", "1"],
            &["h", "1", "view"],
            &["--user", "alice", "h", "1", "fly"],
            &["--user", "alice", "h", "1", "update"],
            &["--user", "alice", "--set", "email=a@b.c", "h", "1", "view"],
            &["--user", "alice", "--set", "shoe=9", "h", "1", "update"],
            &["--user", "alice", "--set", "email", "h", "1", "update"],
            &[
                "--user", "a", "--set", "email=x", "--set", "email=y", "h", "1", "update",
            ],
            &[
                "--user",
                "alice",
                "--if-version",
                "x",
                "--set",
                "email=y",
                "h",
                "1",
                "update",
            ],
            &["--user", "alice", "--if-version", "3", "h", "1", "view"],
        ] {
            let a = args(bad);
            assert!(parse_invocation(&cli, &a).is_err(), "{bad:?}");
        }
    }
}
