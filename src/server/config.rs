//! The server's command line: every option, its default, and the checks on it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use getopts::Options;

use super::connections::ConnectionLimits;
use super::proxy_protocol::TrustedProxies;
use crate::cli::{A_DAY, A_WEEK, AN_HOUR, CommandLine, MaxSeconds, duration_help};
use crate::db::{StoreLocation, StoreOptions};
use crate::password::{DEFAULT_ITERATIONS, Pbkdf2Params};

const ABOUT: &str =
    "A TLS 1.2 server for the legacy login exchange, backed by an account database.";
/// The flags that take seconds: name, what it bounds, default, and the most it may be (a
/// bound far below what would overflow a deadline, and above any sensible setting: a week
/// for a connection's life and the ticket keys', as TLS 1.3 caps a ticket's life at a week).
const DURATION_FLAGS: [(&str, &str, u64, MaxSeconds); 6] = [
    (
        "handshake-timeout",
        "seconds the TLS handshake (a PROXY header included) may take",
        10,
        AN_HOUR,
    ),
    ("timeout", "seconds each read and write may wait", 30, A_DAY),
    (
        "idle-timeout",
        "seconds an account session may wait for its next command",
        300,
        A_DAY,
    ),
    (
        "session-timeout",
        "seconds one connection may last",
        3600,
        A_WEEK,
    ),
    (
        "ticket-key-lifetime",
        "seconds before session-ticket keys are replaced",
        3600,
        A_WEEK,
    ),
    (
        "grace-period",
        "seconds a stop waits for connections in flight",
        10,
        A_DAY,
    ),
];
/// The most `--hash-wait` may be: a command that waits longer for its turn is better told
/// that the server is busy.
const MAX_HASH_WAIT: MaxSeconds = AN_HOUR;
const DEFAULT_MAX_CLIENTS: usize = 1024;
/// The certificate (with its key) when no `--cert` is given, as the original's.
const DEFAULT_CERT: &str = "mycert.pem";
/// Connections one address may hold: far more than the people behind one NAT keep open at
/// once (each client holds one), and a quarter of the places.
const DEFAULT_MAX_PER_ADDRESS: usize = 256;

/// Everything the server is told on its command line.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The TCP port; 0 lets the system choose (logged with `-v`).
    pub(crate) port: u16,
    /// The address to listen on; `None` for every interface, IPv4 and IPv6.
    pub(crate) bind: Option<IpAddr>,
    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub(crate) metrics: Option<SocketAddr>,
    /// The load balancers whose connections start with a PROXY header naming the client.
    pub(crate) proxy_protocol_from: TrustedProxies,
    /// The certificates and their keys, at most one per key type (an RSA one and an ECDSA
    /// one, say): OpenSSL picks one for each client from what the client offers. By default
    /// `mycert.pem` alone, its key in the same file.
    pub(crate) certificates: Vec<CertificateFiles>,
    /// Where the accounts are kept.
    pub(crate) db: StoreLocation,
    /// Whether to make sure the original's demo account exists.
    pub(crate) demo: bool,
    /// How long each wait may last.
    pub(crate) limits: Limits,
    /// How long a stop (SIGINT, SIGTERM) waits for connections in flight.
    pub(crate) grace: Duration,
    /// The most clients served at once, in all and from one address.
    pub(crate) connections: ConnectionLimits,
    /// When set, clients must present a certificate signed by a CA in this file.
    pub(crate) verify_client: Option<PathBuf>,
    /// Password hashing and login throttling.
    pub(crate) store: StoreOptions,
    /// Also accept TLS 1.3 (TLS 1.2 only by default, as the original).
    pub(crate) allow_tls13: bool,
    /// How often the TLS context, and with it the session-ticket keys, is made anew.
    pub(crate) ticket_key_lifetime: Duration,
    /// Session-ticket keys shared with other instances (80-byte files), reread at each
    /// renewal: the first encrypts, all decrypt. Empty: OpenSSL's own keys, per process.
    pub(crate) ticket_key_files: Vec<PathBuf>,
}

/// One certificate of the server and where its private key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertificateFiles {
    /// PEM file with the certificate (chain).
    pub(crate) cert: PathBuf,
    /// PEM file with its private key (by default the certificate's file).
    pub(crate) key: PathBuf,
}

