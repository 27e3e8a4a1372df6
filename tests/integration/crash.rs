//! Crash safety: writes through the real client while the server is killed with SIGKILL at
//! random moments; after each restart every acknowledged signup, update, password change and
//! delete must be there, and the database must pass `PRAGMA integrity_check`.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::pg::cluster;
use crate::common::*;

const ROUNDS: usize = 5;
const WRITERS: usize = 4;

/// One user's life, in order; a step is acknowledged when the client exits 0.
const STEPS: [&str; 5] = ["signup", "update v1", "passwd", "update v3", "delete"];

/// What one user got to: the last acknowledged step, and the one in flight when the server
/// died (it may or may not have been committed; it was not acknowledged).
#[derive(Clone, Debug)]
pub struct Progress {
    user: String,
    acked: Option<usize>,
    in_flight: Option<usize>,
}

fn passwords(user: &str) -> [String; 2] {
    [format!("{user}-first-pw"), format!("{user}-second-pw")]
}

/// Runs step `step` for `user`; true if acknowledged.
fn run_step(fx: &Fixture, server: &impl Listening, user: &str, step: usize) -> bool {
    let [p0, p1] = passwords(user);
    let out = match step {
        0 => fx.command(
            server,
            &["--user", user, "--set", "full_name=v0"],
            "signup",
            &format!("{p0}\n"),
        ),
        1 => fx.command(
            server,
            &["--user", user, "--set", "full_name=v1"],
            "update",
            &format!("{p0}\n"),
        ),
        2 => fx.command(
            server,
            &["--user", user],
            "passwd",
            &format!("{p0}\n{p1}\n"),
        ),
        3 => fx.command(
            server,
            &["--user", user, "--set", "full_name=v3"],
            "update",
            &format!("{p1}\n"),
        ),
        _ => fx.command(server, &["--user", user], "delete", &format!("{p1}\n")),
    };
    out.status.success()
}

/// The state after step `step`: (password index, full_name), or `None` once deleted.
fn state_after(step: usize) -> Option<(usize, &'static str)> {
    match step {
        0 => Some((0, "v0")),
        1 => Some((0, "v1")),
        2 => Some((1, "v1")),
        3 => Some((1, "v3")),
        _ => None,
    }
}

/// What the server holds for `user` now: (password index, full_name), or `None`.
fn observed(fx: &Fixture, server: &impl Listening, user: &str) -> Option<(usize, String)> {
    for (index, password) in passwords(user).iter().enumerate() {
        let out = fx.command(server, &["--user", user], "view", &format!("{password}\n"));
        let (_, err) = texts(&out);
        assert!(
            out.status.success() || err.contains(": 2200 "),
            "cannot check {user}: {err}"
        );
        if out.status.success() {
            let (text, _) = texts(&out);
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("full_name: "))
                .unwrap_or_default()
                .to_string();
            return Some((index, name));
        }
    }
    None
}

/// Whether what is held agrees with an acknowledged step and, at most, the one in flight.
fn consistent(progress: &Progress, seen: &Option<(usize, String)>) -> bool {
    let Some(acked) = progress.acked else {
        return true; // nothing acknowledged: anything (or nothing) is fine
    };
    let allowed: Vec<Option<(usize, &str)>> = [Some(acked), progress.in_flight]
        .into_iter()
        .flatten()
        .map(state_after)
        .collect();
    let seen = seen.as_ref().map(|(p, n)| (*p, n.as_str()));
    allowed.contains(&seen)
}

fn integrity(fx: &Fixture) -> String {
    let out = Command::new("sqlite3")
        .arg(fx.path().join("users.db"))
        .arg("PRAGMA integrity_check")
        .output()
        .expect("sqlite3");
    texts(&out).0.trim().to_string()
}

fn random_below(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos.wrapping_mul(6364136223846793005).rotate_left(17) % n
}

/// Users' lives written through `server` by [`WRITERS`] clients at once, until the server is
/// killed with SIGKILL at a random moment; what each got to.
fn write_until_killed(fx: &Fixture, server: &Server, round: usize) -> Vec<Progress> {
    write_until(fx, server, server, round)
}

/// Tells [`write_until`]'s writers, when dropped, that the victim was killed.
struct StopWriters<'a>(&'a AtomicBool);

