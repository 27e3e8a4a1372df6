//! `./bench`'s command line: what to measure, how hard, and where (the client's connection
//! options).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use getopts::Options;
use serde::Serialize;

use crate::cli::CommandLine;
use crate::client::connect::ConnectOptions;
use crate::error::Error;
use crate::password::DEFAULT_ITERATIONS;

const ABOUT: &str = "Drives a TLS 1.2 server with concurrent clients and reports its speed \
                     (--mode says what it measures).";

/// `./bench`'s command line: its usage line and what it takes.
pub(super) fn command_line(args: &[String]) -> CommandLine {
    CommandLine::new(
        args,
        "usage: {argv0} [options] <hostname> <portnum>",
        ABOUT,
        2..=2,
    )
    .expecting("a host and a port")
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Workload {
    /// A full handshake and the legacy exchange.
    Full,
    /// A resumed handshake and the legacy exchange.
    Resume,
    /// A full handshake, login and logout.
    Login,
    /// `view` on a persistent logged-in session.
    Session,
    /// `update` on a persistent logged-in session: one committed write each.
    Update,
    /// Many sessions held open, then each used once.
    Idle,
    /// A password hash, no server.
    Hash,
}

impl Workload {
    const ALL: [Workload; 7] = [
        Workload::Full,
        Workload::Resume,
        Workload::Login,
        Workload::Session,
        Workload::Update,
        Workload::Idle,
        Workload::Hash,
    ];

    /// The mode's name on the command line and in the figures.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Full => "full",
            Workload::Resume => "resume",
            Workload::Login => "login",
            Workload::Session => "session",
            Workload::Update => "update",
            Workload::Idle => "idle",
            Workload::Hash => "hash",
        }
    }

    fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Everything `bench` is told.
#[derive(Clone, Debug)]
pub(crate) struct BenchConfig {
    /// Where and how to connect (trust, timeouts): the client's options.
    pub(crate) connect: ConnectOptions,
    /// What to measure.
    pub(crate) workload: Workload,
    /// `full` and `resume`: only the handshake, no exchange.
    pub(crate) handshake_only: bool,
    /// `hash`: PBKDF2 iterations.
    pub(crate) iterations: u32,
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// How long to run (unless `count` is given).
    pub(crate) duration: Duration,
    /// How many operations to run, in all.
    pub(crate) count: Option<u64>,
    /// The account used (legacy exchange, login, session).
    pub(crate) user: String,
    /// Its password.
    pub(crate) password: String,
    /// Sessions held open in `idle` mode.
    pub(crate) connections: usize,
    /// The server's processes (`--pid`, repeatable): their CPU time is summed; the memory is
    /// the first's.
    pub(crate) pids: Vec<u32>,
    /// Where to write the figures as JSON.
    pub(crate) json: Option<PathBuf>,
}

pub(super) fn parse_config(cli: &CommandLine, args: &[String]) -> Result<BenchConfig, ExitCode> {
    let mut opts = Options::new();
    opts.optopt(
        "m",
        "mode",
        &format!(
            "what to measure: {} [full]",
            Workload::ALL.map(Workload::name).join(", ")
        ),
        "MODE",
    );
    opts.optflag(
        "",
        "handshake-only",
        "full and resume: the handshake only, no exchange",
    );
    opts.optopt(
        "",
        "iterations",
        &format!("hash: PBKDF2 iterations [{DEFAULT_ITERATIONS}]"),
        "N",
    );
    opts.optopt("c", "clients", "concurrent clients [16]", "N");
    opts.optopt("d", "duration", "seconds to run [10]", "SECS");
    opts.optopt(
        "n",
        "count",
        "operations to run, instead of a duration",
        "N",
    );
    opts.optopt("", "user", "the account used [aticle]", "NAME");
    opts.optopt(
        "",
        "password-file",
        "the account's password, first line [the demo password 123]",
        "FILE",
    );
    opts.optopt(
        "",
        "connections",
        "idle mode: sessions held open at once [1000]",
        "M",
    );
    opts.optmulti(
        "",
        "pid",
        "the server's process id, for its CPU time and memory; repeat it for a server of \
         several processes (nginx's master and workers): their CPU time is summed, the \
         memory is the first one's",
        "PID",
    );
    opts.optopt("", "json", "also write the figures to FILE as JSON", "FILE");
    ConnectOptions::declare(&mut opts);
    let m = cli.parse(opts, args)?;
    let connect = ConnectOptions::from_matches(cli, &m, &m.free[0], &m.free[1])?;
    let mode_name = m.opt_str("mode").unwrap_or_else(|| "full".into());
    let workload = Workload::from_name(&mode_name)
        .ok_or_else(|| cli.usage_error(&format!("--mode: no mode {mode_name:?}")))?;
    let clients: usize = cli.number(&m, "clients", 16)?;
    let connections: usize = cli.number(&m, "connections", 1000)?;
    if clients == 0 || connections == 0 {
        return Err(cli.usage_error("--clients and --connections must be at least 1"));
    }
    let password = match m.opt_str("password-file") {
        None => "123".to_string(),
        Some(file) => std::fs::read_to_string(&file)
            .map(|text| text.lines().next().unwrap_or_default().to_string())
            .map_err(|e| cli.fail(&Error::file("password file", file.as_ref(), e)))?,
    };
    Ok(BenchConfig {
        connect,
        workload,
        handshake_only: m.opt_present("handshake-only"),
        iterations: cli.number(&m, "iterations", DEFAULT_ITERATIONS)?,
        clients,
        duration: Duration::from_secs(cli.number(&m, "duration", 10)?),
        count: m
            .opt_str("count")
            .map(|_| cli.number(&m, "count", 0u64))
            .transpose()?,
        user: m.opt_str("user").unwrap_or_else(|| "aticle".into()),
        password,
        connections,
        pids: m
            .opt_strs("pid")
            .iter()
            .map(|text| {
                text.parse()
                    .map_err(|_| cli.usage_error(&format!("--pid: {text:?} is not a process id")))
            })
            .collect::<Result<_, _>>()?,
        json: m.opt_str("json").map(PathBuf::from),
    })
}