impl CertificateFiles {
    /// The `--cert` files paired by order with the `--key` files: the first key is the first
    /// certificate's, and a certificate without a key of its own has it in its file. Without
    /// any `--cert`, the certificate is `mycert.pem`. More keys than certificates is an error.
    fn pair(certs: Vec<String>, keys: Vec<String>) -> Result<Vec<CertificateFiles>, String> {
        let certs = if certs.is_empty() {
            vec![DEFAULT_CERT.to_string()]
        } else {
            certs
        };
        if keys.len() > certs.len() {
            return Err(format!(
                "more --key than --cert: {} keys for {} certificate{} ({}); the first --key \
                 is the first --cert's, the second the second's",
                keys.len(),
                certs.len(),
                if certs.len() == 1 { "" } else { "s" },
                certs.join(", ")
            ));
        }
        let mut keys = keys.into_iter();
        Ok(certs
            .into_iter()
            .map(|cert| {
                let cert = PathBuf::from(cert);
                let key = keys.next().map_or_else(|| cert.clone(), PathBuf::from);
                CertificateFiles { cert, key }
            })
            .collect())
    }
}

/// How long each wait of a connection may last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The whole TLS handshake.
    pub(crate) handshake: Duration,
    /// Each read and write.
    pub(crate) io: Duration,
    /// An account session's wait for its next command.
    pub(crate) idle: Duration,
    /// The whole connection, from accept to close (`--session-timeout`).
    pub(crate) connection: Duration,
}

impl ServerConfig {
    /// What the command line `args` asks for (`args[0]` is the program's name). Help, version
    /// and usage errors are printed and give the exit status instead.
    pub fn from_args(args: &[String]) -> Result<ServerConfig, ExitCode> {
        parse_config(&command_line(args), args)
    }
}

/// The server's command line: its usage line as the original printed it.
pub(super) fn command_line(args: &[String]) -> CommandLine {
    CommandLine::new(args, "Usage: {argv0} <portnum>", ABOUT, 1..=1).expecting("a port number")
}

