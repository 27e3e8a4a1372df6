//! The database's primary lost under a write load: a real etcd and two PostgreSQL 15 nodes
//! under real Patroni (synchronous replication), two server instances on the multi-host URL
//! (`target_session_attrs=read-write`), a signup loop through each. The primary is killed,
//! hung (SIGSTOP) or switched over; the instances must write again within the bounds,
//! answer every command in time, and lose nothing they acknowledged.
//!
//! The two tests may run side by side, each on a cluster of its own (`make test` runs them
//! so): they wait on Patroni's timers, under half a core together, and their figures are those
//! of one at a time.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::patroni::Patroni;
use crate::common::*;

/// How long a new primary may take to be promoted (Patroni's TTL is 12 s).
const PROMOTION_PATIENCE: Duration = Duration::from_secs(45);

/// One write of the load, as its sender saw it.
struct Answer {
    /// When it was sent, from the load's start, and how long its answer took.
    sent: Duration,
    took: Duration,
    /// The reply's code (`None`: the connection failed).
    code: Option<String>,
    name: String,
}

impl Answer {
    fn answered(&self) -> Duration {
        self.sent + self.took
    }

    fn acknowledged(&self) -> bool {
        self.code.as_deref() == Some("1000")
    }
}

/// Signups through each instance, one after another, until stopped.
struct Load {
    start: Instant,
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Vec<Answer>>>,
}

impl Load {
    fn start(servers: &[&Server], round: &str) -> Load {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let writers = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let (addr, stop) = (server.addr(), Arc::clone(&stop));
                let tag = format!("{round}i{i}n");
                thread::spawn(move || write_until(&addr, &tag, start, &stop))
            })
            .collect();
        Load {
            start,
            stop,
            writers,
        }
    }

    /// How long since the load started.
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops the load; each instance's answers.
    fn finish(self) -> Vec<Vec<Answer>> {
        self.stop.store(true, Ordering::SeqCst);
        self.writers
            .into_iter()
            .map(|w| w.join().expect("a writer"))
            .collect()
    }
}

/// Signups of `TAG0`, `TAG1`, ... through `addr`, each waiting for its answer (at most 30 s),
/// pacing 10 ms, until `stop`.
fn write_until(addr: &str, tag: &str, start: Instant, stop: &AtomicBool) -> Vec<Answer> {
    let mut answers = Vec::new();
    let mut session = None;
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let ssl = session.get_or_insert_with(|| {
            let tcp = TcpStream::connect(addr).expect("the instance");
            let ssl = tls_over(tcp);
            ssl.get_ref()
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            ssl
        });
        let name = format!("{tag}{n}");
        let document = format!(
            "<signup><username>{name}</username><password>failover-password</password></signup>"
        );
        let sent = start.elapsed();
        let asked = Instant::now();
        let reply = ssl
            .write_all(&frame(&document))
            .ok()
            .and_then(|()| try_read_reply(ssl));
        let took = asked.elapsed();
        let code = reply.as_deref().map(|r| code(r).to_string());
        if code.is_none() {
            session = None;
        }
        answers.push(Answer {
            sent,
            took,
            code,
            name,
        });
        thread::sleep(Duration::from_millis(10));
    }
    answers
}

/// What one instance's load saw around an event at `event` (from the load's start).
#[derive(Debug)]
struct Outage {
    /// From the event to the first acknowledged write after the last failed one (zero if
    /// none failed).
    back_after: Duration,
    refusals: usize,
    /// The slowest refusal, and the slowest answer of any kind, after the event.
    slowest_refusal: Duration,
    slowest: Duration,
    acknowledged: usize,
}

fn outage(answers: &[Answer], event: Duration) -> Outage {
    let after: Vec<&Answer> = answers.iter().filter(|a| a.answered() >= event).collect();
    let failed: Vec<&&Answer> = after.iter().filter(|a| !a.acknowledged()).collect();
    let last_failure = failed.iter().map(|a| a.answered()).max();
    let back = match last_failure {
        None => event,
        Some(last) => after
            .iter()
            .filter(|a| a.acknowledged() && a.sent >= last)
            .map(|a| a.answered())
            .min()
            .unwrap_or_else(|| panic!("no write acknowledged after the last failure")),
    };
    Outage {
        back_after: back.saturating_sub(event),
        refusals: failed.len(),
        slowest_refusal: failed.iter().map(|a| a.took).max().unwrap_or_default(),
        slowest: after.iter().map(|a| a.took).max().unwrap_or_default(),
        acknowledged: answers.iter().filter(|a| a.acknowledged()).count(),
    }
}

/// Runs the load until every instance wrote after `event`'s outage (or `patience` passed),
/// then stops it; each instance's outage.
fn load_through(load: Load, event: Duration, patience: Duration) -> (Vec<Outage>, Vec<Answer>) {
    let deadline = event + patience;
    // Enough time after the event for the instances to fail, then write again.
    thread::sleep(Duration::from_secs(2));
    while load.now() < deadline {
        thread::sleep(Duration::from_millis(500));
    }
    let answers = load.finish();
    let outages = answers.iter().map(|a| outage(a, event)).collect();
    (outages, answers.into_iter().flatten().collect())
}

