//! TLS for the harness: a test CA made at test time with rcgen (no private key is ever
//! committed) that issues the brokers' and clients' certificates into a test's temporary
//! directory, and [`ClientTls`], how the harness, the CLI and the client library reach a
//! broker whose listeners serve TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority of one test, writing PEM files into `dir`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA's certificate (PEM): what clients and brokers verify against.
    pub ca_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its files in `dir` (created if missing).
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("create the CA's directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let ca_file = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write the CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            ca_file,
        }
    }

    /// Issues a certificate with subject CN `cn` for `names` (IP addresses become IP SANs,
    /// others DNS SANs); returns its certificate and key files (`<stem>.pem`, `<stem>.key`).
    pub fn issue(&self, stem: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_file = self.dir.join(format!("{stem}.pem"));
        let key_file = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write the certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
        (cert_file, key_file)
    }

    /// The TLS flags of a broker listening on `ip`: a certificate for it (CN `broker-<id>`,
    /// an IP SAN, and `localhost`) and this CA for its peers, plus `extra`.
    pub fn broker_flags(&self, id: i32, ip: &str, extra: &[&str]) -> Vec<String> {
        let (cert, key) = self.issue(
            &format!("broker-{id}"),
            &format!("broker-{id}"),
            &[ip, "localhost"],
        );
        let mut flags = vec![
            "--tls-cert-file".to_owned(),
            path(&cert),
            "--tls-key-file".to_owned(),
            path(&key),
            "--tls-ca-file".to_owned(),
            path(&self.ca_file),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    }

    /// A client trusting this CA, without a client certificate.
    pub fn client(&self) -> ClientTls {
        ClientTls::new(&self.ca_file, None)
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// How a client reaches TLS listeners: the CA file, and a client certificate and key when
/// the brokers require one.
#[derive(Clone)]
pub struct ClientTls {
    /// The CA the brokers' certificates are verified against.
    pub ca_file: PathBuf,
    /// The client certificate and key files, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// A client trusting `ca_file`, presenting `client` (certificate, key) if given.
    pub fn new(ca_file: &Path, client: Option<(&Path, &Path)>) -> ClientTls {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).expect("read the CA") {
            roots
                .add(cert.expect("a CA certificate"))
                .expect("a usable CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .expect("read the certificate")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certificates");
                let key = PrivateKeyDer::from_pem_file(key).expect("read the key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("a matching key")
            }
            None => builder.with_no_client_auth(),
        };
        ClientTls {
            ca_file: ca_file.to_path_buf(),
            client: client.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
            config: Arc::new(config),
        }
    }

    /// The same, presenting a client certificate.
    pub fn with_client(&self, cert: &Path, key: &Path) -> ClientTls {
        ClientTls::new(&self.ca_file, Some((cert, key)))
    }

    /// The flags of `sluice` and `sluice-bench` for it.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec!["--tls-ca-file".to_owned(), path(&self.ca_file)];
        if let Some((cert, key)) = &self.client {
            args.extend([
                "--tls-cert-file".to_owned(),
                path(cert),
                "--tls-key-file".to_owned(),
                path(key),
            ]);
        }
        args
    }

    /// The client library's setting for it.
    pub fn library(&self) -> sluice_client::TlsConfig {
        let client = self
            .client
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        sluice_client::TlsConfig::from_files(&self.ca_file, client).expect("client TLS")
    }
}

/// A byte stream to a broker, plain or TLS.
pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A blocking connection to `addr`, TLS when `tls` is given (the server name is the IP),
/// with a 5 s read timeout; `None` if it cannot be made.
pub(crate) fn connect(addr: SocketAddr, tls: Option<&ClientTls>) -> Option<Box<dyn ReadWrite>> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(tls) = tls else {
        return Some(Box::new(stream));
    };
    let name = ServerName::from(addr.ip());
    let connection = rustls::ClientConnection::new(Arc::clone(&tls.config), name).ok()?;
    Some(Box::new(rustls::StreamOwned::new(connection, stream)))
}
