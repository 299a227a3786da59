//! `sluice`: the command-line client. A thin layer over `sluice-client`: it parses the
//! command line (`args`), calls the library, and prints (`render`). Errors are one line on
//! stderr, `error: ...`, and exit status 1.

mod args;
mod consume;
mod produce;
mod progress;
mod render;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sluice_client::{
    Acl, AclOperation, AclResource, Admin, Client, ClientConfig, NewTopic, PartitionId,
    QuotaEntity, QuotaName, ResetTarget, SaslConfig, SaslMechanism,
};

use args::{
    AclCommand, AclSpecArgs, AdminTimeout, Cli, ClusterArgs, ClusterCommand, Command, Format,
    GroupCommand, QuotaCommand, QuotaEntityArgs, TopicCommand, UserCommand,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The library logs at WARN what a command waits for (`waiting: ...`): shown as is, so a
    // wait is never silent. RUST_LOG overrides it for debugging.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sluice_client=warn")),
        )
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A failed command: the one line printed after `error: `.
type CliResult = Result<(), String>;

async fn run(cli: Cli) -> CliResult {
    let tls = sluice_client::TlsConfig::from_flags(
        cli.tls.tls_ca_file.as_deref(),
        cli.tls.tls_cert_file.as_deref(),
        cli.tls.tls_key_file.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let config = ClientConfig {
        bootstrap: cli
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        client_id: "sluice-cli".to_owned(),
        sasl: SaslConfig::from_flags(cli.sasl_mechanism.as_deref(), cli.sasl_username.as_deref())
            .map_err(|e| e.to_string())?,
        tls,
        ..ClientConfig::default()
    };
    let client = Client::connect(config).await.map_err(|e| e.to_string())?;
    let format = cli.format;
    let admin = |timeout: AdminTimeout| {
        Admin::new(client.clone()).with_timeout(Duration::from_millis(timeout.timeout_ms))
    };
    match cli.command {
        Command::Topic(args) => topic(admin(args.timeout), args.command, format).await,
        Command::Cluster(ClusterArgs {
            timeout,
            command: ClusterCommand::Describe,
        }) => {
            let cluster = admin(timeout)
                .describe_cluster()
                .await
                .map_err(|e| e.to_string())?;
            print(
                format,
                || render::cluster_text(&cluster),
                || render::cluster_json(&cluster),
            )
        }
        Command::Cluster(ClusterArgs {
            timeout,
            command: ClusterCommand::ElectLeaders { topic },
        }) => {
            let outcomes = admin(timeout)
                .elect_preferred_leaders(topic.as_deref())
                .await
                .map_err(not_there)?;
            let moved: Vec<(String, i32)> = outcomes
                .iter()
                .filter(|(_, _, o)| o.is_ok())
                .map(|(t, p, _)| (t.clone(), p.0))
                .collect();
            // A partition whose preferred replica leads already is not news.
            let failed: Vec<String> = outcomes
                .iter()
                .filter_map(|(_, _, o)| o.as_ref().err())
                .filter(|e| {
                    !matches!(
                        e,
                        sluice_client::Error::Broker {
                            code: sluice_client::ErrorCode::ElectionNotNeeded,
                            ..
                        }
                    )
                })
                .map(ToString::to_string)
                .collect();
            print(
                format,
                || {
                    let mut text: String = moved
                        .iter()
                        .map(|(t, p)| format!("{t}/{p}: its preferred replica leads again\n"))
                        .collect();
                    if moved.is_empty() && failed.is_empty() {
                        text = "every partition is led by its preferred replica\n".into();
                    }
                    text
                },
                || {
                    serde_json::json!({
                        "elected": moved.iter().map(|(t, p)| serde_json::json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
                    })
                },
            )?;
            match failed.is_empty() {
                true => Ok(()),
                false => Err(failed.join("\n")),
            }
        }
        Command::Produce(args) => produce::run(client, args).await,
        Command::Consume(args) => consume::run(client, args, format).await,
        Command::Group(args) => group(admin(args.timeout), args.command, format).await,
        Command::User(args) => user(admin(args.timeout), args.command, format).await,
        Command::Acl(args) => acl(admin(args.timeout), args.command, format).await,
        Command::Quota(args) => quota(admin(args.timeout), args.command, format).await,
    }
}

async fn topic(admin: Admin, command: TopicCommand, format: Format) -> CliResult {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            replica_assignment,
        } => {
            let mut topic = NewTopic::new(name.clone(), partitions, replication_factor);
            topic.configs = configs.clone();
            if let Some(placed) = replica_assignment {
                topic = topic.assignment(
                    placed
                        .0
                        .into_iter()
                        .map(|p| p.into_iter().map(sluice_client::BrokerId).collect())
                        .collect(),
                );
            }
            let (partitions, replication_factor) = (topic.partitions, topic.replication_factor);
            admin.create_topic(topic).await.map_err(|e| e.to_string())?;
            print(
                format,
                || {
                    format!(
                        "created topic \"{name}\" with {partitions} partition{} and replication factor {replication_factor}\n",
                        if partitions == 1 { "" } else { "s" }
                    )
                },
                || {
                    serde_json::json!({
                        "name": name,
                        "partitions": partitions,
                        "replication_factor": replication_factor,
                        "config": configs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    })
                },
            )
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await.map_err(|e| e.to_string())?;
            print(
                format,
                || render::topic_list_text(&topics),
                || render::topic_list_json(&topics),
            )
        }
        TopicCommand::Describe { name } => {
            let topic = admin
                .describe_topic(&name)
                .await
                .map_err(|e| e.to_string())?;
            print(
                format,
                || render::topic_describe_text(&topic),
                || render::topic_describe_json(&topic),
            )
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await.map_err(not_there)?;
            print(
                format,
                || format!("deleted topic \"{name}\"\n"),
                || serde_json::json!({ "deleted": name }),
            )
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => {
            if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
                return Err(
                    "nothing to change: give -p N, -c KEY=VALUE or --delete-config KEY".into(),
                );
            }
            let changes: Vec<(&str, Option<&str>)> = configs
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .chain(delete_configs.iter().map(|k| (k.as_str(), None)))
                .collect();
            if !changes.is_empty() {
                admin
                    .alter_topic_configs(&name, &changes)
                    .await
                    .map_err(not_there)?;
            }
            if let Some(n) = partitions {
                admin.create_partitions(&name, n).await.map_err(not_there)?;
            }
            let mut text = String::new();
            if !changes.is_empty() {
                text += &format!("altered the configs of topic \"{name}\"\n");
            }
            if let Some(n) = partitions {
                text += &format!("topic \"{name}\" now has {n} partitions\n");
            }
            print(
                format,
                || text.clone(),
                || match partitions {
                    Some(n) => serde_json::json!({ "altered": name, "partitions": n }),
                    None => serde_json::json!({ "altered": name }),
                },
            )
        }
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            cancel,
        } => {
            let target = (!cancel).then(|| {
                replicas
                    .iter()
                    .copied()
                    .map(sluice_client::BrokerId)
                    .collect::<Vec<_>>()
            });
            let outcomes = admin
                .reassign_partitions(&name, &[(PartitionId(partition), target.clone())])
                .await
                .map_err(not_there)?;
            for (_, outcome) in outcomes {
                outcome.map_err(|e| e.to_string())?;
            }
            let ids = |ids: &[sluice_client::BrokerId]| {
                ids.iter()
                    .map(|b| b.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            print(
                format,
                || {
                    match &target {
                    Some(target) => format!(
                        "{name}/{partition}: moving to brokers {}; sluice topic reassignments shows it until it completes\n",
                        ids(target)
                    ),
                    None => format!("{name}/{partition}: move cancelled\n"),
                }
                },
                || {
                    serde_json::json!({
                        "topic": name,
                        "partition": partition,
                        "replicas": target.as_ref().map(|t| t.iter().map(|b| b.0).collect::<Vec<_>>()),
                    })
                },
            )
        }
        TopicCommand::Reassignments => {
            let ongoing = admin
                .list_reassignments()
                .await
                .map_err(|e| e.to_string())?;
            let ids = |ids: &[sluice_client::BrokerId]| {
                ids.iter()
                    .map(|b| b.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let nums =
                |ids: &[sluice_client::BrokerId]| ids.iter().map(|b| b.0).collect::<Vec<_>>();
            print(
                format,
                || {
                    ongoing
                        .iter()
                        .map(|r| {
                            format!(
                                "{}/{}: replicas {} adding {} removing {}\n",
                                r.topic,
                                r.partition,
                                ids(&r.replicas),
                                ids(&r.adding),
                                ids(&r.removing)
                            )
                        })
                        .collect()
                },
                || {
                    serde_json::Value::Array(
                        ongoing
                            .iter()
                            .map(|r| {
                                serde_json::json!({
                                    "topic": r.topic,
                                    "partition": r.partition.0,
                                    "replicas": nums(&r.replicas),
                                    "adding": nums(&r.adding),
                                    "removing": nums(&r.removing),
                                })
                            })
                            .collect(),
                    )
                },
            )
        }
        TopicCommand::DeleteRecords {
            name,
            offset,
            partition,
        } => {
            let partitions: Vec<PartitionId> = match partition {
                Some(p) => vec![PartitionId(p)],
                None => {
                    let topic = admin
                        .client()
                        .refresh_topic(&name)
                        .await
                        .map_err(not_there)?;
                    topic.partitions.iter().map(|p| p.partition).collect()
                }
            };
            let asked: Vec<(PartitionId, i64)> = partitions.iter().map(|&p| (p, offset)).collect();
            let outcomes = admin
                .delete_records(&name, &asked)
                .await
                .map_err(not_there)?;
            let mut failures = Vec::new();
            let mut text = String::new();
            let mut json = Vec::new();
            for (partition, outcome) in outcomes {
                match outcome {
                    Ok(low) => {
                        text += &format!("{name}/{partition}: records below {low} deleted\n");
                        json.push(
                            serde_json::json!({"partition": partition.0, "low_watermark": low}),
                        );
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            print(format, || text.clone(), || serde_json::json!(json))?;
            match failures.is_empty() {
                true => Ok(()),
                false => Err(failures.join("\n")),
            }
        }
    }
}

/// An error of a command on an existing topic: a missing topic gets no advice to create
/// it (the library's, right for produce and consume).
fn not_there(e: sluice_client::Error) -> String {
    match e {
        sluice_client::Error::UnknownTopic { topic } => {
            format!("topic \"{topic}\" does not exist; sluice topic list shows the topics")
        }
        other => other.to_string(),
    }
}

fn sasl_mechanism(name: &str) -> Result<SaslMechanism, String> {
    SaslMechanism::from_name(name).ok_or_else(|| {
        format!("{name:?} is not a SASL mechanism; use SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN")
    })
}

fn acl_of(spec: AclSpecArgs) -> Result<Acl, String> {
    let operation = AclOperation::from_name(&spec.operation).ok_or_else(|| {
        format!(
            "{:?} is not an operation; use read, write, create, delete, describe, alter or all",
            spec.operation
        )
    })?;
    let resource = match (spec.topic, spec.group, spec.transactional_id) {
        (Some(topic), _, _) => AclResource::Topic(topic),
        (_, Some(group), _) => AclResource::Group(group),
        (_, _, Some(id)) => AclResource::TransactionalId(id),
        _ => AclResource::Cluster,
    };
    if spec.prefixed && resource == AclResource::Cluster {
        return Err("--prefixed applies to --topic, --group and --transactional-id names".into());
    }
    Ok(Acl {
        principal: spec.principal,
        allow: spec.allow,
        operation,
        resource,
        prefixed: spec.prefixed,
    })
}

fn acl_json(acl: &Acl) -> serde_json::Value {
    let (resource_type, name) = match &acl.resource {
        AclResource::Topic(n) => ("topic", n.as_str()),
        AclResource::Group(n) => ("group", n.as_str()),
        AclResource::Cluster => ("cluster", "kafka-cluster"),
        AclResource::TransactionalId(n) => ("transactional_id", n.as_str()),
    };
    serde_json::json!({
        "principal": acl.principal,
        "permission": if acl.allow { "allow" } else { "deny" },
        "operation": acl.operation.name(),
        "resource_type": resource_type,
        "resource_name": name,
        "pattern": if acl.prefixed { "prefixed" } else { "literal" },
    })
}

async fn acl(admin: Admin, command: AclCommand, format: Format) -> CliResult {
    let e2s = |e: sluice_client::Error| e.to_string();
    match command {
        AclCommand::Add(spec) => {
            let acl = acl_of(spec)?;
            admin
                .add_acls(std::slice::from_ref(&acl))
                .await
                .map_err(e2s)?;
            print(
                format,
                || format!("added: {acl}\n"),
                || serde_json::json!({ "added": acl_json(&acl) }),
            )
        }
        AclCommand::Remove(spec) => {
            let acl = acl_of(spec)?;
            admin
                .remove_acls(std::slice::from_ref(&acl))
                .await
                .map_err(e2s)?;
            print(
                format,
                || format!("removed: {acl}\n"),
                || serde_json::json!({ "removed": acl_json(&acl) }),
            )
        }
        AclCommand::List { principal } => {
            let acls = admin.list_acls(principal.as_deref()).await.map_err(e2s)?;
            print(
                format,
                || acls.iter().map(|a| format!("{a}\n")).collect(),
                || serde_json::Value::Array(acls.iter().map(acl_json).collect()),
            )
        }
    }
}

async fn quota(admin: Admin, command: QuotaCommand, format: Format) -> CliResult {
    let e2s = |e: sluice_client::Error| e.to_string();
    const PRODUCER: &str = "producer_byte_rate";
    const CONSUMER: &str = "consumer_byte_rate";
    match command {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
        } => {
            let entity = quota_entity(entity);
            let set: Vec<(&str, u64)> = [
                (PRODUCER, producer_byte_rate),
                (CONSUMER, consumer_byte_rate),
            ]
            .into_iter()
            .filter_map(|(key, rate)| Some((key, rate?)))
            .collect();
            admin
                .alter_client_quotas(&entity, &set, &[])
                .await
                .map_err(e2s)?;
            let values: std::collections::BTreeMap<String, u64> =
                set.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            print(
                format,
                || format!("set {}\n", quota_line(&entity, &values)),
                || serde_json::json!({ "set": quota_json(&entity, &values) }),
            )
        }
        QuotaCommand::Remove {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
        } => {
            let entity = quota_entity(entity);
            let both = !producer_byte_rate && !consumer_byte_rate;
            let remove: Vec<&str> = [
                (PRODUCER, producer_byte_rate),
                (CONSUMER, consumer_byte_rate),
            ]
            .into_iter()
            .filter(|(_, named)| *named || both)
            .map(|(key, _)| key)
            .collect();
            admin
                .alter_client_quotas(&entity, &[], &remove)
                .await
                .map_err(e2s)?;
            print(
                format,
                || format!("removed {} of {entity}\n", remove.join(" and ")),
                || serde_json::json!({ "removed": remove, "entity": entity.to_string() }),
            )
        }
        QuotaCommand::List => {
            let quotas = admin.client_quotas().await.map_err(e2s)?;
            print(
                format,
                || {
                    quotas
                        .iter()
                        .map(|q| format!("{}\n", quota_line(&q.entity, &q.values)))
                        .collect()
                },
                || {
                    serde_json::Value::Array(
                        quotas
                            .iter()
                            .map(|q| quota_json(&q.entity, &q.values))
                            .collect(),
                    )
                },
            )
        }
    }
}

fn quota_entity(args: QuotaEntityArgs) -> QuotaEntity {
    let name = |named: Option<String>, default: bool| match (named, default) {
        (Some(n), _) => Some(QuotaName::Named(n)),
        (None, true) => Some(QuotaName::Default),
        (None, false) => None,
    };
    QuotaEntity {
        user: name(args.user, args.default_user),
        client_id: name(args.client_id, args.default_client_id),
    }
}

/// `user=alice,client-id=<default> producer_byte_rate=1048576`.
fn quota_line(entity: &QuotaEntity, values: &std::collections::BTreeMap<String, u64>) -> String {
    let rates: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{entity} {}", rates.join(" "))
}

fn quota_json(
    entity: &QuotaEntity,
    values: &std::collections::BTreeMap<String, u64>,
) -> serde_json::Value {
    let name = |n: &Option<QuotaName>| n.as_ref().map(|n| n.display().to_owned());
    serde_json::json!({
        "user": name(&entity.user),
        "client_id": name(&entity.client_id),
        "quotas": values,
    })
}

async fn user(admin: Admin, command: UserCommand, format: Format) -> CliResult {
    let e2s = |e: sluice_client::Error| e.to_string();
    match command {
        UserCommand::Create { name, mechanism } => {
            let mechanism = sasl_mechanism(&mechanism)?;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| format!("reading the password from standard input: {e}"))?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err("give the password on standard input, e.g. echo \"$PASSWORD\" | sluice user create NAME".into());
            }
            admin
                .create_user(&name, mechanism, password)
                .await
                .map_err(e2s)?;
            print(
                format,
                || format!("created user \"{name}\" ({})\n", mechanism.name()),
                || serde_json::json!({ "created": name, "mechanism": mechanism.name() }),
            )
        }
        UserCommand::Delete { name, mechanism } => {
            let mechanism = mechanism.as_deref().map(sasl_mechanism).transpose()?;
            admin.delete_user(&name, mechanism).await.map_err(e2s)?;
            print(
                format,
                || format!("deleted user \"{name}\"\n"),
                || serde_json::json!({ "deleted": name }),
            )
        }
        UserCommand::List => {
            let users = admin.list_users().await.map_err(e2s)?;
            print(
                format,
                || {
                    let mut out = String::new();
                    for u in &users {
                        let mechanisms: Vec<&str> =
                            u.mechanisms.iter().map(|(m, _)| m.as_str()).collect();
                        out.push_str(&format!("{}\t{}\n", u.name, mechanisms.join(",")));
                    }
                    out
                },
                || {
                    serde_json::Value::Array(
                        users
                            .iter()
                            .map(|u| {
                                serde_json::json!({
                                    "name": u.name,
                                    "mechanisms": u.mechanisms.iter().map(|(m, i)| serde_json::json!({"mechanism": m, "iterations": i})).collect::<Vec<_>>(),
                                })
                            })
                            .collect(),
                    )
                },
            )
        }
    }
}

async fn group(admin: Admin, command: GroupCommand, format: Format) -> CliResult {
    let e2s = |e: sluice_client::Error| e.to_string();
    match command {
        GroupCommand::List => {
            let groups = admin.list_groups().await.map_err(e2s)?;
            print(
                format,
                || render::group_list_text(&groups),
                || render::group_list_json(&groups),
            )
        }
        GroupCommand::Describe { group } => {
            let description = admin.describe_group(&group).await.map_err(e2s)?;
            let assigned: Vec<_> = description
                .members
                .iter()
                .flat_map(|m| m.assignment.iter().cloned())
                .collect();
            let offsets = admin.group_offsets(&group, &assigned).await.map_err(e2s)?;
            print(
                format,
                || render::group_describe_text(&description, &offsets),
                || render::group_describe_json(&description, &offsets),
            )
        }
        GroupCommand::Lag { group } => {
            let lags = admin.group_lag(&group).await.map_err(e2s)?;
            print(
                format,
                || render::group_lag_text(&lags),
                || render::group_lag_json(&lags),
            )
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
        } => {
            // clap requires exactly one of the three.
            let to = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => ResetTarget::Earliest,
                (_, true, _) => ResetTarget::Latest,
                (_, _, Some(offset)) => ResetTarget::Offset(offset),
                _ => return Err("choose --to-earliest, --to-latest or --to-offset N".to_owned()),
            };
            let offsets = admin.reset_offsets(&group, &topic, to).await.map_err(e2s)?;
            print(
                format,
                || render::group_reset_text(&group, &topic, &offsets),
                || render::group_reset_json(&group, &topic, &offsets),
            )
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await.map_err(e2s)?;
            print(
                format,
                || format!("deleted group \"{group}\"\n"),
                || serde_json::json!({ "deleted": group }),
            )
        }
    }
}

/// Prints one document in the chosen format.
fn print(
    format: Format,
    text: impl FnOnce() -> String,
    json: impl FnOnce() -> serde_json::Value,
) -> CliResult {
    let out = match format {
        Format::Text => text(),
        Format::Json => format!("{}\n", json()),
    };
    write_stdout(out.as_bytes())
}

/// Writes to stdout and flushes; a closed pipe (`| head`) is not an error worth a message.
fn write_stdout(bytes: &[u8]) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
}