/// The names acknowledged in `answers` that node `n` does not have.
fn lost(cluster: &Patroni, n: usize, answers: &[Answer]) -> Vec<String> {
    let kept: HashSet<String> = cluster
        .psql(n, "SELECT username FROM accounts")
        .expect("the accounts on the new primary")
        .lines()
        .map(str::to_string)
        .collect();
    answers
        .iter()
        .filter(|a| a.acknowledged() && !kept.contains(&a.name))
        .map(|a| a.name.clone())
        .collect()
}

/// Two instances on `cluster`'s URL.
fn instances(fx: &Fixture, cluster: &Patroni) -> (Server, Server) {
    let url = cluster.url();
    let args = ["--db", url.as_str(), "--max-signups-per-address", "1000000"];
    (fx.server(&args), fx.server(&args))
}

/// A write load through `servers` (its names tagged `tag`), `event` done to the cluster after
/// `warm_up`, then the load run on until `patience` after it, once node `new_primary` is
/// named the primary; prints the figures under `tag` and checks that the new primary has
/// every acknowledged write. Each instance's outage, and every answer.
fn through_event(
    cluster: &mut Patroni,
    servers: &[&Server],
    tag: &str,
    warm_up: Duration,
    event: impl FnOnce(&mut Patroni),
    new_primary: usize,
    patience: Duration,
) -> (Vec<Outage>, Vec<Answer>) {
    let load = Load::start(servers, tag);
    thread::sleep(warm_up);
    let at = load.now();
    event(cluster);
    cluster.wait_until(PROMOTION_PATIENCE, "the new primary", |c| {
        c.primary() == Some(new_primary)
    });
    let promoted = load.now() - at;
    let (outages, answers) = load_through(load, at, patience);
    let missing = lost(cluster, new_primary, &answers);
    eprintln!(
        "{tag}: new primary seen after {promoted:?}; {} writes acknowledged, {} lost; per \
         instance: {outages:?}",
        answers.iter().filter(|a| a.acknowledged()).count(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged and lost: {missing:?}");
    (outages, answers)
}

/// The primary killed (Patroni, postmaster and backends: SIGKILL); then it rejoins as a replica
/// (rewound) and a switchover makes it the primary again.
#[test]
fn the_primary_killed_then_rejoined_and_switched_back() {
    let fx = Fixture::new();
    let mut cluster = Patroni::start();
    let (one, two) = instances(&fx, &cluster);
    let (outages, _) = through_event(
        &mut cluster,
        &[&one, &two],
        "killed",
        Duration::from_secs(3),
        |c| c.kill(0),
        1,
        Duration::from_secs(22),
    );
    for outage in &outages {
        assert!(outage.refusals > 0, "the kill went unseen: {outage:?}");
        assert!(outage.back_after <= Duration::from_secs(20), "{outage:?}");
        assert!(
            outage.slowest_refusal < Duration::from_secs(3),
            "{outage:?}"
        );
        assert!(outage.acknowledged > 0, "{outage:?}");
    }
    for server in [&one, &two] {
        assert!(server.is_running(), "an instance ended");
    }

    // The old primary rejoins as the synchronous standby; a switchover back to it.
    cluster.start_node(0);
    cluster.wait_until(PROMOTION_PATIENCE, "node0 to rejoin as sync standby", |c| {
        c.is_replica(0) && c.is_sync_standby(0)
    });
    let (outages, _) = through_event(
        &mut cluster,
        &[&one, &two],
        "switchover",
        Duration::from_secs(2),
        |c| c.switchover(0),
        0,
        Duration::from_secs(12),
    );
    for outage in &outages {
        assert!(outage.back_after <= Duration::from_secs(10), "{outage:?}");
        assert!(outage.slowest < Duration::from_secs(6), "{outage:?}");
    }
}

/// The primary hung (SIGSTOP of Patroni, postmaster and backends: nothing is reset); then it
/// resumes, and must not take the lead back (nothing acknowledged meanwhile is lost).
#[test]
fn the_primary_hung_is_left_behind_and_resumes_as_a_replica() {
    let fx = Fixture::new();
    let mut cluster = Patroni::start();
    let (one, two) = instances(&fx, &cluster);
    let (outages, answers) = through_event(
        &mut cluster,
        &[&one, &two],
        "hung",
        Duration::from_secs(3),
        |c| c.hang(0),
        1,
        Duration::from_secs(27),
    );
    for outage in &outages {
        assert!(outage.refusals > 0, "the hang went unseen: {outage:?}");
        assert!(outage.back_after <= Duration::from_secs(25), "{outage:?}");
        assert!(outage.slowest <= Duration::from_secs(6), "{outage:?}");
    }

    // Resumed under writes, the old primary finds its lead gone and follows the new one.
    let load = Load::start(&[&one, &two], "resumed");
    thread::sleep(Duration::from_secs(1));
    cluster.resume(0);
    cluster.wait_until(PROMOTION_PATIENCE, "node0 to follow node1", |c| {
        c.is_replica(0) && c.primary() == Some(1)
    });
    thread::sleep(Duration::from_secs(3));
    let resumed: Vec<Answer> = load.finish().into_iter().flatten().collect();
    let missing = lost(&cluster, 1, &answers);
    let missing_since = lost(&cluster, 1, &resumed);
    assert!(
        missing.is_empty() && missing_since.is_empty(),
        "acknowledged and lost after the resume: {missing:?} {missing_since:?}"
    );
    assert!(
        resumed.iter().any(Answer::acknowledged),
        "no write after the resume"
    );
}
