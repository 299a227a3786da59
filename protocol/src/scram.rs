//! SASL's SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), both sides, sans-IO: the
//! client's and the server's exchange as state machines over the messages' bytes, and the
//! credential a server stores. What travels in SaslAuthenticate requests of either listener
//! is exactly these messages, as Kafka sends them, so Kafka clients log in unchanged.
//!
//! A server stores, per user and mechanism, the salt, the iteration count, `StoredKey` and
//! `ServerKey`: enough to check a proof and to prove itself, never the password or anything
//! that logs in by itself (RFC 5802 §3). `sluice user create` derives the salted password
//! on the client, as Kafka's AlterUserScramCredentials does, so the password never reaches
//! a broker through the user api either.
//!
//! Not done: SASLprep of user names and passwords (RFC 4013). Both sides use the bytes as
//! typed, which is the same for ASCII, and what Kafka's Java client does too.

use std::fmt;
use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};

/// Fewest iterations a credential may have (Kafka's minimum).
pub const ITERATIONS_MIN: u32 = 4096;
/// Most iterations a credential may have (Kafka's maximum): the server pays them on every
/// PLAIN login.
pub const ITERATIONS_MAX: u32 = 16384;
/// Iterations of credentials `sluice user create` makes.
pub const ITERATIONS_DEFAULT: u32 = 8192;
/// Bytes of a fresh salt.
const SALT_LEN: usize = 32;
/// Bytes of randomness in a nonce (before base64).
const NONCE_LEN: usize = 24;

/// A SCRAM mechanism: the hash it is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Mechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Mechanism {
    /// Both, in the order they are offered.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The IANA name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's number for the mechanism (DescribeUserScramCredentials and friends).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// The mechanism of Kafka's number.
    pub fn from_kafka_type(t: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2_algorithm(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    /// Bytes of the hash's output.
    pub fn output_len(self) -> usize {
        self.digest_algorithm().output_len()
    }

    fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac_algorithm(), key), message)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_algorithm(), data)
            .as_ref()
            .to_vec()
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with the mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_len()];
        let iterations = NonZeroU32::new(iterations.max(1)).expect("at least 1");
        pbkdf2::derive(
            self.pbkdf2_algorithm(),
            iterations,
            salt,
            password,
            &mut out,
        );
        out
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a server stores to check one user's SCRAM logins of one mechanism.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ScramCredential {
    /// The salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`: checks a client's proof.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: the server's own proof.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    /// Shows the iteration count only: keys never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential of a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// The credential of `password` with `salt`.
    pub fn from_password(
        mechanism: Mechanism,
        password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> ScramCredential {
        let salted = mechanism.salted_password(password, &salt, iterations);
        ScramCredential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// Whether `password` is this credential's (a PLAIN login checked against a SCRAM
    /// credential, in constant time).
    pub fn matches_password(&self, mechanism: Mechanism, password: &[u8]) -> bool {
        let salted = mechanism.salted_password(password, &self.salt, self.iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        constant_time_eq(&mechanism.hash(&client_key), &self.stored_key)
    }
}

/// Checks what a server stores: iterations within Kafka's bounds, keys of the hash's size.
pub fn check_credential(mechanism: Mechanism, credential: &ScramCredential) -> Result<(), String> {
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&credential.iterations) {
        return Err(format!(
            "{mechanism} needs {ITERATIONS_MIN} to {ITERATIONS_MAX} iterations, not {}",
            credential.iterations
        ));
    }
    if credential.salt.is_empty() {
        return Err("the salt is empty".into());
    }
    let n = mechanism.output_len();
    if credential.stored_key.len() != n || credential.server_key.len() != n {
        return Err(format!("{mechanism} keys are {n} bytes"));
    }
    Ok(())
}

/// A fresh random salt.
pub fn new_salt() -> Vec<u8> {
    random_bytes(SALT_LEN)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system's random source works");
    out
}

fn new_nonce() -> String {
    BASE64.encode(random_bytes(NONCE_LEN))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// A user name as SCRAM writes it: `,` and `=` escaped.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("a user name has a bad escape")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of attribute `key` (`r=...`) among `message`'s comma-separated attributes.
fn attribute(message: &str, key: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message does not follow RFC 5802.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The proof does not match: a wrong password or an unknown user.
    #[error("authentication failed")]
    Failed,
    /// The server's signature does not match: not the server that holds the credential.
    #[error(
        "the server's SCRAM signature does not match: it does not hold this user's credential"
    )]
    ServerNotVerified,
    /// The server answered with an error attribute.
    #[error("the server refused the login: {0}")]
    ServerError(String),
}

