//! The original's exchange on the server's side, the heart of its `Servlet`: the request shown
//! on the console (password masked), its credentials checked against the account store, and
//! the original's 220-byte reply or `Invalid Message` sent back.

use std::io::{self, Write};

use openssl::ssl::SslStream;

use super::metrics::Metrics;
use super::servlet::Shared;
use crate::address::ClientAddress;
use crate::db::{AccountStore, Limit, LoginOutcome};
use crate::deadline::DeadlineStream;
use crate::xml::legacy::{
    LEGACY_INVALID_REPLY, LEGACY_VALID_REPLY, mask_legacy_password, parse_legacy_request, printable,
};
use crate::xml::sign_in::SignInMethod;

/// Why a legacy exchange ended without its reply sent.
pub(super) enum Unanswered {
    /// There was no request: the client closed the connection.
    NoRequest,
    /// The reply could not be sent.
    Send(io::Error),
}

/// Answers `request`, the first bytes a client sent, as the original did: `Client msg: "..."`
/// on the console (with the password masked, also when the request is empty, as the original
/// prints it), then the reply to its credentials, counted in the metrics.
pub(super) fn exchange(
    ssl: &mut SslStream<DeadlineStream>,
    request: &[u8],
    client: ClientAddress,
    shared: &Shared,
) -> Result<(), Unanswered> {
    shared.console.write(&format!(
        "Client msg: \"{}\"\n",
        printable(&mask_legacy_password(request))
    ));
    if request.is_empty() {
        return Err(Unanswered::NoRequest);
    }
    let reply = legacy_reply(&shared.store, &shared.metrics, request, client);
    let result = if reply == LEGACY_VALID_REPLY {
        "valid"
    } else {
        "invalid"
    };
    Metrics::count(&shared.metrics.legacy, "reply", result);
    ssl.write_all(reply).map_err(Unanswered::Send)
}

/// The original's `strcmp(cpValidMessage, buf)`, with the account store in place of its one
/// built-in account: the 220-byte reply for a well-formed request with valid credentials,
/// `Invalid Message` for anything else.
fn legacy_reply(
    store: &AccountStore,
    metrics: &Metrics,
    request: &[u8],
    client: ClientAddress,
) -> &'static [u8] {
    let Some(credentials) = parse_legacy_request(request) else {
        log::info!("{client}: not a well-formed request");
        return LEGACY_INVALID_REPLY;
    };
    let Ok(username) = std::str::from_utf8(credentials.username) else {
        log::info!("{client}: user name is not UTF-8");
        return LEGACY_INVALID_REPLY;
    };
    let signed_in = store.sign_in(
        username,
        credentials.password,
        client.ip(),
        SignInMethod::Legacy,
    );
    match signed_in.map(|s| s.outcome) {
        Ok(LoginOutcome::Success(_)) => {
            log::info!("{client}: {username:?} logged in");
            LEGACY_VALID_REPLY
        }
        Ok(LoginOutcome::Failed) => {
            log::info!("{client}: login refused for {username:?}");
            LEGACY_INVALID_REPLY
        }
        Ok(LoginOutcome::Locked) => {
            log::info!("{client}: login refused for {username:?}: the account is locked");
            LEGACY_INVALID_REPLY
        }
        Ok(LoginOutcome::Throttled(wait, limit)) => {
            metrics.logins_throttled.inc();
            log::warn!(
                "{client}: login for {username:?} throttled for {}s: too many {}",
                wait.as_secs_f64().ceil(),
                match limit {
                    Limit::Failures => "failures",
                    Limit::Successes => "logins",
                    Limit::AtOnce => "logins at once",
                }
            );
            LEGACY_INVALID_REPLY
        }
        Err(e) => {
            metrics.store_errors.inc();
            log::error!("{client}: {e}");
            LEGACY_INVALID_REPLY
        }
    }
}
