//! Authentication (issue 22) against a real broker process: SCRAM users made with `sluice
//! user create` on a broker without authentication log in once it runs with
//! `--sasl-mechanisms`, through the native listener (the CLI) and the Kafka listener (kcat,
//! kafka-python and confluent-kafka with `security.protocol=SASL_PLAINTEXT`); a wrong
//! password, an unknown user and a missing login are refused with an error that says so.

use std::path::Path;
use std::process::Command;

use sluice_integration_tests::kafka::{self, CLIENT_TIMEOUT};
use sluice_integration_tests::{cli, cli_ok, cli_with_env, run_with_stdin, BrokerProcess};

const ALL: &str = "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN";

/// The CLI as `user` with `password` by `mechanism`.
fn cli_as(
    bootstrap: &str,
    (mechanism, user, password): (&str, &str, &str),
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    let mut all = vec!["--sasl-mechanism", mechanism, "--sasl-username", user];
    all.extend_from_slice(args);
    cli_with_env(
        bootstrap,
        &all,
        stdin,
        &[("SLUICE_SASL_PASSWORD", password)],
    )
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A broker whose users alice (SCRAM-SHA-256, `alice-pw`) and bob (SCRAM-SHA-512,
/// `bob-pw`) were made before authentication was turned on; restarted with `args`.
/// The users `broker_with_users` creates, as `cli_as` logs in: mechanism, user, password.
const ALICE: (&str, &str, &str) = ("SCRAM-SHA-256", "alice", "alice-pw");
const BOB: (&str, &str, &str) = ("SCRAM-SHA-512", "bob", "bob-pw");

/// `broker_with_users` with every SASL mechanism, the authorizer on and alice its
/// superuser, plus `args`.
fn broker_with_authorizer(dir: &Path, kafka: bool, args: &[&str]) -> BrokerProcess {
    let mut all = vec![
        "--sasl-mechanisms",
        ALL,
        "--authorizer",
        "on",
        "--superusers",
        "User:alice",
    ];
    all.extend_from_slice(args);
    broker_with_users(dir, kafka, &all)
}

fn broker_with_users(dir: &Path, kafka: bool, args: &[&str]) -> BrokerProcess {
    let data = dir.join("data");
    let mut broker = if kafka {
        BrokerProcess::start_with_kafka(&data, &[])
    } else {
        BrokerProcess::start(&data, &[])
    };
    let bootstrap = broker.bootstrap();
    cli_ok(&bootstrap, &["user", "create", "alice"], "alice-pw\n");
    cli_ok(
        &bootstrap,
        &["user", "create", "bob", "--mechanism", "SCRAM-SHA-512"],
        "bob-pw\n",
    );
    broker.terminate();
    drop(broker);
    if kafka {
        BrokerProcess::start_with_kafka(&data, args)
    } else {
        BrokerProcess::start(&data, args)
    }
}

#[test]
fn users_made_before_authentication_log_in_once_it_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_users(
        dir.path(),
        false,
        &["--sasl-mechanisms", ALL, "--sasl-plain-without-tls", "true"],
    );
    let b = broker.bootstrap();

    // No login: refused, saying what to do.
    let anonymous = cli(&b, &["topic", "list"], "");
    assert!(!anonymous.status.success());
    assert!(
        stderr(&anonymous).contains("requires SASL authentication"),
        "{}",
        stderr(&anonymous)
    );

    // alice by SCRAM-SHA-256: topics, produce, consume.
    let ok = |who, args: &[&str], stdin: &str| {
        let out = cli_as(&b, who, args, stdin);
        assert!(
            out.status.success(),
            "{args:?} as {who:?}: {}",
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(ALICE, &["topic", "create", "orders"], "");
    ok(ALICE, &["produce", "orders"], "one\ntwo\n");
    let consumed = ok(
        ALICE,
        &["consume", "orders", "--from-beginning", "-n", "2"],
        "",
    );
    assert_eq!(consumed, "one\ntwo\n");

    // bob by SCRAM-SHA-512, and by PLAIN (checked against his SCRAM credential).
    ok(BOB, &["topic", "list"], "");
    ok(("PLAIN", "bob", "bob-pw"), &["topic", "list"], "");

    // Wrong password, unknown user, a mechanism the user has no credential for.
    for who in [
        ("SCRAM-SHA-256", "alice", "nope"),
        ("SCRAM-SHA-256", "mallory", "alice-pw"),
        ("SCRAM-SHA-512", "alice", "alice-pw"),
        ("PLAIN", "alice", "nope"),
    ] {
        let out = cli_as(&b, who, &["topic", "list"], "");
        assert!(!out.status.success(), "{who:?} logged in");
        assert!(
            stderr(&out).contains("unknown user or wrong password"),
            "{who:?}: {}",
            stderr(&out)
        );
    }

    // Users are managed while authenticated, and a deleted user no longer logs in.
    ok(ALICE, &["user", "delete", "bob"], "");
    let listed = ok(ALICE, &["user", "list", "--format", "json"], "");
    let users: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(users[0]["name"], "alice");
    let out = cli_as(&b, BOB, &["topic", "list"], "");
    assert!(!out.status.success(), "a deleted user logged in");
}

#[test]
fn plain_is_refused_without_tls_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_users(
        dir.path(),
        false,
        &["--sasl-mechanisms", "PLAIN,SCRAM-SHA-256"],
    );
    let out = cli_as(
        &broker.bootstrap(),
        ("PLAIN", "alice", "alice-pw"),
        &["topic", "list"],
        "",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no TLS"), "{}", stderr(&out));
    // An unoffered mechanism is named with what is offered.
    let out = cli_as(&broker.bootstrap(), BOB, &["topic", "list"], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("offers PLAIN, SCRAM-SHA-256"),
        "{}",
        stderr(&out)
    );
}

/// kcat with `-X` SASL settings against the Kafka listener: its exit status and output.
fn kcat(
    bootstrap: &str,
    sasl: Option<(&str, &str, &str)>,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    let mut command = Command::new(std::env::var("KCAT").unwrap_or_else(|_| "kcat".into()));
    command.args(["-b", bootstrap]);
    if let Some((mechanism, user, password)) = sasl {
        command.args([
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            &format!("sasl.mechanisms={mechanism}"),
            "-X",
            &format!("sasl.username={user}"),
            "-X",
            &format!("sasl.password={password}"),
        ]);
    }
    run_with_stdin(command.args(args), stdin)
}

#[test]
fn kcat_logs_in_with_scram_on_the_kafka_listener() {
    if kafka::require("kcat_sasl", kafka::kcat()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_users(dir.path(), true, &["--sasl-mechanisms", ALL]);
    let k = broker.kafka_bootstrap();
    cli_as(&broker.bootstrap(), ALICE, &["topic", "create", "t"], "");
    for who in [ALICE, BOB] {
        let out = kcat(
            &k,
            Some(who),
            &["-m", "20", "-P", "-t", "t"],
            &format!("from {}\n", who.1),
        );
        assert!(out.status.success(), "{who:?}: {}", stderr(&out));
    }
    let out = kcat(
        &k,
        Some(BOB),
        &["-m", "20", "-C", "-t", "t", "-o", "beginning", "-e", "-q"],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from alice\nfrom bob\n"
    );
    // A refused login fails at once, but kcat waits out its metadata timeout (-m).
    let out = kcat(
        &k,
        Some(("SCRAM-SHA-256", "alice", "wrong")),
        &["-m", "2", "-L"],
        "",
    );
    assert!(!out.status.success(), "a wrong password listed metadata");
    assert!(
        stderr(&out).contains("unknown user or wrong password"),
        "{}",
        stderr(&out)
    );
    let out = kcat(&k, None, &["-m", "2", "-L"], "");
    assert!(
        !out.status.success(),
        "kcat without a login listed metadata"
    );
}

#[test]
fn python_clients_log_in_with_scram_on_the_kafka_listener() {
    let Some(python) = kafka::require("python_sasl", kafka::python_clients()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_users(dir.path(), true, &["--sasl-mechanisms", ALL]);
    let k = broker.kafka_bootstrap();
    cli_as(&broker.bootstrap(), ALICE, &["topic", "create", "t"], "");
    // kafka-python produces as alice, confluent-kafka consumes as bob; each prints a line.
    let script = r#"
import sys
from kafka import KafkaProducer
from confluent_kafka import Consumer
bootstrap = sys.argv[1]
producer = KafkaProducer(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                         sasl_plain_password="alice-pw")
producer.send("t", b"from kafka-python").get(timeout=30)
producer.close()
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                     "auto.offset.reset": "earliest", "security.protocol": "SASL_PLAINTEXT",
                     "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "bob",
                     "sasl.password": "bob-pw"})
consumer.subscribe(["t"])
got = None
for _ in range(60):
    m = consumer.poll(1.0)
    if m is not None and m.error() is None:
        got = m.value()
        break
consumer.close()
print("consumed", got.decode() if got else None)
bad = Consumer({"bootstrap.servers": bootstrap, "group.id": "h", "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "alice",
                "sasl.password": "wrong"})
try:
    bad.list_topics(timeout=10)
    print("wrong password: listed")
except Exception as e:
    print("wrong password:", e)
"#;
    let run = kafka::run_client(
        &python,
        &["-c".to_string(), script.to_string(), k],
        CLIENT_TIMEOUT,
    );
    let tail = |s: &str| s[s.len().saturating_sub(2000)..].to_owned();
    assert!(
        run.stdout.contains("consumed from kafka-python"),
        "stdout: {}\nstderr: {}",
        run.stdout,
        tail(&run.stderr)
    );
    // librdkafka shows the broker's reason in its log and fails the metadata request.
    assert!(run.stdout.contains("wrong password: "), "{}", run.stdout);
    assert!(
        !run.stdout.contains("wrong password: listed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("unknown user or wrong password"),
        "{}",
        tail(&run.stderr)
    );
}

/// `sluice` as `user` (SCRAM-SHA-256, password `USER-pw`): its output, or its error.
fn as_user(b: &str, user: &str, args: &[&str], stdin: &str) -> Result<String, String> {
    let password = format!("{user}-pw");
    let out = cli_as(b, ("SCRAM-SHA-256", user, &password), args, stdin);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(stderr(&out))
    }
}

#[test]
fn acls_decide_what_each_user_may_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]);
    for user in ["admin", "alice", "bob"] {
        cli_ok(
            &broker.bootstrap(),
            &["user", "create", user],
            &format!("{user}-pw\n"),
        );
    }
    drop(broker);
    let broker = BrokerProcess::start(
        &data,
        &[
            "--sasl-mechanisms",
            "SCRAM-SHA-256",
            "--authorizer",
            "on",
            "--superusers",
            "User:admin",
        ],
    );
    let b = broker.bootstrap();
    let admin = |args: &[&str]| as_user(&b, "admin", args, "").expect("admin may do anything");
    admin(&["topic", "create", "orders"]);
    admin(&["topic", "create", "orders.eu"]);
    admin(&["topic", "create", "secret"]);

    // Nothing is allowed until an ACL allows it, and unseen topics are not listed.
    let listed = as_user(&b, "alice", &["topic", "list"], "").unwrap();
    assert!(
        !listed.contains("orders") && !listed.contains("secret"),
        "{listed}"
    );
    let e = as_user(&b, "alice", &["produce", "orders"], "x\n").unwrap_err();
    assert!(e.contains("User:alice may not"), "{e}");

    // alice writes to orders; bob reads every topic starting with "orders" in group g,
    // but not orders.eu (a deny wins).
    let acl = |spec: &[&str]| {
        let mut args = vec!["acl", "add"];
        args.extend_from_slice(spec);
        admin(&args);
    };
    acl(&[
        "--principal",
        "User:alice",
        "--allow",
        "--operation",
        "write",
        "--topic",
        "orders",
    ]);
    acl(&[
        "--principal",
        "User:bob",
        "--allow",
        "--operation",
        "read",
        "--topic",
        "orders",
        "--prefixed",
    ]);
    acl(&[
        "--principal",
        "User:bob",
        "--deny",
        "--operation",
        "read",
        "--topic",
        "orders.eu",
    ]);
    acl(&[
        "--principal",
        "User:bob",
        "--allow",
        "--operation",
        "read",
        "--group",
        "g",
    ]);

    as_user(&b, "alice", &["produce", "orders"], "one\n").expect("alice writes orders");
    let e = as_user(&b, "alice", &["produce", "secret"], "x\n").unwrap_err();
    assert!(e.contains("may not describe topic \"secret\""), "{e}");
    let e = as_user(
        &b,
        "alice",
        &["consume", "orders", "--from-beginning", "-n", "1"],
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("User:alice may not read topic \"orders\""),
        "{e}"
    );
    let listed = as_user(&b, "alice", &["topic", "list"], "").unwrap();
    assert!(
        listed.contains("orders") && !listed.contains("secret"),
        "{listed}"
    );

    let read = as_user(
        &b,
        "bob",
        &[
            "consume",
            "orders",
            "--from-beginning",
            "-n",
            "1",
            "--group",
            "g",
        ],
        "",
    )
    .expect("bob reads orders in group g");
    assert_eq!(read, "one\n");
    let e = as_user(&b, "bob", &["produce", "orders"], "x\n").unwrap_err();
    assert!(e.contains("may not write to any topic"), "{e}");
    let e = as_user(
        &b,
        "bob",
        &[
            "consume",
            "orders.eu",
            "--from-beginning",
            "-n",
            "1",
            "--group",
            "g",
        ],
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("User:bob may not read topic \"orders.eu\""),
        "{e}"
    );
    let e = as_user(
        &b,
        "bob",
        &[
            "consume",
            "orders",
            "--from-beginning",
            "-n",
            "1",
            "--group",
            "other",
        ],
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("User:bob may not describe group \"other\""),
        "{e}"
    );

    // Users and ACLs are the cluster's: only admin sees or changes them.
    for args in [
        &["acl", "list"][..],
        &["user", "list"],
        &["topic", "delete", "orders"],
        &["quota", "list"],
        &[
            "quota",
            "set",
            "--user",
            "alice",
            "--producer-byte-rate",
            "1000000000",
        ],
    ] {
        let e = as_user(&b, "alice", args, "").unwrap_err();
        assert!(e.contains("User:alice may not"), "{args:?}: {e}");
    }
    let acls = admin(&["acl", "list", "--format", "json"]);
    let acls: serde_json::Value = serde_json::from_str(&acls).unwrap();
    assert_eq!(acls.as_array().unwrap().len(), 4, "{acls}");
    admin(&[
        "acl",
        "remove",
        "--principal",
        "User:alice",
        "--allow",
        "--operation",
        "write",
        "--topic",
        "orders",
    ]);
    let e = as_user(&b, "alice", &["produce", "orders"], "x\n").unwrap_err();
    assert!(e.contains("User:alice may not"), "{e}");

    // Denials are counted and logged.
    let metrics = sluice_integration_tests::scrape(broker.http_addr());
    let denied: f64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("sluice_authorization_denials_total"))
        .map(|(_, v)| v)
        .sum();
    assert!(denied >= 10.0, "{metrics:?}");
    assert!(
        broker.log().contains("denied principal=User:bob"),
        "no denial in the log"
    );
}