impl Drop for StopWriters<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Users' lives written through `target` by [`WRITERS`] clients at once, until `victim` is
/// killed with SIGKILL at a random moment and each writer's next step fails, or (through a
/// fleet whose other instance serves on) its user's life ends; what each got to.
pub fn write_until(
    fx: &Fixture,
    target: &(impl Listening + Sync),
    victim: &Server,
    round: usize,
) -> Vec<Progress> {
    let progress: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let killed = AtomicBool::new(false);
    let kill_after = Duration::from_millis(300 + random_below(1200));
    let started = Instant::now();
    thread::scope(|s| {
        for w in 0..WRITERS {
            let (progress, killed) = (progress.clone(), &killed);
            s.spawn(move || {
                for n in 0.. {
                    if killed.load(Ordering::SeqCst) {
                        return;
                    }
                    let user = format!("r{round}w{w}u{n}");
                    let mut p = Progress {
                        user: user.clone(),
                        acked: None,
                        in_flight: None,
                    };
                    for step in 0..STEPS.len() {
                        if run_step(fx, target, &user, step) {
                            p.acked = Some(step);
                        } else {
                            p.in_flight = Some(step);
                            break;
                        }
                    }
                    let dead = p.in_flight.is_some();
                    progress.lock().unwrap().push(p);
                    if dead {
                        return;
                    }
                }
            });
        }
        thread::sleep(kill_after.saturating_sub(started.elapsed()));
        // Set however the kill ends: a failed one must not leave the writers going.
        let _stop_writers = StopWriters(&killed);
        signal(&victim.child, "KILL");
    });
    Arc::try_unwrap(progress).unwrap().into_inner().unwrap()
}

/// Checks every user's state through `server`: counts the acknowledged writes, and notes
/// each one lost.
pub fn check(
    fx: &Fixture,
    server: &impl Listening,
    progress: &[Progress],
    acknowledged: &mut usize,
    lost: &mut Vec<String>,
) {
    for p in progress {
        *acknowledged += p.acked.map_or(0, |a| a + 1);
        let seen = observed(fx, server, &p.user);
        if !consistent(p, &seen) {
            lost.push(format!("{p:?}: server holds {seen:?}"));
        }
    }
}

/// Prints what a crash test did, and fails it if an acknowledged write was lost or none was
/// acknowledged (then it proved nothing).
pub fn report(what: &str, acknowledged: usize, lost: &[String]) {
    println!(
        "{what}: {acknowledged} acknowledged writes, {} lost",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost:\n{}",
        lost.join("\n")
    );
    assert!(
        acknowledged > 0,
        "no write was acknowledged: the test proved nothing"
    );
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let fx = Fixture::new();
    let mut acknowledged = 0;
    let mut lost = Vec::new();
    // The checks try wrong passwords on purpose: no login throttling by address here.
    let unthrottled = ["--max-address-failures", "1000000"];
    for round in 0..ROUNDS {
        let server = fx.server(&unthrottled);
        let progress = write_until_killed(&fx, &server, round);
        drop(server);
        assert_eq!(
            integrity(&fx),
            "ok",
            "round {round}: integrity check failed"
        );

        let restarted = fx.server(&unthrottled);
        check(&fx, &restarted, &progress, &mut acknowledged, &mut lost);
        assert!(restarted.terminate().success());
    }
    report(
        &format!("crash test: {ROUNDS} runs, {ROUNDS} kills (SIGKILL)"),
        acknowledged,
        &lost,
    );
}

#[test]
fn killing_one_of_two_instances_on_postgres_loses_no_acknowledged_write() {
    let fx = Fixture::new();
    let url = cluster().new_database();
    let args = ["--db", url.as_str(), "--max-address-failures", "1000000"];
    let survivor = fx.server(&args);
    let (mut acknowledged, mut lost) = (0, Vec::new());
    for round in 0..3 {
        let victim = fx.server(&args);
        let progress = write_until_killed(&fx, &victim, round);
        drop(victim);
        // The other instance goes on serving, and holds every acknowledged write.
        check(&fx, &survivor, &progress, &mut acknowledged, &mut lost);
    }
    report(
        "two instances on PostgreSQL, 3 kills (SIGKILL)",
        acknowledged,
        &lost,
    );
}

#[test]
fn the_checker_tells_lost_writes_from_kept_ones() {
    let p = |acked, in_flight| Progress {
        user: "u".into(),
        acked,
        in_flight,
    };
    let held = |pw: usize, name: &str| Some((pw, name.to_string()));
    assert!(consistent(&p(Some(1), None), &held(0, "v1")));
    assert!(
        !consistent(&p(Some(1), None), &held(0, "v0")),
        "a lost update"
    );
    assert!(!consistent(&p(Some(0), None), &None), "a lost signup");
    assert!(
        consistent(&p(Some(1), Some(2)), &held(1, "v1")),
        "in flight, committed"
    );
    assert!(
        consistent(&p(Some(1), Some(2)), &held(0, "v1")),
        "in flight, not committed"
    );
    assert!(
        !consistent(&p(Some(2), None), &held(0, "v1")),
        "a lost password change"
    );
    assert!(
        !consistent(&p(Some(4), None), &held(1, "v3")),
        "a lost delete"
    );
    assert!(consistent(&p(Some(3), Some(4)), &None));
    assert!(consistent(&p(None, Some(0)), &None));
}