/// The server's side of one exchange.
pub struct ServerExchange {
    mechanism: Mechanism,
    user: String,
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Reads the client's first message and gives the user name it names, for the caller
    /// to look the credential up.
    pub fn user_of(client_first: &[u8]) -> Result<String, ScramError> {
        let (_, bare) = split_client_first(client_first)?;
        let name = attribute(bare, 'n').ok_or(ScramError::Malformed("no user name"))?;
        unescape_name(name)
    }

    /// Answers the client's first message with the server's, for `user`'s `credential`.
    pub fn start(
        mechanism: Mechanism,
        client_first: &[u8],
        credential: ScramCredential,
    ) -> Result<(ServerExchange, Vec<u8>), ScramError> {
        let (_, bare) = split_client_first(client_first)?;
        let user =
            unescape_name(attribute(bare, 'n').ok_or(ScramError::Malformed("no user name"))?)?;
        let client_nonce = attribute(bare, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if client_nonce.is_empty() {
            return Err(ScramError::Malformed("an empty nonce"));
        }
        let nonce = format!("{client_nonce}{}", new_nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let exchange = ServerExchange {
            mechanism,
            user,
            credential,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// The exchange's mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Checks the client's final message; on success the authenticated user and the
    /// server's final message.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let client_final =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        // Kafka's broker checks that the client's nonce *ends with* the server's, not that
        // it is equal, and librdkafka 2.0 sends its own nonce in front of the server's (which
        // already starts with it); the proof covers whatever was sent, so this is as safe.
        if !attribute(without_proof, 'r').is_some_and(|r| r.ends_with(self.nonce.as_str())) {
            return Err(ScramError::Malformed("the nonce is not the server's"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("the proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let m = self.mechanism;
        let client_signature = m.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::Failed);
        }
        let client_key = xor(&proof, &client_signature);
        if !constant_time_eq(&m.hash(&client_key), &self.credential.stored_key) {
            return Err(ScramError::Failed);
        }
        let server_signature = m.hmac(&self.credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", BASE64.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

/// `gs2-header` and `client-first-message-bare` of a client's first message. Channel
/// binding is not offered (`n,,` or `y,,`), and an authorization identity other than the
/// user is refused, as Kafka does.
fn split_client_first(client_first: &[u8]) -> Result<(&str, &str), ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    let binding = parts.next().unwrap_or_default();
    let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    let bare = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
    if binding != "n" && binding != "y" {
        return Err(ScramError::Malformed("channel binding is not supported"));
    }
    if !authzid.is_empty() {
        let name = authzid
            .strip_prefix("a=")
            .ok_or(ScramError::Malformed("a bad authorization identity"))?;
        let user = attribute(bare, 'n').ok_or(ScramError::Malformed("no user name"))?;
        if name != user {
            return Err(ScramError::Malformed(
                "an authorization identity other than the user",
            ));
        }
    }
    Ok((&text[..binding.len() + authzid.len() + 2], bare))
}

/// The client's side of one exchange.
pub struct ClientExchange {
    mechanism: Mechanism,
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl ClientExchange {
    /// Starts a login of `user`; gives the client's first message.
    pub fn start(mechanism: Mechanism, user: &str, password: &str) -> (ClientExchange, Vec<u8>) {
        let nonce = new_nonce();
        let client_first_bare = format!("n={},r={nonce}", escape_name(user));
        let first = format!("n,,{client_first_bare}");
        let exchange = ClientExchange {
            mechanism,
            password: password.as_bytes().to_vec(),
            client_first_bare,
            nonce,
            server_signature: None,
        };
        (exchange, first.into_bytes())
    }

    /// Answers the server's first message with the client's final one (the proof).
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = attribute(server_first, 'e') {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let nonce = attribute(server_first, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours",
            ));
        }
        let salt = BASE64
            .decode(attribute(server_first, 's').ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("the salt is not base64"))?;
        let iterations: u32 = attribute(server_first, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("no iteration count"))?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Malformed("an iteration count out of bounds"));
        }
        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        let server_key = m.hmac(&salted, b"Server Key");
        self.server_signature = Some(m.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server's final message: the server holds the credential.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let server_final =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if let Some(e) = attribute(server_final, 'e') {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let signature = attribute(server_final, 'v')
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or(ScramError::Malformed("no server signature"))?;
        match &self.server_signature {
            Some(expected) if constant_time_eq(expected, &signature) => Ok(()),
            _ => Err(ScramError::ServerNotVerified),
        }
    }
}

/// A PLAIN login's message (RFC 4616): `authzid NUL authcid NUL password`; gives the user
/// and the password. An authorization identity other than the user is refused.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), ScramError> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramError::Malformed(
            "a PLAIN message is authzid NUL user NUL password",
        ));
    };
    let text =
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| ScramError::Malformed("not UTF-8"));
    let (authzid, user, password) = (text(authzid)?, text(user)?, text(password)?);
    if user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return Err(ScramError::Malformed(
            "a PLAIN login needs a user, and no other identity",
        ));
    }
    Ok((user, password))
}

