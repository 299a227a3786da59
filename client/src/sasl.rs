//! Logging in to a broker that requires SASL (issue 22): SCRAM-SHA-256, SCRAM-SHA-512 or
//! PLAIN, run on every new connection before it carries a request. The SCRAM arithmetic is
//! `sluice_protocol::scram`'s, shared with the broker.

use std::fmt;

use sluice_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use sluice_protocol::scram::{self, ClientExchange};
use sluice_protocol::{Request, Response};

use crate::connection::Connection;
use crate::error::{Error, Result};

/// A SASL mechanism.
///
/// ```
/// use sluice_client::{SaslConfig, SaslMechanism};
/// let login = SaslConfig::new(SaslMechanism::ScramSha512, "alice", "s3cret");
/// assert_eq!(login.mechanism, SaslMechanism::ScramSha512);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// SCRAM-SHA-256: a challenge-response login; the password never crosses the wire.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
    /// PLAIN: the password itself; brokers accept it only over TLS unless configured to.
    Plain,
}

impl SaslMechanism {
    /// The IANA name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism named `name` (case-insensitive).
    ///
    /// ```
    /// use sluice_client::SaslMechanism;
    /// assert_eq!(SaslMechanism::from_name("scram-sha-512"), Some(SaslMechanism::ScramSha512));
    /// ```
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        [
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
            SaslMechanism::Plain,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The SCRAM mechanism, if this is one.
    pub fn scram(self) -> Option<scram::Mechanism> {
        match self {
            SaslMechanism::ScramSha256 => Some(scram::Mechanism::Sha256),
            SaslMechanism::ScramSha512 => Some(scram::Mechanism::Sha512),
            SaslMechanism::Plain => None,
        }
    }
}

/// How a client logs in ([`crate::ClientConfig::sasl`]).
///
/// ```
/// use sluice_client::{ClientConfig, SaslConfig, SaslMechanism};
/// let config = ClientConfig {
///     sasl: Some(SaslConfig::new(SaslMechanism::ScramSha256, "alice", "s3cret")),
///     ..ClientConfig::default()
/// };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SaslConfig {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user.
    pub username: String,
    /// The password (never printed by `Debug`).
    pub password: String,
}

impl SaslConfig {
    /// `username` logging in with `password` by `mechanism`.
    pub fn new(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> SaslConfig {
        SaslConfig {
            mechanism,
            username: username.into(),
            password: password.into(),
        }
    }
}

impl SaslConfig {
    /// The login of the command-line flags `--sasl-mechanism` and `--sasl-username` (the
    /// `sluice` CLI's and `sluice-bench`'s), the password from the environment variable
    /// `SLUICE_SASL_PASSWORD` (never a flag: flags show in `ps`). `None` without flags.
    pub fn from_flags(
        mechanism: Option<&str>,
        username: Option<&str>,
    ) -> Result<Option<SaslConfig>> {
        let (mechanism, username) = match (mechanism, username) {
            (Some(m), Some(u)) => (m, u),
            (None, None) => return Ok(None),
            _ => {
                return Err(Error::InvalidArgument(
                    "--sasl-mechanism and --sasl-username go together".into(),
                ))
            }
        };
        let mechanism = SaslMechanism::from_name(mechanism).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{mechanism:?} is not a SASL mechanism; use SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"
            ))
        })?;
        let password = std::env::var("SLUICE_SASL_PASSWORD").map_err(|_| {
            Error::InvalidArgument(
                "--sasl-username needs the password in the environment variable \
                 SLUICE_SASL_PASSWORD"
                    .into(),
            )
        })?;
        Ok(Some(SaslConfig::new(mechanism, username, password)))
    }
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Logs `connection` in as `config` says. A refusal is [`Error::Authentication`], which
/// is not retriable: the same credentials would be refused again.
pub(crate) async fn login(connection: &Connection, config: &SaslConfig) -> Result<()> {
    let addr = connection.addr().to_owned();
    let refused = |e: Error| match e {
        Error::Broker { code, message, .. } => Error::Authentication {
            addr: addr.clone(),
            reason: message.unwrap_or_else(|| code.message().to_owned()),
        },
        other => other,
    };
    let handshake = Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: config.mechanism.name().to_owned(),
    });
    connection.send(&handshake).await.map_err(refused)?;
    let step = |bytes: Vec<u8>| async {
        let request = Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: bytes.into(),
        });
        match connection.send(&request).await.map_err(refused)? {
            Response::SaslAuthenticate(r) => Ok(r.auth_bytes.to_vec()),
            other => Err(Error::Protocol {
                addr: addr.clone(),
                reason: format!("a {:?} answer to SaslAuthenticate", other.api_key()),
            }),
        }
    };
    let Some(mechanism) = config.mechanism.scram() else {
        step(scram::plain_message(&config.username, &config.password)).await?;
        return Ok(());
    };
    let scram_failed = |e: scram::ScramError| Error::Authentication {
        addr: addr.clone(),
        reason: e.to_string(),
    };
    let (mut exchange, first) =
        ClientExchange::start(mechanism, &config.username, &config.password);
    let server_first = step(first).await?;
    let client_final = exchange.respond(&server_first).map_err(scram_failed)?;
    let server_final = step(client_final).await?;
    exchange.verify(&server_final).map_err(scram_failed)
}
