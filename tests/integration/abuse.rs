//! Scanners, guessers, hoarders and floods: limits that hold, and others still served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

fn login(user: &str, password: &str) -> String {
    format!("<login><username>{user}</username><password>{password}</password></login>")
}

#[test]
fn hundreds_of_silent_connections_delay_nobody() {
    let fx = Fixture::new();
    // All from one address: lift its cap (default 256), which floods.rs tests.
    let server = fx.server(&[
        "--demo",
        "--timeout",
        "120",
        "--handshake-timeout",
        "120",
        "--max-per-address",
        "1000",
    ]);
    let silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    server.stdout.wait_for("300 connections", |t| {
        t.matches("Connection: ").count() >= 300
    });
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            exchange(&server.addr(), &request("aticle", "123")),
            VALID_REPLY
        );
    }
    // 120 s timeouts: answers long before them mean nobody waited for the silent ones.
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(silent);
}

#[test]
fn an_idle_session_is_closed_after_the_idle_timeout() {
    let fx = Fixture::new();
    let server = fx.server(&["--idle-timeout", "1", "--timeout", "30"]);
    let mut ssl = tls_connect(&server.addr());
    assert_eq!(code(&call(&mut ssl, "<hello/>")), "1000");
    let started = Instant::now();
    assert_eq!(read_to_close(&mut ssl), b"");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
}