/// A PLAIN login's message for `user` and `password`.
pub fn plain_message(user: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(user.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(
        mechanism: Mechanism,
        stored_password: &str,
        user: &str,
        password: &str,
    ) -> Result<String, ScramError> {
        let credential = ScramCredential::from_password(
            mechanism,
            stored_password.as_bytes(),
            new_salt(),
            ITERATIONS_MIN,
        );
        let (mut client, first) = ClientExchange::start(mechanism, user, password);
        assert_eq!(ServerExchange::user_of(&first)?, user);
        let (server, server_first) = ServerExchange::start(mechanism, &first, credential)?;
        let client_final = client.respond(&server_first)?;
        let (who, server_final) = server.finish(&client_final)?;
        client.verify(&server_final)?;
        Ok(who)
    }

    #[test]
    fn both_mechanisms_log_in_with_the_right_password_only() {
        for m in Mechanism::ALL {
            assert_eq!(login(m, "s3cret", "alice", "s3cret"), Ok("alice".into()));
            assert_eq!(
                login(m, "s3cret", "alice", "wrong"),
                Err(ScramError::Failed)
            );
        }
    }

    #[test]
    fn names_with_commas_and_equals_signs_survive_escaping() {
        assert_eq!(
            login(Mechanism::Sha256, "pw", "a,b=c", "pw"),
            Ok("a,b=c".into())
        );
    }

    /// RFC 7677 §3's example exchange, with its nonces, checks the arithmetic.
    #[test]
    fn rfc_7677_test_vector() {
        let m = Mechanism::Sha256;
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::from_password(m, b"pencil", salt, 4096);
        let mut client = ClientExchange {
            mechanism: m,
            password: b"pencil".to_vec(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            server_signature: None,
        };
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = client.respond(server_first.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(client_final.clone()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server = ServerExchange {
            mechanism: m,
            user: "user".into(),
            credential,
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let (_, server_final) = server.finish(&client_final).unwrap();
        assert_eq!(
            String::from_utf8(server_final.clone()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        client.verify(&server_final).unwrap();
    }

    #[test]
    fn a_plain_password_is_checked_against_a_scram_credential() {
        let credential =
            ScramCredential::from_password(Mechanism::Sha512, b"pw", new_salt(), ITERATIONS_MIN);
        assert!(credential.matches_password(Mechanism::Sha512, b"pw"));
        assert!(!credential.matches_password(Mechanism::Sha512, b"pW"));
        assert_eq!(
            parse_plain(&plain_message("bob", "pw")),
            Ok(("bob".into(), "pw".into()))
        );
        assert!(parse_plain(b"bob").is_err());
        assert!(parse_plain(b"eve\0bob\0pw").is_err());
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for junk in [
            &b""[..],
            b"n,,",
            b"p=tls,,n=a,r=b",
            b"\xff\xfe",
            b"n,,n=a=zz,r=x",
        ] {
            assert!(ServerExchange::start(
                Mechanism::Sha256,
                junk,
                ScramCredential::from_password(Mechanism::Sha256, b"x", new_salt(), 4096),
            )
            .is_err());
        }
    }
}
