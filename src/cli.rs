//! Command-line handling shared by the four programs: the common flags, usage errors printed as
//! the original printed them, logging set-up and exit statuses.

use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use getopts::{Matches, Options};

/// Exit status for a usage error.
pub(crate) const EXIT_USAGE: u8 = 2;

/// The most seconds a flag takes, in figures and in words: a bound that keeps every deadline
/// computed from it (now + the flag) far from overflowing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxSeconds {
    /// In seconds.
    pub(crate) secs: u64,
    /// In words, for help and errors ("a day").
    pub(crate) words: &'static str,
}

/// An hour at most.
pub(crate) const AN_HOUR: MaxSeconds = MaxSeconds {
    secs: 3600,
    words: "an hour",
};
/// A day at most.
pub(crate) const A_DAY: MaxSeconds = MaxSeconds {
    secs: 86_400,
    words: "a day",
};
/// A week at most.
pub(crate) const A_WEEK: MaxSeconds = MaxSeconds {
    secs: 604_800,
    words: "a week",
};

/// The help of a flag that takes seconds: what it bounds (`what`), the most it may be and its
/// default.
pub(crate) fn duration_help(what: &str, default: u64, max: MaxSeconds) -> String {
    format!("{what}; at most {} [{default}]", max.words)
}

/// A program's command line: its options, its usage line and what it takes.
pub(crate) struct CommandLine {
    /// The program's name as invoked (`argv[0]`).
    pub(crate) argv0: String,
    usage_line: String,
    /// The port's fuller usage line, said with the reason for a usage error (on stderr, so the
    /// original's line on stdout stays as it was).
    full_usage: Option<String>,
    about: String,
    positional: RangeInclusive<usize>,
    /// The free arguments in words ("a host and a port"), for a usage error.
    arguments: String,
}

impl CommandLine {
    /// `usage` is the original's usage line with `{argv0}` standing for the program's name;
    /// `positional` the numbers of free arguments accepted.
    pub(crate) fn new(
        args: &[String],
        usage: &str,
        about: impl Into<String>,
        positional: RangeInclusive<usize>,
    ) -> Self {
        let argv0 = args.first().cloned().unwrap_or_default();
        CommandLine {
            usage_line: usage.replace("{argv0}", &argv0),
            full_usage: None,
            about: about.into(),
            arguments: match (*positional.start(), *positional.end()) {
                (1, 1) => "one argument".into(),
                (a, b) if a == b => format!("{a} arguments"),
                (a, b) => format!("{a} to {b} arguments"),
            },
            positional,
            argv0,
        }
    }

    /// Names the free arguments in words for usage errors: "expects `arguments`".
    pub(crate) fn expecting(mut self, arguments: &str) -> Self {
        self.arguments = arguments.into();
        self
    }

    /// A fuller usage line than the original's (`{argv0}` for the program's name), given on
    /// stderr with each usage error.
    pub(crate) fn full_usage(mut self, usage: &str) -> Self {
        self.full_usage = Some(usage.replace("{argv0}", &self.argv0));
        self
    }

    /// Parses `args` with `opts` plus the common `-h`, `-V` and `-v`. Prints help or version,
    /// or a usage error (the error on stderr, the original's usage line on stdout), and gives
    /// the exit status in those cases; otherwise sets up logging and gives the matches.
    pub(crate) fn parse(&self, mut opts: Options, args: &[String]) -> Result<Matches, ExitCode> {
        opts.optflag("h", "help", "print this help and exit");
        opts.optflag("V", "version", "print the version and exit");
        opts.optflagmulti(
            "v",
            "verbose",
            "log to stderr: -v for connections, -vv for details (RUST_LOG overrides)",
        );
        let matches = match opts.parse(args.iter().skip(1)) {
            Ok(m) => m,
            Err(e) => return Err(self.usage_error(&option_error(&e))),
        };
        if matches.opt_present("help") {
            print!(
                "{}",
                opts.usage(&format!("{}\n\n{}", self.usage_line, self.about))
            );
            return Err(ExitCode::SUCCESS);
        }
        if matches.opt_present("version") {
            println!("{} {}", self.argv0, env!("CARGO_PKG_VERSION"));
            return Err(ExitCode::SUCCESS);
        }
        let free = &matches.free;
        if !self.positional.contains(&free.len()) {
            let given = free.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>();
            let why = match given.len() {
                0 => format!("expects {}", self.arguments),
                n if n < *self.positional.start() => {
                    format!("expects {}; got only {}", self.arguments, given.join(" "))
                }
                _ => format!("expects {}; got more: {}", self.arguments, given.join(" ")),
            };
            return Err(self.usage_error(&why));
        }
        init_logging(matches.opt_count("verbose"));
        Ok(matches)
    }