#[test]
fn a_trickled_command_gets_one_timeout_from_its_first_byte() {
    let fx = Fixture::new();
    let server = fx.server(&["--timeout", "2", "--idle-timeout", "60"]);
    let mut ssl = tls_connect(&server.addr());
    assert_eq!(code(&call(&mut ssl, "<hello/>")), "1000");
    let started = Instant::now();
    let mut closed = false;
    for byte in frame("<hello/>") {
        thread::sleep(Duration::from_millis(500));
        if ssl.write_all(&[byte]).is_err() {
            closed = true;
            break;
        }
    }
    // Each byte came well within the 2 s per read, but the command as a whole did not.
    if !closed {
        assert_eq!(
            read_to_close(&mut ssl),
            b"",
            "the trickled command was answered"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn thousands_of_namespace_declarations_are_refused_at_once() {
    let fx = Fixture::new();
    let mut server = fx.server(&[]);
    let many: String = (0..4000).map(|i| format!(" xmlns:n{i}=\"u\"")).collect();
    let document = format!("<hello{many}>{}</hello>", "<b/>".repeat(60));
    let mut ssl = tls_connect(&server.addr());
    let reply = call(&mut ssl, &document);
    assert!(
        reply.contains("namespace declarations are not allowed"),
        "{reply}"
    );
    assert!(server.child.try_wait().unwrap().is_none());
}

#[test]
fn a_session_ends_at_the_session_timeout_however_busy() {
    let fx = Fixture::new();
    let server = fx.server(&["--session-timeout", "2"]);
    let mut ssl = tls_connect(&server.addr());
    let started = Instant::now();
    let mut ended = false;
    while started.elapsed() < Duration::from_secs(20) {
        if ssl.write_all(&frame("<hello/>")).is_err() {
            ended = true;
            break;
        }
        let mut header = [0u8; 4];
        if ssl.read_exact(&mut header).is_err() {
            ended = true;
            break;
        }
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize - 4];
        if ssl.read_exact(&mut body).is_err() {
            ended = true;
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(ended, "a busy session outlived --session-timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn guessing_one_account_is_refused_with_a_growing_wait() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo"]);
    let mut ssl = tls_connect(&server.addr());
    for _ in 0..5 {
        assert_eq!(code(&call(&mut ssl, &login("aticle", "guess"))), "2200");
    }
    let refused = call(&mut ssl, &login("aticle", "123"));
    assert_eq!(code(&refused), "2502", "{refused}");
    assert!(
        refused.contains("<retry_after>1</retry_after>"),
        "{refused}"
    );
    // An unknown name is refused in the same way: the refusal tells nothing.
    for _ in 0..5 {
        assert_eq!(code(&call(&mut ssl, &login("nobody", "guess"))), "2200");
    }
    let unknown = call(&mut ssl, &login("nobody", "guess"));
    assert_eq!(code(&unknown), "2502");
    // The legacy exchange is refused too while the account is throttled...
    assert_eq!(
        exchange(&server.addr(), &request("aticle", "123")),
        b"Invalid Message"
    );
    // ...and the owner gets in once the wait is over; the next refusal is longer.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(code(&call(&mut ssl, &login("aticle", "123"))), "1000");
    assert_eq!(code(&call(&mut ssl, "<logout/>")), "1500");
}

#[test]
fn guessing_from_one_address_is_refused_across_accounts() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--max-address-failures", "6"]);
    let mut ssl = tls_connect(&server.addr());
    for i in 0..6 {
        let reply = call(&mut ssl, &login(&format!("user{i}"), "guess"));
        assert_eq!(code(&reply), "2200");
    }
    let refused = call(&mut ssl, &login("aticle", "123"));
    assert_eq!(code(&refused), "2502", "{refused}");
}

#[test]
fn logins_complete_under_a_flood_of_signups() {
    let fx = Fixture::new();
    // One hashing place and the full default cost: the flood queues for it.
    let server = fx.server(&[
        "--hash-threads",
        "1",
        "--hash-iterations",
        "220000",
        "--hash-wait",
        "60",
    ]);
    let signup = |user: &str| {
        format!("<signup><username>{user}</username><password>flood-password</password></signup>")
    };
    let mut first = tls_connect(&server.addr());
    assert_eq!(code(&call(&mut first, &signup("victim"))), "1000");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..6)
        .map(|t| {
            let (addr, stop) = (server.addr(), stop.clone());
            thread::spawn(move || {
                let mut ssl = tls_connect(&addr);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let user = format!("flood{t}x{n}");
                    let doc = format!(
                        "<signup><username>{user}</username><password>flood-password</password></signup>"
                    );
                    call(&mut ssl, &doc);
                    n += 1;
                }
                n
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    // Meanwhile: handshakes and commands that need no hash are answered, and logins wait
    // their turn in order and succeed.
    for _ in 0..3 {
        let mut ssl = tls_connect(&server.addr());
        assert_eq!(code(&call(&mut ssl, "<hello/>")), "1000");
        assert_eq!(
            code(&call(&mut ssl, &login("victim", "flood-password"))),
            "1000"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let signed_up: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    assert!(signed_up > 0);
}

#[test]
fn a_wait_for_the_hash_past_its_limit_gets_a_clear_reply() {
    let fx = Fixture::new();
    let server = fx.server(&[
        "--hash-threads",
        "1",
        "--hash-iterations",
        "2000000",
        "--hash-wait",
        "1",
    ]);
    let addr = server.addr();
    // Three signups at once, each hash taking seconds: someone waits more than 1 s.
    let replies: Vec<String> = (0..3)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut ssl = tls_connect(&addr);
                call(
                    &mut ssl,
                    &format!(
                        "<signup><username>slow{i}</username><password>slow-password</password></signup>"
                    ),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let busy: Vec<&String> = replies.iter().filter(|r| code(r) == "2502").collect();
    assert!(!busy.is_empty(), "{replies:?}");
    assert!(busy[0].contains("the server is busy"), "{}", busy[0]);
    assert!(busy[0].contains("<retry_after>1</retry_after>"));
}

#[test]
fn ticket_keys_rotate_and_serving_goes_on() {
    let fx = Fixture::new();
    let server = fx.server(&["--demo", "--ticket-key-lifetime", "1"]);
    server
        .stderr
        .wait_for("a rotation", |t| t.contains("session-ticket keys replaced"));
    assert_eq!(
        exchange(&server.addr(), &request("aticle", "123")),
        VALID_REPLY
    );
}

#[test]
fn guesses_from_many_addresses_do_not_lock_the_owner_out_where_he_logs_in() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    let mut home = tls_connect(&server.addr());
    let signup = "<signup><username>owner1</username><password>owner-password</password></signup>";
    assert_eq!(code(&call(&mut home, signup)), "1000");
    assert_eq!(
        code(&call(&mut home, &login("owner1", "owner-password"))),
        "1000"
    );
    // Twenty guesses from ten addresses.
    for n in 1..=10 {
        let mut guesser = tls_connect_from(&format!("127.0.5.{n}"), &server.addr());
        for _ in 0..2 {
            let reply = call(&mut guesser, &login("owner1", "guess"));
            assert!(["2200", "2502"].contains(&code(&reply)), "{reply}");
        }
    }
    // The name is refused at an address it has never logged in from, even with the password.
    // A refusal may end just before the stranger comes on a loaded machine (and his success
    // then clears the name's count): each try guesses until the name is refused again.
    let refused = (0..5).any(|n| {
        let mut guesser = tls_connect_from(&format!("127.0.5.{}", 20 + n), &server.addr());
        for _ in 0..6 {
            if code(&call(&mut guesser, &login("owner1", "guess"))) == "2502" {
                break;
            }
        }
        let mut stranger = tls_connect_from(&format!("127.0.5.{}", 90 + n), &server.addr());
        let reply = call(&mut stranger, &login("owner1", "owner-password"));
        assert!(["1000", "2502"].contains(&code(&reply)), "{reply}");
        code(&reply) == "2502"
    });
    assert!(refused, "the name was never refused at a new address");
    // Not where the owner logs in.
    let mut again = tls_connect(&server.addr());
    assert_eq!(
        code(&call(&mut again, &login("OWNER1", "owner-password"))),
        "1000"
    );
}

#[test]
fn guessing_through_passwd_is_throttled() {
    let fx = Fixture::new();
    let server = fx.in_process(&[]);
    let mut ssl = tls_connect(&server.addr());
    let signup = "<signup><username>keeper</username><password>keeper-password</password></signup>";
    assert_eq!(code(&call(&mut ssl, signup)), "1000");
    assert_eq!(
        code(&call(&mut ssl, &login("keeper", "keeper-password"))),
        "1000"
    );
    let passwd = |current: &str| {
        format!(
            "<passwd><password>{current}</password><new_password>new-password-1</new_password></passwd>"
        )
    };
    for _ in 0..5 {
        assert_eq!(code(&call(&mut ssl, &passwd("guess"))), "2200");
    }
    let refused = call(&mut ssl, &passwd("keeper-password"));
    assert_eq!(code(&refused), "2502", "{refused}");
    assert!(refused.contains("too many wrong passwords"), "{refused}");
    assert!(refused.contains("<retry_after>"), "{refused}");
    let delete = "<delete><password>keeper-password</password></delete>";
    assert_eq!(code(&call(&mut ssl, delete)), "2502");
}
