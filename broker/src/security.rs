//! Who is on a connection: SASL authentication (issue 22), shared by both listeners.
//!
//! With `sasl_mechanisms` empty (the default) nobody authenticates and every connection is
//! `User:ANONYMOUS`, today's behaviour. With mechanisms set, a connection must log in
//! before any request but ApiVersions, SaslHandshake and SaslAuthenticate: Kafka's
//! exchange, SaslHandshake naming the mechanism, then SaslAuthenticate messages carrying
//! the mechanism's bytes (SCRAM's client-first and client-final, or PLAIN's one message).
//! The native and the Kafka listener both drive the same [`Login`] through
//! [`Authenticator`], so a user logs in the same way through either.
//!
//! Credentials are the SCRAM credentials in the metadata image (`sluice user create`):
//! salted and hashed, never a password. PLAIN checks the password against the user's SCRAM
//! credential (the PBKDF2 the client would have done), so one user store serves all three
//! mechanisms; PLAIN sends the password itself, so it is refused on a connection without
//! TLS unless `sasl_plain_without_tls` allows it.

pub mod acl;

use std::fmt;
use std::sync::Arc;

use sluice_protocol::scram::{self, Mechanism, ScramCredential, ScramError, ServerExchange};
use sluice_protocol::ErrorCode;

use crate::cluster::image::MetadataImage;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How long a failed login waits before its answer.
pub const FAILED_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// An authenticated identity, as Kafka writes it: `User:alice`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(String);

impl Principal {
    /// The principal of a connection that did not authenticate.
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    /// The broker itself, for work it does on its own account (creating
    /// `__consumer_offsets` for a group): allowed everything. No login can be it: logins
    /// are always `User:`.
    pub fn internal() -> Principal {
        Principal("Broker:self".to_owned())
    }

    /// Whether this is [`Principal::internal`].
    pub fn is_internal(&self) -> bool {
        self.0 == "Broker:self"
    }

    /// `User:<name>`.
    pub fn user(name: &str) -> Principal {
        Principal(format!("User:{name}"))
    }

    /// The principal written `User:alice`.
    pub fn named(principal: &str) -> Principal {
        Principal(principal.to_owned())
    }

    /// `User:alice`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::config::SaslMechanism;

/// Where one connection is in its login.
#[derive(Default)]
pub struct Login {
    state: LoginState,
    /// Whether the connection is TLS (PLAIN needs it).
    tls: bool,
    /// `User:<CN>` of a verified client certificate (mutual TLS): the connection is
    /// authenticated by it, without SASL.
    certificate: Option<Principal>,
}

#[derive(Default)]
enum LoginState {
    /// Nothing yet.
    #[default]
    Start,
    /// SaslHandshake named the mechanism.
    Handshaken(SaslMechanism),
    /// SCRAM's first round is done.
    ScramFirst(Box<ServerExchange>),
    /// Logged in.
    Done(Principal),
    /// A login failed: the connection gets nothing more.
    Failed,
}

impl Login {
    /// The login of a connection over TLS or not, with the identity of its verified client
    /// certificate under mutual TLS.
    pub fn new(tls: bool, certificate: Option<String>) -> Login {
        Login {
            state: LoginState::Start,
            tls,
            certificate: certificate.map(|name| Principal::user(&name)),
        }
    }

    /// The connection's principal once it logged in (SASL), or its certificate's.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            LoginState::Done(principal) => Some(principal),
            LoginState::Failed => None,
            _ => self.certificate.as_ref(),
        }
    }
}

/// The broker's side of SASL: which mechanisms it offers and where credentials come from.
pub struct Authenticator {
    mechanisms: Vec<SaslMechanism>,
    plain_without_tls: bool,
    image: Arc<dyn Fn() -> Arc<MetadataImage> + Send + Sync>,
    metrics: Arc<Metrics>,
}

/// What a request of an unauthenticated connection may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Serve it.
    Pass,
    /// Refuse it: the connection has not logged in.
    Refuse,
}

impl Authenticator {
    /// Offers `mechanisms` (none: authentication off); credentials from `image`.
    pub fn new(
        mechanisms: Vec<SaslMechanism>,
        plain_without_tls: bool,
        image: Arc<dyn Fn() -> Arc<MetadataImage> + Send + Sync>,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        Authenticator {
            mechanisms,
            plain_without_tls,
            image,
            metrics,
        }
    }

    /// Whether connections must log in.
    pub fn required(&self) -> bool {
        !self.mechanisms.is_empty()
    }

    /// The mechanisms offered, by name.
    pub fn mechanism_names(&self) -> Vec<String> {
        self.mechanisms
            .iter()
            .map(|m| m.name().to_owned())
            .collect()
    }