    /// Reports a usage error: `why` (and the fuller usage line, if any) as one line on stderr,
    /// the original's usage line on stdout; exit status 2.
    pub(crate) fn usage_error(&self, why: &str) -> ExitCode {
        match &self.full_usage {
            Some(full) => eprintln!("{}: {why}; {full} (--help lists the options)", self.argv0),
            None => eprintln!("{}: {why} (--help lists the options)", self.argv0),
        }
        println!("{}", self.usage_line);
        ExitCode::from(EXIT_USAGE)
    }

    /// Reports an error that stops the program; exit status 1.
    pub(crate) fn fail(&self, why: &dyn std::fmt::Display) -> ExitCode {
        eprintln!("{}: {why}", self.argv0);
        ExitCode::FAILURE
    }

    /// The value of option `name` parsed as a `T`, or `default` when absent.
    pub(crate) fn number<T: FromStr>(
        &self,
        m: &Matches,
        name: &str,
        default: T,
    ) -> Result<T, ExitCode> {
        match m.opt_str(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                self.usage_error(&format!("--{name}: {text:?} is not a valid number"))
            }),
        }
    }

    /// The value of option `name`, whole seconds from 1 to `max`, or `default` seconds when
    /// absent. Anything else, a number too large for any integer included, is a usage error
    /// that gives the range.
    pub(crate) fn seconds(
        &self,
        m: &Matches,
        name: &str,
        default: u64,
        max: MaxSeconds,
    ) -> Result<Duration, ExitCode> {
        let Some(text) = m.opt_str(name) else {
            return Ok(Duration::from_secs(default));
        };
        match text.parse() {
            Ok(secs) if (1..=max.secs).contains(&secs) => Ok(Duration::from_secs(secs)),
            _ => Err(self.usage_error(&format!(
                "--{name}: {text:?} is not a number of seconds from 1 to {} ({})",
                max.secs, max.words
            ))),
        }
    }

    /// A TCP port number given as a free argument.
    pub(crate) fn port(&self, text: &str) -> Result<u16, ExitCode> {
        text.parse()
            .map_err(|_| self.usage_error(&format!("{text:?} is not a port number (0-65535)")))
    }
}

/// A command-line option error in words.
fn option_error(e: &getopts::Fail) -> String {
    use getopts::Fail;
    let dashed = |o: &str| {
        if o.len() == 1 {
            format!("-{o}")
        } else {
            format!("--{o}")
        }
    };
    match e {
        Fail::UnrecognizedOption(o) => format!("there is no option {}", dashed(o)),
        Fail::ArgumentMissing(o) => format!("option {} needs a value", dashed(o)),
        Fail::OptionMissing(o) => format!("option {} is required", dashed(o)),
        Fail::OptionDuplicated(o) => format!("option {} is given more than once", dashed(o)),
        Fail::UnexpectedArgument(o) => format!("option {} takes no value", dashed(o)),
    }
}

/// Sends `log` records to stderr: warnings and errors by default, more with each `-v`;
/// `RUST_LOG` overrides.
fn init_logging(verbosity: usize) {
    // The PostgreSQL driver logs each statement it sends at debug: kept at info, so that no
    // statement's text reaches the log.
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        _ => "debug,tokio_postgres=info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .try_init()
        .ok(); // Already set (several parses in one test process): keep the first.
}
