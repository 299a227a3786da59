//! TLS to the brokers ([`TlsConfig`], set as [`crate::ClientConfig::tls`]), on rustls with
//! the `ring` provider: the CA that signed the brokers' certificates, and optionally this
//! client's certificate and key for brokers that require client certificates (mutual TLS).
//! The server name checked is the host of the address dialled (a bootstrap address, or the
//! address a broker advertises).
//!
//! A TLS client on a plain listener, a plain client on a TLS listener, a certificate from
//! another CA or a missing client certificate fail with [`crate::Error::Tls`], which is not
//! retriable and says what to change; none of them hangs.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError};

use crate::error::{Error, Result};

/// How this client speaks TLS to the brokers.
///
/// ```no_run
/// use sluice_client::{ClientConfig, TlsConfig};
/// let tls = TlsConfig::from_files("ca.pem".as_ref(), None)?;
/// let config = ClientConfig { tls: Some(tls), ..ClientConfig::default() };
/// # Ok::<(), sluice_client::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    // Never the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

impl TlsConfig {
    /// From PEM files: the CA certificates that signed the brokers' certificates, and
    /// optionally this client's certificate (chain) and private key. Errors name the file.
    pub fn from_files(ca_file: &Path, client: Option<(&Path, &Path)>) -> Result<TlsConfig> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", path.display())))
        };
        let ca = read(ca_file)?;
        let named = |e: Error, path: &Path| match e {
            Error::InvalidArgument(why) => {
                Error::InvalidArgument(format!("{}: {why}", path.display()))
            }
            other => other,
        };
        let roots = roots(&ca).map_err(|e| named(e, ca_file))?;
        let identity = match client {
            Some((cert_file, key_file)) => {
                let chain = certificates(&read(cert_file)?).map_err(|e| named(e, cert_file))?;
                let key = private_key(&read(key_file)?).map_err(|e| named(e, key_file))?;
                Some((chain, key))
            }
            None => None,
        };
        build(roots, identity)
    }

    /// From the TLS flags of `sluice` and `sluice-bench` (`--tls-ca-file`,
    /// `--tls-cert-file`, `--tls-key-file`): `None` when none is given (plain TCP).
    pub fn from_flags(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<Option<TlsConfig>> {
        let client = match (cert_file, key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::InvalidArgument(
                    "--tls-cert-file needs --tls-key-file, the certificate's private key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(
                    "--tls-key-file needs --tls-cert-file, the certificate it belongs to".into(),
                ))
            }
        };
        match ca_file {
            Some(ca) => TlsConfig::from_files(ca, client).map(Some),
            None if client.is_some() => Err(Error::InvalidArgument(
                "--tls-cert-file needs --tls-ca-file, the CA that signed the brokers' \
                 certificates"
                    .into(),
            )),
            None => Ok(None),
        }
    }

    /// From PEM bytes: the CA certificates, and optionally this client's certificate
    /// (chain) and private key.
    pub fn from_pem(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Result<TlsConfig> {
        let identity = match client {
            Some((cert, key)) => Some((certificates(cert)?, private_key(key)?)),
            None => None,
        };
        build(roots(ca_pem)?, identity)
    }
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn build(roots: rustls::RootCertStore, identity: Option<Identity>) -> Result<TlsConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?
    .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            Error::InvalidArgument(format!(
                "the client key does not fit the client certificate ({e}); give the key the \
                 certificate was issued for"
            ))
        })?,
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConfig {
        config: Arc::new(config),
    })
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidArgument(format!("no PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        ));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::InvalidArgument(format!("no PEM private key ({e})")))
}

fn roots(pem: &[u8]) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(pem)? {
        roots.add(cert).map_err(|e| {
            Error::InvalidArgument(format!("a certificate is not usable as a CA ({e})"))
        })?;
    }
    Ok(roots)
}

/// The host of `addr` (`host:port`, `[v6]:port`): the name the broker's certificate must
/// hold.
pub(crate) fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls {
        addr: addr.to_owned(),
        reason: format!("{host:?} is not a host name or IP address a certificate can hold ({e})"),
    })
}

/// What a failed TLS handshake, or a TLS error on an established connection, means for the
/// user: the error and what to change. `None` when the error is not TLS's (a reset, an EOF
/// after the handshake): the connection simply failed.
pub(crate) fn explain(e: &std::io::Error, in_handshake: bool) -> Option<String> {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    Some(match tls {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the broker's certificate is not signed by the CA in --tls-ca-file; give the CA \
             that signed the brokers' certificates"
                .to_owned()
        }
        Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
        | Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            ..
        })) => "the broker's certificate does not name the host dialled; connect with a name \
                or IP address its certificate holds (a bootstrap address, or the broker's \
                --advertise)"
            .to_owned(),
        Some(rustls::Error::InvalidCertificate(other)) => {
            format!("the broker's certificate was refused: {other:?}")
        }
        Some(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        )) => "the broker requires a client certificate; pass --tls-cert-file and --tls-key-file"
            .to_owned(),
        Some(rustls::Error::AlertReceived(
            AlertDescription::BadCertificate | AlertDescription::UnknownCA,
        )) => "the broker refused this client's certificate; use one signed by the CA in the \
               broker's --tls-client-ca-file"
            .to_owned(),
        Some(rustls::Error::InvalidMessage(_))
        | Some(rustls::Error::InappropriateMessage { .. }) => {
            "the broker did not answer in TLS; is this a TLS listener? drop --tls-ca-file to \
             connect without TLS"
                .to_owned()
        }
        Some(other) => format!("TLS failed: {other}"),
        None if in_handshake => format!(
            "the broker closed the connection during the TLS handshake ({e}); is this a TLS \
             listener? drop --tls-ca-file to connect without TLS"
        ),
        None => return None,
    })
}

/// Whether the first bytes a plain connection received are a TLS record (an alert or a
/// handshake: content type 21 or 22, protocol version 3.x): the broker's listener speaks
/// TLS and refused the plain request.
pub(crate) fn looks_like_tls(first_bytes: &[u8]) -> bool {
    matches!(first_bytes, [0x15 | 0x16, 0x03, ..])
}

/// The reason given when a plain connection gets a TLS answer.
pub(crate) const PLAIN_ON_TLS: &str =
    "the broker answered in TLS: its listener expects TLS; pass --tls-ca-file FILE (the CA \
     that signed the brokers' certificates)";