    /// The principal of a connection: its login's, or anonymous when authentication is
    /// off; `None` while a required login is not done.
    pub fn principal(&self, login: &Login) -> Option<Principal> {
        match login.principal() {
            Some(p) => Some(p.clone()),
            None if !self.required() => Some(Principal::anonymous()),
            None => None,
        }
    }

    /// The error for a request that arrives before the login: what the client must do.
    pub fn not_authenticated(&self, login: &Login) -> ApiError {
        let message = match login.state {
            LoginState::Failed => {
                "this connection failed to authenticate; reconnect with the right user name, \
                 password and mechanism"
                    .to_owned()
            }
            _ => format!(
                "this broker requires SASL authentication ({}); log in first (sluice: \
                 --sasl-mechanism and --sasl-username, the password in SLUICE_SASL_PASSWORD)",
                self.mechanism_names().join(", ")
            ),
        };
        ApiError::new(ErrorCode::SaslAuthenticationFailed, message)
    }

    /// SaslHandshake: the connection names its mechanism.
    pub fn handshake(&self, login: &mut Login, name: &str) -> Result<(), ApiError> {
        if !matches!(login.state, LoginState::Start) {
            return Err(ApiError::new(
                ErrorCode::IllegalSaslState,
                "SaslHandshake comes once, before the login; reconnect to log in again",
            ));
        }
        let offered = SaslMechanism::from_name(name).filter(|m| self.mechanisms.contains(m));
        let Some(mechanism) = offered else {
            return Err(ApiError::new(
                ErrorCode::UnsupportedSaslMechanism,
                format!(
                    "this broker does not offer SASL mechanism {name:?}; it offers {}",
                    if self.mechanisms.is_empty() {
                        "none (authentication is off)".to_owned()
                    } else {
                        self.mechanism_names().join(", ")
                    }
                ),
            ));
        };
        login.state = LoginState::Handshaken(mechanism);
        Ok(())
    }

    /// SaslAuthenticate: one message of the exchange; the server's answer. A failure
    /// leaves the connection unusable and is answered after [`FAILED_LOGIN_DELAY`]
    /// (Kafka's `connection.failed.authentication.delay.ms`): a client that guesses
    /// passwords reconnects for every guess, and waits for each.
    pub async fn authenticate(
        &self,
        login: &mut Login,
        message: &[u8],
        peer: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let tls = login.tls;
        let state = std::mem::replace(&mut login.state, LoginState::Failed);
        let mechanism = match &state {
            LoginState::Handshaken(m) => m.name(),
            LoginState::ScramFirst(exchange) => exchange.mechanism().name(),
            _ => "none",
        };
        let (next, answer) = match self.step(state, message, tls) {
            Ok(step) => step,
            Err(e) => {
                tracing::info!(%peer, "authentication failed: {}", e.message);
                self.metrics.login_failed(mechanism);
                tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                return Err(e);
            }
        };
        if let LoginState::Done(principal) = &next {
            tracing::debug!(%peer, %principal, "authenticated");
        }
        login.state = next;
        Ok(answer)
    }

    fn step(
        &self,
        state: LoginState,
        message: &[u8],
        tls: bool,
    ) -> Result<(LoginState, Vec<u8>), ApiError> {
        match state {
            LoginState::Handshaken(SaslMechanism::Plain) => {
                if !tls && !self.plain_without_tls {
                    return Err(failed(
                        "PLAIN sends the password itself and this connection has no TLS; use \
                         SCRAM-SHA-256 or SCRAM-SHA-512, or TLS",
                    ));
                }
                let (user, password) = scram::parse_plain(message).map_err(malformed)?;
                let image = (self.image)();
                let ok = image.users.get(&user).is_some_and(|credentials| {
                    credentials
                        .iter()
                        .next()
                        .is_some_and(|(m, c)| c.matches_password(*m, password.as_bytes()))
                });
                if !ok {
                    return Err(invalid_credentials("PLAIN"));
                }
                Ok((LoginState::Done(Principal::user(&user)), Vec::new()))
            }
            LoginState::Handshaken(SaslMechanism::Scram(mechanism)) => {
                let user = ServerExchange::user_of(message).map_err(malformed)?;
                // An unknown user gets a made-up credential, so the exchange fails at the
                // proof like a wrong password and does not tell which users exist.
                let credential = self.credential(&user, mechanism).unwrap_or_else(|| {
                    ScramCredential::from_password(
                        mechanism,
                        &scram::new_salt(),
                        scram::new_salt(),
                        scram::ITERATIONS_MIN,
                    )
                });
                let (exchange, answer) =
                    ServerExchange::start(mechanism, message, credential).map_err(malformed)?;
                Ok((LoginState::ScramFirst(Box::new(exchange)), answer))
            }
            LoginState::ScramFirst(exchange) => match exchange.finish(message) {
                Ok((user, answer)) => Ok((LoginState::Done(Principal::user(&user)), answer)),
                Err(ScramError::Failed) => Err(invalid_credentials("SCRAM")),
                Err(e) => Err(malformed(e)),
            },
            LoginState::Start => Err(ApiError::new(
                ErrorCode::IllegalSaslState,
                "SaslAuthenticate before SaslHandshake: name the mechanism first",
            )),
            LoginState::Done(_) | LoginState::Failed => Err(ApiError::new(
                ErrorCode::IllegalSaslState,
                "this connection already finished its login; reconnect to log in again",
            )),
        }
    }