#[test]
fn kafka_clients_obey_the_same_acls() {
    if kafka::require("kcat_acls", kafka::kcat()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_authorizer(dir.path(), true, &["--auto-create-topics", "false"]);
    let (b, k) = (broker.bootstrap(), broker.kafka_bootstrap());
    for topic in ["open", "closed"] {
        let out = cli_as(&b, ALICE, &["topic", "create", topic], "");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = cli_as(
        &b,
        ALICE,
        &[
            "acl",
            "add",
            "--principal",
            "User:bob",
            "--allow",
            "--operation",
            "all",
            "--topic",
            "open",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // bob's metadata shows "open" only.
    let out = kcat(&k, Some(BOB), &["-m", "20", "-L", "-J"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("\"open\"") && !listed.contains("\"closed\""),
        "{listed}"
    );
    // He produces to "open", and not to "closed" (not even told it exists).
    let out = kcat(&k, Some(BOB), &["-m", "20", "-P", "-t", "open"], "hi\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kcat(&k, Some(BOB), &["-m", "5", "-P", "-t", "closed"], "no\n");
    assert!(
        !out.status.success(),
        "bob produced to a topic he may not see"
    );
    assert!(
        stderr(&out).contains("authoriz") || stderr(&out).contains("Authoriz"),
        "{}",
        stderr(&out)
    );
}

/// kafka-python's admin client, logged in as the superuser, manages ACLs through the Kafka
/// listener (CreateAcls, DescribeAcls, DeleteAcls) and they decide what kcat may do.
#[test]
fn kafka_admin_clients_add_describe_and_remove_acls() {
    let Some(python) = kafka::require("python_acls", kafka::python_clients()) else {
        return;
    };
    if kafka::require("kcat_kafka_acls", kafka::kcat()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_authorizer(dir.path(), true, &["--auto-create-topics", "false"]);
    let (b, k) = (broker.bootstrap(), broker.kafka_bootstrap());
    let out = cli_as(&b, ALICE, &["topic", "create", "open"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let admin = |step: &str| -> String {
        let script = r#"
import sys
from kafka import KafkaAdminClient
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                         ACLResourcePatternType, ResourcePattern, ResourcePatternFilter,
                         ResourceType)
bootstrap, step = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                         sasl_plain_password="alice-pw")
bob_on_open = ACLFilter(principal="User:bob", host="*", operation=ACLOperation.ANY,
                        permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, "open",
                                                               ACLResourcePatternType.MATCH))
if step == "create":
    result = admin.create_acls([
        ACL("User:bob", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.TOPIC, "open", ACLResourcePatternType.LITERAL)),
        ACL("User:bob", "*", ACLOperation.DESCRIBE, ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.TOPIC, "op", ACLResourcePatternType.PREFIXED)),
        ACL("User:bob", "10.1.2.3", ACLOperation.READ, ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.TOPIC, "open", ACLResourcePatternType.LITERAL)),
    ])
    print("created", len(result["succeeded"]), "failed", [e.__name__ for e in result["failed"]])
    acls, _ = admin.describe_acls(bob_on_open)
    print("described", sorted((a.resource_pattern.resource_name, a.operation.name) for a in acls))
else:
    results = admin.delete_acls([bob_on_open])
    print("deleted", sorted(a.operation.name for _, matched, _ in results for a in matched))
    acls, _ = admin.describe_acls(bob_on_open)
    print("left", len(acls))
admin.close()
"#;
        let run = kafka::run_client(
            &python,
            &[
                "-c".to_string(),
                script.to_string(),
                k.clone(),
                step.to_string(),
            ],
            CLIENT_TIMEOUT,
        );
        assert!(
            run.status.is_some_and(|s| s.success()),
            "{}\n{}",
            run.stdout,
            run.stderr
        );
        run.stdout
    };
    let created = admin("create");
    assert!(
        created.contains("created 2 failed ['InvalidRequestError']"),
        "{created}"
    );
    // MATCH finds the literal ACL and the prefixed one that applies to "open".
    assert!(
        created.contains("described [('op', 'DESCRIBE'), ('open', 'WRITE')]"),
        "{created}"
    );
    let out = kcat(&k, Some(BOB), &["-m", "20", "-P", "-t", "open"], "hi\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let deleted = admin("delete");
    assert!(
        deleted.contains("deleted ['DESCRIBE', 'WRITE']"),
        "{deleted}"
    );
    assert!(deleted.contains("left 0"), "{deleted}");
    let out = kcat(&k, Some(BOB), &["-m", "5", "-P", "-t", "open"], "no\n");
    assert!(!out.status.success(), "bob still produced");
}

/// kafka-python's admin client manages SCRAM users through the Kafka listener
/// (AlterUserScramCredentials, DescribeUserScramCredentials): a user it adds logs in with
/// kcat, one it removes no longer does, and only the superuser may change users.
#[test]
fn kafka_admin_clients_add_describe_and_remove_scram_users() {
    let Some(python) = kafka::require("python_users", kafka::python_clients()) else {
        return;
    };
    if kafka::require("kcat_kafka_users", kafka::kcat()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_authorizer(dir.path(), true, &[]);
    let k = broker.kafka_bootstrap();
    let admin = |user: &str, step: &str| -> String {
        let script = r#"
import sys
from kafka import KafkaAdminClient
from kafka.admin import ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion
bootstrap, user, step = sys.argv[1], sys.argv[2], sys.argv[3]
mechanism = {"alice": "SCRAM-SHA-256", "bob": "SCRAM-SHA-512"}[user]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism=mechanism, sasl_plain_username=user,
                         sasl_plain_password=user + "-pw")
if step == "add":
    print("altered", admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("carol", ScramMechanism.SCRAM_SHA_512, "carol-pw",
                                     iterations=8192)]))
else:
    print("altered", admin.alter_user_scram_credentials([
        UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)]))
described = admin.describe_user_scram_credentials(["carol"])["carol"]
infos = [(i["mechanism"].name, i["iterations"]) for i in described["credential_infos"]]
print("described", infos, described["error"] is not None)
admin.close()
"#;
        let run = kafka::run_client(
            &python,
            &[
                "-c".to_string(),
                script.to_string(),
                k.clone(),
                user.to_string(),
                step.to_string(),
            ],
            CLIENT_TIMEOUT,
        );
        format!("{}{}", run.stdout, run.stderr)
    };
    let carol = ("SCRAM-SHA-512", "carol", "carol-pw");
    // Only the superuser changes users (Alter on the cluster).
    let refused = admin("bob", "add");
    assert!(
        refused.contains("altered {'carol': 'User:bob may not alter the cluster"),
        "{refused}"
    );
    let added = admin("alice", "add");
    assert!(added.contains("altered {'carol': None}"), "{added}");
    assert!(
        added.contains("described [('SCRAM_SHA_512', 8192)] False"),
        "{added}"
    );
    let out = kcat(&k, Some(carol), &["-m", "20", "-L"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let removed = admin("alice", "remove");
    assert!(removed.contains("altered {'carol': None}"), "{removed}");
    assert!(removed.contains("described [] True"), "{removed}");
    let out = kcat(&k, Some(carol), &["-m", "5", "-L"], "");
    assert!(!out.status.success(), "carol still logs in");
}

#[test]
fn a_transactional_id_is_used_only_with_write_on_it() {
    // Without the TransactionalId resource, anyone allowed to write somewhere could take
    // another application's id and fence its producer.
    use sluice_client::{
        Client, ClientConfig, Producer, ProducerConfig, ProducerRecord, SaslConfig, SaslMechanism,
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_authorizer(dir.path(), false, &[]);
    let b = broker.bootstrap();
    let admin = |args: &[&str]| {
        let out = cli_as(&b, ALICE, args, "");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    admin(&["topic", "create", "out"]);
    let acl = |spec: &[&str]| {
        let mut args = vec![
            "acl",
            "add",
            "--principal",
            "User:bob",
            "--operation",
            "write",
        ];
        args.extend_from_slice(spec);
        admin(&args);
    };
    acl(&["--allow", "--topic", "out"]);

    let rt = sluice_integration_tests::checks::runtime();
    let transactional = |id: &str| {
        let bootstrap = b.clone();
        let id = id.to_owned();
        async move {
            let client = Client::connect(ClientConfig {
                bootstrap: vec![bootstrap],
                sasl: Some(SaslConfig::new(SaslMechanism::ScramSha512, "bob", "bob-pw")),
                ..ClientConfig::default()
            })
            .await
            .expect("bob logs in");
            Producer::new(
                client,
                ProducerConfig {
                    transactional_id: Some(id),
                    ..ProducerConfig::default()
                },
            )
        }
    };
    rt.block_on(async {
        let producer = transactional("app-1").await;
        let e = producer.init_transactions().await.unwrap_err().to_string();
        assert!(
            e.contains("User:bob may not") && e.contains("transactional id \"app-1\""),
            "{e}"
        );
    });

    // Write on every id starting with "app-", but not on app-2.
    acl(&["--allow", "--transactional-id", "app-", "--prefixed"]);
    acl(&["--deny", "--transactional-id", "app-2"]);
    rt.block_on(async {
        let producer = transactional("app-1").await;
        producer
            .init_transactions()
            .await
            .expect("bob may use app-1");
        producer.begin_transaction().unwrap();
        producer
            .send(ProducerRecord::new("out", "committed"))
            .await
            .unwrap()
            .await
            .expect("the record is acknowledged");
        producer.commit_transaction().await.expect("the commit");
        let denied = transactional("app-2").await;
        let e = denied.init_transactions().await.unwrap_err().to_string();
        assert!(e.contains("transactional id \"app-2\""), "{e}");
    });
    let out = cli_as(&b, ALICE, &["acl", "list", "--format", "json"], "");
    let acls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        acls.as_array()
            .unwrap()
            .iter()
            .any(|a| a["resource_type"] == "transactional_id"
                && a["resource_name"] == "app-"
                && a["pattern"] == "prefixed"),
        "{acls}"
    );
}
