//! TLS (issue 22) over real `sluice-broker` processes: the CLI round trip on a TLS native
//! listener; a wrong CA, a plain client on a TLS listener and a TLS client on a plain one
//! refused at once with errors that say what to change (and the broker serving on); mutual
//! TLS; bad certificate files stopping the broker at start; three brokers with
//! inter-broker (mutual) TLS losing nothing acknowledged through a leader's SIGKILL; and
//! the Kafka listener over TLS with kcat and confluent-kafka, beside a plain native
//! listener. Certificates are made at test time (`sluice_integration_tests::tls::TestCa`).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Admin, NewTopic, ProducerConfig};
use sluice_integration_tests::checks::{
    check_acknowledged, client_tls, produce_until, read_everything, runtime, Progress,
};
use sluice_integration_tests::tls::{ClientTls, TestCa};
use sluice_integration_tests::{
    bin, cli, cli_ok, free_addr, kafka, run_with_stdin, BrokerProcess, KafkaListener, TestCluster,
};

/// A single broker on 127.0.0.1 whose listeners serve TLS with a certificate of `ca`,
/// started with `extra` flags too; the harness reaches it as `client` says.
fn tls_broker(
    dir: &std::path::Path,
    ca: &TestCa,
    kafka: KafkaListener,
    extra: &[&str],
    client: ClientTls,
) -> BrokerProcess {
    let flags = ca.broker_flags(1, "127.0.0.1", extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let addr = free_addr([127, 0, 0, 1].into());
    BrokerProcess::start_tls(addr, kafka, &dir.join("data"), &flags, Some(client))
}

/// `sluice ARGS` with the TLS flags of `tls` (none if `None`): (success, stdout, stderr).
fn sluice(
    bootstrap: &str,
    tls: Option<&ClientTls>,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let tls_args = tls.map(ClientTls::cli_args).unwrap_or_default();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(tls_args.iter().map(String::as_str));
    let output = cli(bootstrap, &all, stdin);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_cli_round_trips_over_tls_and_mismatches_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "sluice-test-ca");
    let tls = ca.client();
    let broker = tls_broker(dir.path(), &ca, KafkaListener::Off, &[], tls.clone());
    let bootstrap = broker.bootstrap();

    let (ok, _, err) = sluice(&bootstrap, Some(&tls), &["topic", "create", "secure"], "");
    assert!(ok, "{err}");
    let (ok, _, err) = sluice(
        &bootstrap,
        Some(&tls),
        &["produce", "secure"],
        "one\ntwo\nthree\n",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = sluice(
        &bootstrap,
        Some(&tls),
        &["consume", "secure", "--from-beginning", "-n", "3"],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "one\ntwo\nthree\n");

    // A CA that did not sign the broker's certificate.
    let other = TestCa::new(&dir.path().join("other-pki"), "another-ca");
    let (ok, _, err) = sluice(&bootstrap, Some(&other.client()), &["topic", "list"], "");
    assert!(!ok);
    assert!(
        err.contains("not signed by the CA in --tls-ca-file"),
        "{err}"
    );

    // A plain client on the TLS listener: told to pass --tls-ca-file, at once.
    let (ok, _, err) = sluice(&bootstrap, None, &["topic", "list"], "");
    assert!(!ok);
    assert!(
        err.contains("its listener expects TLS; pass --tls-ca-file"),
        "{err}"
    );
    assert!(
        broker.log().contains("TLS handshake failed"),
        "the broker logs the failed handshake:\n{}",
        broker.log()
    );
    // ...and the broker serves on.
    let (ok, out, err) = sluice(&bootstrap, Some(&tls), &["topic", "list"], "");
    assert!(ok && out.contains("secure"), "{err}");

    // A TLS client on a plain listener.
    let plain = BrokerProcess::start(&dir.path().join("plain"), &[]);
    let (ok, _, err) = sluice(&plain.bootstrap(), Some(&tls), &["topic", "list"], "");
    assert!(!ok);
    assert!(
        err.contains("did not answer in TLS; is this a TLS listener?"),
        "{err}"
    );
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_and_serves_one_with() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "sluice-test-ca");
    let (cert, key) = ca.issue("alice", "alice", &["alice.example"]);
    let alice = ca.client().with_client(&cert, &key);
    let client_ca = ca.ca_file.to_str().unwrap().to_owned();
    let broker = tls_broker(
        dir.path(),
        &ca,
        KafkaListener::Off,
        &["--tls-client-ca-file", &client_ca],
        alice.clone(),
    );
    let (ok, _, err) = sluice(
        &broker.bootstrap(),
        Some(&ca.client()),
        &["topic", "list"],
        "",
    );
    assert!(!ok);
    assert!(err.contains("requires a client certificate"), "{err}");
    let (ok, _, err) = sluice(
        &broker.bootstrap(),
        Some(&alice),
        &["topic", "create", "mine"],
        "",
    );
    assert!(ok, "{err}");
    // A client certificate of another CA is refused too.
    let other = TestCa::new(&dir.path().join("other-pki"), "another-ca");
    let (cert, key) = other.issue("mallory", "mallory", &["mallory.example"]);
    let mallory = ca.client().with_client(&cert, &key);
    let (ok, _, err) = sluice(&broker.bootstrap(), Some(&mallory), &["topic", "list"], "");
    assert!(!ok, "a certificate of another CA was accepted");
    assert!(err.contains("refused this client's certificate"), "{err}");
}