fn parse_config(cli: &CommandLine, args: &[String]) -> Result<ServerConfig, ExitCode> {
    let mut opts = Options::new();
    opts.optopt(
        "",
        "bind",
        "listen on this address only (default: every interface, IPv4 and IPv6)",
        "ADDR",
    );
    opts.optopt(
        "",
        "metrics",
        "serve GET /metrics (Prometheus text) and GET /healthz (200 when the store answers \
         within a second, else 503) over HTTP on this address [off]",
        "ADDR:PORT",
    );
    opts.optmulti(
        "",
        "proxy-protocol-from",
        "connections from this address range (a CIDR with its host bits clear, 10.0.0.0/8, or \
         one address) must start with a PROXY protocol header (v1 or v2, as HAProxy's \
         send-proxy), whose client address is then the client's; repeatable; from other \
         addresses a header is never believed [none]",
        "CIDR",
    );
    opts.optmulti(
        "",
        "cert",
        &format!(
            "certificate (PEM, may hold the key too); repeatable, at most one per key type \
             (an RSA and an ECDSA one: OpenSSL picks per client from the suites it offers) \
             [{DEFAULT_CERT}]"
        ),
        "FILE",
    );
    opts.optmulti(
        "",
        "key",
        "private key (PEM); repeatable, paired by order with --cert: the first --key is the \
         first --cert's [the --cert file]",
        "FILE",
    );
    opts.optopt(
        "",
        "db",
        "the account store: a SQLite file (PATH or sqlite:PATH), or a PostgreSQL database \
         shared by several servers (postgres://USER@HOST[:PORT]/DBNAME, the password in \
         PGPASSWORD: one written in the URL, postgres://USER:PASSWORD@..., can be read by \
         other local users in the process list) [users.db]",
        "URL",
    );
    opts.optflag(
        "",
        "demo",
        "create the original's account aticle/123 if missing (weak password: demo only)",
    );
    for (flag, what, default, max) in DURATION_FLAGS {
        opts.optopt("", flag, &duration_help(what, default, max), "SECS");
    }
    opts.optmulti(
        "",
        "ticket-key-file",
        "session-ticket key shared with other servers (80 bytes: `make ticket-key`), mode \
         600; repeatable: the first encrypts, all decrypt; reread every --ticket-key-lifetime \
         [own keys, drawn at each renewal]",
        "FILE",
    );
    opts.optopt(
        "",
        "max-clients",
        &format!(
            "clients served at once; when all places are taken, the connection that has waited \
             longest without sending a request is closed for a new one [{DEFAULT_MAX_CLIENTS}]"
        ),
        "N",
    );
    opts.optopt(
        "",
        "max-per-address",
        &format!(
            "connections one client address (an IPv6 /64) may hold at once \
             [{DEFAULT_MAX_PER_ADDRESS}]"
        ),
        "N",
    );
    opts.optflag("", "allow-tls13", "accept TLS 1.3 as well as TLS 1.2");
    opts.optopt(
        "",
        "verify-client",
        "require a client certificate signed by a CA in this file (without it, a \
         certificate is asked for but not required: any one may sign in once enrolled)",
        "CAFILE",
    );
    opts.optopt(
        "",
        "hash-iterations",
        &format!("PBKDF2 iterations for new password hashes [{DEFAULT_ITERATIONS}]"),
        "N",
    );
    let defaults = StoreOptions::default();
    opts.optopt(
        "",
        "hash-threads",
        &format!(
            "password hashes computed at once [the number of cores but one, at least 1: {}]",
            defaults.hash_threads
        ),
        "N",
    );
    opts.optopt(
        "",
        "hash-wait",
        &duration_help(
            "seconds a command may wait for its turn to hash a password",
            defaults.hash_wait.as_secs(),
            MAX_HASH_WAIT,
        ),
        "SECS",
    );
    opts.optopt(
        "",
        "max-login-failures",
        &format!(
            "failed logins for one account before refusals begin [{}]",
            defaults.throttle.per_account
        ),
        "N",
    );
    opts.optopt(
        "",
        "max-address-failures",
        &format!(
            "failed logins from one address before refusals begin [{}]",
            defaults.throttle.per_address
        ),
        "N",
    );
    opts.optopt(
        "",
        "max-logins-per-account",
        &format!(
            "successful password checks (logins, and the passwords that confirm passwd and \
             delete) for one account a minute; past it, checks are refused until the minute \
             ends [{}]",
            defaults.throttle.successes_per_account
        ),
        "N",
    );
    opts.optopt(
        "",
        "max-logins-per-address",
        &format!(
            "successful password checks from one address (an IPv6 /64) a minute [{}]",
            defaults.throttle.successes_per_address
        ),
        "N",
    );
    opts.optopt(
        "",
        "max-signups-per-address",
        &format!(
            "signups from one address before refusals begin [{}]",
            defaults.throttle.signups_per_address
        ),
        "N",
    );
    let m = cli.parse(opts, args)?;

    let port = cli.port(&m.free[0])?;
    let bind = match m.opt_str("bind") {
        None => None,
        Some(text) => Some(
            text.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| cli.usage_error(&format!("--bind: {text:?} is not an IP address")))?,
        ),
    };
    let proxy_protocol_from = TrustedProxies::parse(&m.opt_strs("proxy-protocol-from"))
        .map_err(|e| cli.usage_error(&format!("--proxy-protocol-from: {e}")))?;
    for net in proxy_protocol_from.everyone() {
        log::warn!(
            "--proxy-protocol-from {net} trusts every client: any of them can forge its address \
             in a PROXY header, and so escape the per-address cap and login throttling; give \
             the load balancers' addresses only"
        );
    }
    let mut waits = [Duration::ZERO; DURATION_FLAGS.len()];
    for (wait, (flag, _, default, max)) in waits.iter_mut().zip(DURATION_FLAGS) {
        *wait = cli.seconds(&m, flag, default, max)?;
    }
    let [handshake, io, idle, connection, ticket_key_lifetime, grace] = waits;
    let connections = ConnectionLimits {
        total: cli.number(&m, "max-clients", DEFAULT_MAX_CLIENTS)?,
        per_address: cli.number(&m, "max-per-address", DEFAULT_MAX_PER_ADDRESS)?,
    };
    if connections.total == 0 || connections.per_address == 0 {
        return Err(cli.usage_error("--max-clients and --max-per-address must be at least 1"));
    }
    let iterations: u32 = cli.number(&m, "hash-iterations", DEFAULT_ITERATIONS)?;
    let mut store = StoreOptions {
        hash: Pbkdf2Params::new(iterations)
            .map_err(|e| cli.usage_error(&format!("--hash-iterations: {e}")))?,
        hash_threads: cli.number(&m, "hash-threads", defaults.hash_threads)?,
        hash_wait: cli.seconds(&m, "hash-wait", defaults.hash_wait.as_secs(), MAX_HASH_WAIT)?,
        ..defaults
    };
    store.throttle.per_account =
        cli.number(&m, "max-login-failures", defaults.throttle.per_account)?;
    store.throttle.per_address =
        cli.number(&m, "max-address-failures", defaults.throttle.per_address)?;
    store.throttle.signups_per_address = cli.number(
        &m,
        "max-signups-per-address",
        defaults.throttle.signups_per_address,
    )?;
    store.throttle.successes_per_account = cli.number(
        &m,
        "max-logins-per-account",
        defaults.throttle.successes_per_account,
    )?;
    store.throttle.successes_per_address = cli.number(
        &m,
        "max-logins-per-address",
        defaults.throttle.successes_per_address,
    )?;
    let throttle = store.throttle;
    if [
        throttle.per_account,
        throttle.per_address,
        throttle.signups_per_address,
        throttle.successes_per_account,
        throttle.successes_per_address,
    ]
    .contains(&0)
        || store.hash_threads == 0
    {
        return Err(cli.usage_error(
            "--hash-threads, --max-login-failures, --max-address-failures, \
             --max-logins-per-account, --max-logins-per-address and --max-signups-per-address \
             must be at least 1",
        ));
    }
    let metrics = match m.opt_str("metrics") {
        None => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| cli.usage_error(&format!("--metrics: {text:?} is not ADDR:PORT")))?,
        ),
    };
    let db_text = m.opt_str("db").unwrap_or_else(|| "users.db".into());
    let db =
        StoreLocation::parse(&db_text).map_err(|why| cli.usage_error(&format!("--db: {why}")))?;
    let certificates = CertificateFiles::pair(m.opt_strs("cert"), m.opt_strs("key"))
        .map_err(|why| cli.usage_error(&why))?;
    Ok(ServerConfig {
        port,
        bind,
        metrics,
        proxy_protocol_from,
        certificates,
        db,
        demo: m.opt_present("demo"),
        limits: Limits {
            handshake,
            io,
            idle,
            connection,
        },
        grace,
        connections,
        verify_client: m.opt_str("verify-client").map(PathBuf::from),
        store,
        allow_tls13: m.opt_present("allow-tls13"),
        ticket_key_lifetime,
        ticket_key_files: m
            .opt_strs("ticket-key-file")
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn files(cert: &str, key: &str) -> CertificateFiles {
        CertificateFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }

    #[test]
    fn certificates_pair_with_keys_by_order() {
        let parse = |args: &[&str]| {
            let a: Vec<String> = std::iter::once("server")
                .chain(args.iter().copied())
                .chain(["0"])
                .map(String::from)
                .collect();
            parse_config(&command_line(&a), &a).map(|c| c.certificates)
        };
        // The keys inside the files, the form `--cert A --cert B`.
        assert_eq!(
            parse(&["--cert", "rsa.pem", "--cert", "ec.pem"]).unwrap(),
            [files("rsa.pem", "rsa.pem"), files("ec.pem", "ec.pem")]
        );
        // The first --key is the first --cert's wherever it stands; the second --cert has
        // its key in its file.
        assert_eq!(
            parse(&["--key", "rsa.key", "--cert", "rsa.pem", "--cert", "ec.pem"]).unwrap(),
            [files("rsa.pem", "rsa.key"), files("ec.pem", "ec.pem")]
        );
        assert_eq!(
            parse(&[
                "--cert", "rsa.pem", "--key", "rsa.key", "--cert", "ec.pem", "--key", "ec.key"
            ])
            .unwrap(),
            [files("rsa.pem", "rsa.key"), files("ec.pem", "ec.key")]
        );
        // A --key alone is the default certificate's, as before.
        assert_eq!(
            parse(&["--key", "other.key"]).unwrap(),
            [files("mycert.pem", "other.key")]
        );
        let more_keys = CertificateFiles::pair(vec!["a.pem".into()], vec!["a".into(), "b".into()]);
        assert_eq!(
            more_keys.unwrap_err(),
            "more --key than --cert: 2 keys for 1 certificate (a.pem); the first --key is the \
             first --cert's, the second the second's"
        );
        assert!(parse(&["--key", "a", "--key", "b"]).is_err());
        assert!(parse(&["--cert", "a", "--key", "a", "--key", "b"]).is_err());
    }

    #[test]
    fn durations_are_bounded() {
        let parse = |flag: &str, value: &str| {
            let a: Vec<String> = ["server", flag, value, "0"].map(String::from).to_vec();
            parse_config(&command_line(&a), &a)
        };
        for (flag, longest) in [
            ("--handshake-timeout", 3600),
            ("--timeout", 86_400),
            ("--idle-timeout", 86_400),
            ("--session-timeout", 604_800),
            ("--ticket-key-lifetime", 604_800),
            ("--grace-period", 86_400),
            ("--hash-wait", 3600),
        ] {
            assert!(
                parse(flag, &longest.to_string()).is_ok(),
                "{flag} {longest}"
            );
            assert!(parse(flag, "1").is_ok(), "{flag} 1");
            for bad in [
                (longest + 1).to_string(),
                u64::MAX.to_string(),
                "0".into(),
                "-1".into(),
            ] {
                assert!(parse(flag, &bad).is_err(), "{flag} {bad}");
            }
        }
    }

    #[test]
    fn config_defaults_and_checks() {
        let args = |extra: &[&str]| -> Vec<String> {
            std::iter::once("server")
                .chain(extra.iter().copied())
                .map(String::from)
                .collect()
        };
        let a = args(&["8081"]);
        let cli = command_line(&a);
        let config = parse_config(&cli, &a).unwrap();
        assert_eq!(config.port, 8081);
        assert_eq!(config.certificates, [files("mycert.pem", "mycert.pem")]);
        assert_eq!(config.limits.io, Duration::from_secs(30));
        assert_eq!(config.limits.handshake, Duration::from_secs(10));
        assert_eq!(config.limits.idle, Duration::from_secs(300));
        assert_eq!(config.limits.connection, Duration::from_secs(3600));
        assert_eq!(config.grace, Duration::from_secs(10));
        assert_eq!(config.connections.total, 1024);
        assert_eq!(config.connections.per_address, 256);
        assert_eq!(config.store.hash, Pbkdf2Params::default());
        assert_eq!(config.store.throttle.per_account, 5);
        for bad in [
            &["80810"][..],
            &["--timeout", "0", "8081"],
            &["--session-timeout", "-1", "8081"],
            &["--max-clients", "x", "8081"],
            &["--bind", "localhost", "8081"],
            &["--hash-iterations", "5", "8081"],
            &["--proxy-protocol-from", "10.0.0.0/33", "8081"],
        ] {
            let a = args(bad);
            assert!(parse_config(&cli, &a).is_err(), "{bad:?}");
        }
        let a = args(&["--bind", "[::1]", "--cert", "c.pem", "0"]);
        let config = parse_config(&cli, &a).unwrap();
        assert_eq!(config.bind, Some(Ipv6Addr::LOCALHOST.into()));
        assert_eq!(config.certificates, [files("c.pem", "c.pem")]);
        assert_eq!(config.proxy_protocol_from, TrustedProxies::default());
        let a = args(&[
            "--proxy-protocol-from",
            "10.0.0.0/8",
            "--proxy-protocol-from",
            "::1/128",
            "0",
        ]);
        let config = parse_config(&cli, &a).unwrap();
        assert_eq!(
            config.proxy_protocol_from,
            TrustedProxies::parse(&["10.0.0.0/8", "::1/128"]).unwrap()
        );
    }
}