    fn credential(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        (self.image)().users.get(user)?.get(&mechanism).cloned()
    }
}

fn failed(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::SaslAuthenticationFailed, message)
}

fn invalid_credentials(mechanism: &str) -> ApiError {
    failed(format!(
        "authentication failed with {mechanism}: unknown user or wrong password"
    ))
}

fn malformed(e: ScramError) -> ApiError {
    failed(format!("authentication failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::scram::ClientExchange;

    fn authenticator(mechanisms: Vec<SaslMechanism>) -> Authenticator {
        let mut image = MetadataImage::default();
        for m in Mechanism::ALL {
            let credential =
                ScramCredential::from_password(m, b"pw", scram::new_salt(), scram::ITERATIONS_MIN);
            image
                .users
                .entry("alice".into())
                .or_default()
                .insert(m, credential);
        }
        let image = Arc::new(image);
        Authenticator::new(
            mechanisms,
            false,
            Arc::new(move || Arc::clone(&image)),
            Metrics::new(),
        )
    }

    async fn scram_login(
        auth: &Authenticator,
        user: &str,
        password: &str,
    ) -> Result<Login, ApiError> {
        let mut login = Login::default();
        auth.handshake(&mut login, "SCRAM-SHA-512")?;
        let (mut client, first) = ClientExchange::start(Mechanism::Sha512, user, password);
        let server_first = auth.authenticate(&mut login, &first, "test").await?;
        let client_final = client.respond(&server_first).map_err(malformed)?;
        let server_final = auth.authenticate(&mut login, &client_final, "test").await?;
        client.verify(&server_final).map_err(malformed)?;
        Ok(login)
    }

    #[tokio::test]
    async fn scram_logs_in_with_the_right_password_only() {
        let auth = authenticator(SaslMechanism::ALL.to_vec());
        let login = scram_login(&auth, "alice", "pw").await.expect("logs in");
        assert_eq!(auth.principal(&login), Some(Principal::user("alice")));
        for (user, password) in [("alice", "nope"), ("mallory", "pw")] {
            let e = scram_login(&auth, user, password)
                .await
                .err()
                .expect("refused");
            assert_eq!(e.code, ErrorCode::SaslAuthenticationFailed, "{e:?}");
            assert!(
                e.message.contains("unknown user or wrong password"),
                "{e:?}"
            );
        }
    }

    #[tokio::test]
    async fn plain_needs_tls_unless_allowed() {
        let auth = authenticator(vec![SaslMechanism::Plain]);
        let mut login = Login::default();
        auth.handshake(&mut login, "PLAIN").unwrap();
        let message = scram::plain_message("alice", "pw");
        let e = auth
            .authenticate(&mut login, &message, "test")
            .await
            .unwrap_err();
        assert!(e.message.contains("no TLS"), "{e:?}");
        let mut login = Login::new(true, None);
        auth.handshake(&mut login, "plain").unwrap();
        auth.authenticate(&mut login, &message, "test")
            .await
            .expect("over TLS");
        assert_eq!(login.principal(), Some(&Principal::user("alice")));
    }

    #[tokio::test]
    async fn out_of_order_and_unoffered_steps_are_refused() {
        let auth = authenticator(vec![SaslMechanism::Scram(Mechanism::Sha256)]);
        let mut login = Login::default();
        let e = auth.authenticate(&mut login, b"x", "t").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::IllegalSaslState);
        let mut login = Login::default();
        let e = auth.handshake(&mut login, "PLAIN").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedSaslMechanism);
        assert!(e.message.contains("SCRAM-SHA-256"), "{e:?}");
        assert_eq!(auth.principal(&Login::default()), None);
        let certified = Login::new(true, Some("broker-2".into()));
        assert_eq!(
            auth.principal(&certified),
            Some(Principal::user("broker-2"))
        );
        let off = authenticator(Vec::new());
        assert_eq!(
            off.principal(&Login::default()),
            Some(Principal::anonymous())
        );
    }
}