#[test]
fn bad_certificate_files_stop_the_broker_naming_the_file_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "sluice-test-ca");
    let (cert, _) = ca.issue("b1", "broker-1", &["127.0.0.1"]);
    let (_, other_key) = ca.issue("b2", "broker-2", &["127.0.0.1"]);
    let missing = dir.path().join("missing.pem");
    let check = |cert: &std::path::Path, key: &std::path::Path, expected: &[&str]| {
        let output = Command::new(bin("sluice-broker"))
            .args(["--listen", &free_addr([127, 0, 0, 1].into()).to_string()])
            .args(["--kafka-listen", "off", "--http-listen", "off"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .output()
            .expect("run sluice-broker");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "started with {cert:?} {key:?}");
        for part in expected {
            assert!(stderr.contains(part), "{part:?} not in: {stderr}");
        }
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    };
    check(
        &missing,
        &other_key,
        &["--tls-cert-file", "missing.pem", "cannot read"],
    );
    check(
        &cert,
        &cert,
        &["--tls-key-file", "b1.pem", "no PEM private key"],
    );
    check(
        &cert,
        &other_key,
        &["b2.key does not fit the certificate", "b1.pem"],
    );
}

#[test]
fn three_brokers_with_inter_broker_tls_lose_nothing_through_a_leader_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "sluice-test-ca");
    // Mutual TLS everywhere: each broker presents its own certificate to its peers.
    let (cert, key) = ca.issue("client", "test-client", &["client.example"]);
    let tls = ca.client().with_client(&cert, &key);
    let client_ca = ca.ca_file.to_str().unwrap().to_owned();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr([127, 0, 0, 1].into())).collect();
    let mut cluster = TestCluster::start_tls(
        &addrs,
        3,
        dir.path(),
        KafkaListener::Off,
        Some(tls.clone()),
        |id| ca.broker_flags(id, "127.0.0.1", &["--tls-client-ca-file", &client_ca]),
    );
    let rt = runtime();
    let client = rt.block_on(client_tls(&cluster.bootstrap(), Some(&tls)));
    let topic = NewTopic::new("secure", 3, 3).config("min.insync.replicas", "2");
    rt.block_on(Admin::new(client.clone()).create_topic(topic))
        .expect("create topic");
    cluster.wait_isr("secure", 3);
    let progress = Arc::new(Progress::default());
    let producing = rt.spawn(produce_until(
        client.clone(),
        "secure".into(),
        ProducerConfig::default(),
        Arc::clone(&progress),
    ));
    progress.wait_for_more("acknowledgements before the kill", 300);
    let leader = cluster.leader("secure", 0);
    assert!(leader >= 1, "partition 0 has a leader");
    cluster.node(leader).kill();
    progress.wait_for_more("acknowledgements after the kill (failover)", 300);
    cluster.node(leader).restart();
    // The restarted broker catches up over TLS: replica fetches and Raft both cross it.
    cluster.wait_isr("secure", 3);
    progress.stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let acked = progress.acked.lock().unwrap().clone();
    let records = rt.block_on(read_everything(&client, "secure", 3, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    cluster.stop_all();
}

#[test]
fn the_kafka_listener_serves_tls_to_kcat_and_confluent_kafka_beside_a_plain_native_one() {
    let Some(kcat) = kafka::require("kafka_tls_kcat", kafka::kcat()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "sluice-test-ca");
    // The native listener plain (and so the inter-broker links), the Kafka one TLS.
    let flags = ca.broker_flags(1, "127.0.0.1", &["--native-tls", "false"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start_tls_per_listener(
        free_addr([127, 0, 0, 1].into()),
        KafkaListener::FreePort,
        &dir.path().join("data"),
        &flags,
        None,
        Some(ca.client()),
    );
    let kafka_addr = broker.kafka_bootstrap();
    cli_ok(
        &broker.bootstrap(),
        &["topic", "create", "kt", "-p", "1"],
        "",
    );
    let ssl = [
        "-X".to_owned(),
        "security.protocol=SSL".to_owned(),
        "-X".to_owned(),
        format!("ssl.ca.location={}", ca.ca_file.display()),
    ];
    let run_kcat = |args: &[&str], stdin: &str| {
        let output = run_with_stdin(
            Command::new(&kcat)
                .args(["-b", &kafka_addr])
                .args(&ssl)
                .args(args),
            stdin,
        );
        assert!(
            output.status.success(),
            "kcat {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            broker.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run_kcat(&["-P", "-t", "kt"], "red\ngreen\nblue\n");
    let consumed = run_kcat(&["-C", "-t", "kt", "-o", "beginning", "-e", "-q"], "");
    assert_eq!(consumed, "red\ngreen\nblue\n");
    // The plain native listener serves the same records.
    let out = cli_ok(
        &broker.bootstrap(),
        &["consume", "kt", "--from-beginning", "-n", "3"],
        "",
    );
    assert_eq!(out, "red\ngreen\nblue\n");

    let Some(python) = kafka::require("kafka_tls_confluent", kafka::python_clients()) else {
        return;
    };
    cli_ok(
        &broker.bootstrap(),
        &["topic", "create", "ct", "-p", "2"],
        "",
    );
    let args: Vec<String> = [
        kafka::script("tls_client.py").display().to_string(),
        "round-trip".into(),
        "--bootstrap".into(),
        kafka_addr.clone(),
        "--topic".into(),
        "ct".into(),
        "--ssl-ca".into(),
        ca.ca_file.display().to_string(),
        "-n".into(),
        "200".into(),
    ]
    .to_vec();
    let summary =
        kafka::run_client(&python, &args, Duration::from_secs(120)).expect_ok(&broker.log());
    assert_eq!(summary["records"], 200);
}

/// `sluice ARGS` over `tls`, logged in as `user` by SCRAM-SHA-256 with `password`.
fn sluice_as(
    bootstrap: &str,
    tls: &ClientTls,
    (user, password): (&str, &str),
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let tls_args = tls.cli_args();
    let mut all = vec!["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", user];
    all.extend_from_slice(args);
    all.extend(tls_args.iter().map(String::as_str));
    let output = sluice_integration_tests::cli_with_env(
        bootstrap,
        &all,
        stdin,
        &[("SLUICE_SASL_PASSWORD", password)],
    );
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn three_brokers_authenticate_each_other_by_certificate_under_sasl_and_acls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "sluice-test-ca");
    // The harness's certificate makes it a superuser; eve's names a user with no ACL.
    let (cert, key) = ca.issue("client", "test-client", &["client.example"]);
    let admin = ca.client().with_client(&cert, &key);
    let (cert, key) = ca.issue("eve", "eve", &["eve.example"]);
    let eve = ca.client().with_client(&cert, &key);
    let client_ca = ca.ca_file.to_str().unwrap().to_owned();
    let superusers = "User:broker-1,User:broker-2,User:broker-3,User:test-client";
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr([127, 0, 0, 1].into())).collect();
    let mut cluster = TestCluster::start_tls(
        &addrs,
        3,
        dir.path(),
        KafkaListener::Off,
        Some(admin.clone()),
        |id| {
            ca.broker_flags(
                id,
                "127.0.0.1",
                &[
                    "--tls-client-ca-file",
                    &client_ca,
                    "--sasl-mechanisms",
                    "SCRAM-SHA-256",
                    "--authorizer",
                    "on",
                    "--superusers",
                    superusers,
                ],
            )
        },
    );
    // Raft, registrations and replication work: the brokers are superusers by certificate.
    let b = cluster.bootstrap();
    let (ok, _, err) = sluice(
        &b,
        Some(&admin),
        &["topic", "create", "t", "-p", "3", "-r", "3"],
        "",
    );
    assert!(ok, "{err}");
    cluster.wait_isr("t", 3);
    let (ok, _, err) = sluice(&b, Some(&admin), &["user", "create", "alice"], "alice-pw\n");
    assert!(ok, "{err}");
    // eve (by certificate) may not write; alice (SASL over eve's connection) may, once
    // allowed.
    let (ok, _, err) = sluice(&b, Some(&eve), &["produce", "t"], "x\n");
    assert!(!ok && err.contains("User:eve may not"), "{err}");
    let (ok, _, err) = sluice(
        &b,
        Some(&admin),
        &[
            "acl",
            "add",
            "--principal",
            "User:alice",
            "--allow",
            "--operation",
            "all",
            "--topic",
            "t",
        ],
        "",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = sluice_as(
        &b,
        &eve,
        ("alice", "alice-pw"),
        &["produce", "t", "--key-separator", ":"],
        "k:v\n",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = sluice_as(
        &b,
        &eve,
        ("alice", "alice-pw"),
        &["consume", "t", "--from-beginning", "-n", "1"],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "v\n");
    // A broker of the cluster whose own certificate is not a superuser refuses to start.
    cluster.stop_all();
    let flags = ca.broker_flags(
        1,
        "127.0.0.1",
        &[
            "--tls-client-ca-file",
            &client_ca,
            "--authorizer",
            "on",
            "--node-id",
            "1",
            "--voters",
            &format!("1@{},2@{}", addrs[0], addrs[1]),
        ],
    );
    let out = Command::new(bin("sluice-broker"))
        .args(["--listen", &addrs[0].to_string(), "--data-dir"])
        .arg(dir.path().join("lonely"))
        .args(&flags)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("User:broker-1") && err.contains("--superusers"),
        "{err}"
    );
}

#[test]
fn kcat_logs_in_with_sasl_ssl_scram_and_plain_over_a_tls_kafka_listener() {
    let Some(kcat) = kafka::require("kafka_sasl_ssl_kcat", kafka::kcat()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "sluice-test-ca");
    let data = dir.path().join("data");
    let start = |extra: &[&str]| {
        // The native listener plain, the Kafka one TLS.
        let mut all = vec!["--native-tls", "false"];
        all.extend_from_slice(extra);
        let flags = ca.broker_flags(1, "127.0.0.1", &all);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        BrokerProcess::start_tls_per_listener(
            free_addr([127, 0, 0, 1].into()),
            KafkaListener::FreePort,
            &data,
            &flags,
            None,
            Some(ca.client()),
        )
    };
    let broker = start(&[]);
    cli_ok(
        &broker.bootstrap(),
        &["user", "create", "alice"],
        "alice-pw\n",
    );
    cli_ok(&broker.bootstrap(), &["topic", "create", "st"], "");
    drop(broker);
    // PLAIN is accepted here without --sasl-plain-without-tls: the Kafka listener is TLS.
    let broker = start(&["--sasl-mechanisms", "SCRAM-SHA-256,PLAIN"]);
    let kafka_addr = broker.kafka_bootstrap();
    let run_kcat = |mechanism: &str, password: &str, args: &[&str], stdin: &str| {
        run_with_stdin(
            Command::new(&kcat)
                .args(["-b", &kafka_addr, "-X", "security.protocol=SASL_SSL"])
                .arg("-X")
                .arg(format!("ssl.ca.location={}", ca.ca_file.display()))
                .args(["-X", &format!("sasl.mechanisms={mechanism}")])
                .args(["-X", "sasl.username=alice"])
                .args(["-X", &format!("sasl.password={password}")])
                .args(args),
            stdin,
        )
    };
    let out = run_kcat(
        "PLAIN",
        "alice-pw",
        &["-m", "20", "-P", "-t", "st"],
        "over tls\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_kcat(
        "SCRAM-SHA-256",
        "alice-pw",
        &["-m", "20", "-C", "-t", "st", "-o", "beginning", "-e", "-q"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    let out = run_kcat("PLAIN", "wrong", &["-m", "2", "-L"], "");
    assert!(!out.status.success(), "a wrong password listed metadata");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown user or wrong password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
