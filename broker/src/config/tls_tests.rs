//! The TLS keys of the configuration (issue 22): which switches a certificate turns on,
//! the combinations refused, and bad files stopping the start, through `resolve` as the
//! binary runs it. Certificates from `tls::tests::TestCa`.

use std::path::Path;

use clap::Parser;

use super::{resolve, BrokerConfig, ConfigLayer};
use crate::error::BrokerError;
use crate::tls::tests::TestCa;
use crate::tls::Loaded;

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
        // One line of prose: a literal continued without its `\` kept the indentation.
        assert!(!err.contains("  "), "{args:?}: {err}");
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
