//! TLS for the listeners and the inter-broker links (issue 22), on rustls with the `ring`
//! provider. Everything is loaded once at start (`load`): a missing file, a file without
//! the PEM it should hold, or a key that does not match its certificate stops the broker
//! with an error naming the file and its flag. Certificates and keys are never logged;
//! only their paths are part of the logged configuration.
//!
//! The model (see ARCHITECTURE.md): one certificate and key per broker serve every TLS
//! listener (`native_tls`, `kafka_tls` choose which listeners use them). Brokers reach each
//! other on the native listener, so inter-broker TLS *is* the native listener's TLS; a
//! broker dialling a peer verifies the peer's certificate against `tls_ca_file` and, when
//! asked (the peers require client certificates), presents its own certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::BrokerError;

/// Longest time a client may take to complete its TLS handshake; a client that never
/// finishes it must not hold a connection slot for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration a listener serves with (compared by identity: it is loaded once).
#[derive(Clone)]
pub struct ServerTls(pub Arc<ServerConfig>);

/// The TLS configuration this broker dials its peers with (compared by identity).
#[derive(Clone)]
pub struct PeerTls(pub Arc<ClientConfig>);

macro_rules! opaque {
    ($name:ident) => {
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }
        impl Eq for $name {}
        impl fmt::Debug for $name {
            // Never the key material: only that there is some.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}
opaque!(ServerTls);
opaque!(PeerTls);

/// The loaded TLS state of a broker: what its TLS listeners serve with, and what it dials
/// its peers with. `None` where that side is plain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Served by the listeners whose TLS is on (`native_tls`, `kafka_tls`).
    pub server: Option<ServerTls>,
    /// Used by `cluster::peer` when inter-broker TLS is on.
    pub peer: Option<PeerTls>,
}

/// The `ring` provider, the only one built in (see the workspace's Cargo.toml).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS files and switches of a broker's configuration (`config` passes them: this
/// module does not import `config`, which holds a [`Loaded`]).
pub struct Files<'a> {
    /// `tls_cert_file`.
    pub tls_cert_file: &'a Option<PathBuf>,
    /// `tls_key_file`.
    pub tls_key_file: &'a Option<PathBuf>,
    /// `tls_client_ca_file`.
    pub tls_client_ca_file: &'a Option<PathBuf>,
    /// `tls_ca_file`.
    pub tls_ca_file: &'a Option<PathBuf>,
    /// `inter_broker_tls`.
    pub inter_broker_tls: bool,
}

/// Loads the files `config` names. The combinations were checked by `config::validate`.
pub fn load(config: &Files<'_>) -> Result<Loaded, BrokerError> {
    let mut loaded = Loaded::default();
    let (Some(cert_file), Some(key_file)) = (config.tls_cert_file, config.tls_key_file) else {
        return Ok(loaded);
    };
    let chain = certificates(cert_file, "--tls-cert-file")?;
    let key = private_key(key_file)?;
    let mismatch = |e: rustls::Error| {
        BrokerError::Config(format!(
            "the key in --tls-key-file {} does not fit the certificate in --tls-cert-file {} \
             ({e}); give the key the certificate was issued for",
            key_file.display(),
            cert_file.display()
        ))
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Config(format!("TLS: {e}")))?;
    let server = match config.tls_client_ca_file {
        Some(ca_file) => {
            let roots = Arc::new(root_store(ca_file, "--tls-client-ca-file")?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| {
                    BrokerError::Config(format!("--tls-client-ca-file {}: {e}", ca_file.display()))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    }
    .with_single_cert(chain.clone(), key.clone_key())
    .map_err(mismatch)?;
    loaded.server = Some(ServerTls(Arc::new(server)));
    if config.inter_broker_tls {
        if let Some(ca_file) = config.tls_ca_file {
            let roots = root_store(ca_file, "--tls-ca-file")?;
            // The own certificate goes out as a client certificate when a peer asks for
            // one (it requires client certificates); otherwise it is never sent.
            let client = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| BrokerError::Config(format!("TLS: {e}")))?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .map_err(mismatch)?;
            loaded.peer = Some(PeerTls(Arc::new(client)));
        }
    }
    Ok(loaded)
}

/// The certificates of a PEM file given with `flag`; at least one.
pub fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let bytes = read(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(path, flag, "certificate", &e))?;
    if certs.is_empty() {
        return Err(not_pem(path, flag, "certificate", &"none found"));
    }
    Ok(certs)
}

/// The private key of the PEM file of `--tls-key-file`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, BrokerError> {
    let flag = "--tls-key-file";
    let bytes = read(path, flag)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| not_pem(path, flag, "private key", &e))
}

/// The CA certificates of the PEM file given with `flag`, as trust anchors.
fn root_store(path: &Path, flag: &str) -> Result<RootCertStore, BrokerError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, flag)? {
        roots.add(cert).map_err(|e| {
            BrokerError::Config(format!(
                "{flag} {}: a certificate is not usable as a CA ({e})",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path)
        .map_err(|e| BrokerError::Config(format!("{flag} {}: cannot read it: {e}", path.display())))
}

fn not_pem(path: &Path, flag: &str, what: &str, error: &dyn fmt::Display) -> BrokerError {
    BrokerError::Config(format!(
        "{flag} {} holds no PEM {what} ({error}); give a PEM file (-----BEGIN ...-----)",
        path.display()
    ))
}

/// The identity of a verified client certificate: its subject's common name (CN), or its
/// first DNS subject alternative name when it has no CN. `None` when it has neither or
/// cannot be parsed (it was verified, so that is a CA's odd choice, not an attack).
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    common_name(parsed.subject()).or_else(|| parsed.valid_dns_names().next().map(str::to_owned))
}

/// The first CN (OID 2.5.4.3) of a DER `Name`'s contents (a SEQUENCE OF RelativeDistinguishedName
/// without its outer tag), decoded as UTF8String, PrintableString or IA5String.
fn common_name(name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = name;
    while !rdns.is_empty() {
        let (set, rest) = der_take(rdns, 0x31)?;
        rdns = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, rest) = der_take(attributes, 0x30)?;
            attributes = rest;
            let (oid, value) = der_take(attribute, 0x06)?;
            if oid != CN {
                continue;
            }
            // UTF8String, PrintableString, IA5String.
            for tag in [0x0c, 0x13, 0x16] {
                if let Some((text, _)) = der_take(value, tag) {
                    return std::str::from_utf8(text).ok().map(str::to_owned);
                }
            }
            return None;
        }
    }
    None
}

/// Splits one DER element of tag `tag` off the front of `input`: (its contents, the rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, input) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let len = input[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        input = &input[n..];
        len
    };
    (input.len() >= len).then(|| input.split_at(len))
}

#[cfg(test)]
pub(crate) mod tests;
