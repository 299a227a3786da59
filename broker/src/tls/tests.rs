use std::path::{Path, PathBuf};

use clap::Parser;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

use super::*;
use crate::config::{resolve, ConfigLayer};

/// A CA made for one test, and the PEM files it issues into a temporary directory.
pub(crate) struct TestCa {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub ca_file: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// Issues a certificate for `names` (SANs) with subject CN `cn` (none if `None`);
    /// returns its certificate and key files.
    pub fn issue(&self, file_stem: &str, names: &[&str], cn: Option<&str>) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.path().join(format!("{file_stem}.pem"));
        let key_file = self.dir.path().join(format!("{file_stem}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

fn der(path: &Path) -> CertificateDer<'static> {
    certificates(path, "--test").unwrap().remove(0)
}

#[test]
fn identity_is_the_cn_else_the_first_dns_name() {
    let ca = TestCa::new();
    let check = |names: &[&str], cn: Option<&str>, expected: Option<&str>| {
        let (cert, _) = ca.issue("c", names, cn);
        assert_eq!(
            identity(&der(&cert)).as_deref(),
            expected,
            "{names:?} {cn:?}"
        );
    };
    check(&["alice.example"], Some("alice"), Some("alice"));
    check(&["bob.example", "other.example"], None, Some("bob.example"));
    check(&["127.0.0.1"], None, None);
    check(&[], Some("Zoë"), Some("Zoë"));
}

#[test]
fn der_take_refuses_what_overruns_its_input() {
    assert_eq!(
        der_take(&[0x30, 0x02, 1, 2, 3], 0x30),
        Some((&[1u8, 2][..], &[3u8][..]))
    );
    assert_eq!(der_take(&[0x30, 0x03, 1, 2], 0x30), None);
    assert_eq!(
        der_take(&[0x30, 0x81, 0x01, 9], 0x30),
        Some((&[9u8][..], &[][..]))
    );
    assert_eq!(der_take(&[0x30, 0x85, 0, 0, 0, 0, 1], 0x30), None);
    assert_eq!(der_take(&[0x31, 0x00], 0x30), None);
    assert_eq!(der_take(&[], 0x30), None);
    assert_eq!(common_name(&[0x31, 0x05, 0x30, 0x09]), None);
}

fn resolve_args(args: &[&str]) -> Result<BrokerConfig, BrokerError> {
    let mut argv = vec!["sluice-broker"];
    argv.extend_from_slice(args);
    resolve(ConfigLayer::try_parse_from(argv).expect("flags parse"))
}

fn error_of(args: &[&str]) -> String {
    resolve_args(args).unwrap_err().to_string()
}

#[test]
fn a_certificate_turns_tls_on_for_both_listeners_and_the_peers() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue("b1", &["127.0.0.1"], Some("broker-1"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let config = resolve_args(&["--tls-cert-file", cert, "--tls-key-file", key]).unwrap();
    assert!(config.native_tls && config.kafka_tls && config.inter_broker_tls);
    assert!(config.tls.server.is_some());
    // A single node has no peer to verify; it needs no CA.
    assert!(config.tls.peer.is_none());
    let plain_kafka = resolve_args(&[
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
        "--kafka-tls",
        "false",
    ])
    .unwrap();
    assert!(plain_kafka.native_tls && !plain_kafka.kafka_tls);
    let plain_native = resolve_args(&[
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
        "--native-tls",
        "false",
    ])
    .unwrap();
    assert!(!plain_native.native_tls && plain_native.kafka_tls && !plain_native.inter_broker_tls);
    let cluster = resolve_args(&[
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
        "--tls-ca-file",
        ca.ca_file.to_str().unwrap(),
        "--voters",
        "1@127.0.0.1:9700,2@127.0.0.2:9700",
    ])
    .unwrap();
    assert!(cluster.tls.peer.is_some());
    // Never the key material in the logged configuration: only paths.
    let logged = serde_json::to_string(&cluster).unwrap();
    assert!(
        !logged.contains("PRIVATE KEY") && logged.contains("b1.key"),
        "{logged}"
    );
    assert_eq!(resolve_args(&[]).unwrap().tls, Loaded::default());
}

#[test]
fn incoherent_tls_settings_are_refused_naming_the_flags() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue("b1", &["127.0.0.1"], None);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let ca_file = ca.ca_file.to_str().unwrap();
    let check = |args: &[&str], expected: &str| {
        let err = error_of(args);
        assert!(err.contains(expected), "{args:?}: {err}");
    };
    check(&["--tls-cert-file", cert], "--tls-key-file is not");
    check(&["--tls-key-file", key], "--tls-cert-file is not");
    check(&["--kafka-tls", "true"], "--kafka-tls true needs");
    check(&["--tls-client-ca-file", ca_file], "needs TLS first");
    check(
        &["--inter-broker-tls", "true"],
        "pass --inter-broker-tls false",
    );
    check(
        &[
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--inter-broker-tls",
            "false",
        ],
        "--native-tls false",
    );
    check(
        &[
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--voters",
            "1@127.0.0.1:9700,2@127.0.0.2:9700",
        ],
        "pass --tls-ca-file FILE",
    );
    check(
        &[
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-client-ca-file",
            ca_file,
            "--native-tls",
            "false",
            "--kafka-tls",
            "false",
        ],
        "no listener serves TLS",
    );
}

#[test]
fn bad_files_stop_the_start_naming_the_file_and_the_flag() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue("b1", &["127.0.0.1"], None);
    let (_, other_key) = ca.issue("b2", &["127.0.0.1"], None);
    let not_pem = ca.dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = ca.dir.path().join("missing.pem");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let check = |cert: &Path, key: &Path, client_ca: Option<&Path>, expected: &[&str]| {
        let mut args = vec![
            "--tls-cert-file".to_owned(),
            s(cert),
            "--tls-key-file".into(),
            s(key),
        ];
        if let Some(ca) = client_ca {
            args.extend(["--tls-client-ca-file".to_owned(), s(ca)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = error_of(&args);
        for part in expected {
            assert!(err.contains(part), "{args:?}: {err}");
        }
        assert!(
            !err.contains("MII"),
            "no certificate or key material in errors: {err}"
        );
    };
    check(
        &missing,
        &key,
        None,
        &["--tls-cert-file", "missing.pem", "cannot read"],
    );
    check(
        &not_pem,
        &key,
        None,
        &["--tls-cert-file", "not.pem", "no PEM certificate"],
    );
    check(&cert, &missing, None, &["--tls-key-file", "missing.pem"]);
    check(
        &cert,
        &not_pem,
        None,
        &["--tls-key-file", "not.pem", "no PEM private key"],
    );
    check(
        &cert,
        &cert,
        None,
        &["--tls-key-file", "b1.pem", "no PEM private key"],
    );
    check(
        &cert,
        &other_key,
        None,
        &["does not fit", "b2.key", "b1.pem"],
    );
    check(
        &cert,
        &key,
        Some(&not_pem),
        &["--tls-client-ca-file", "not.pem"],
    );
}
