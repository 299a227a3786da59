//! The command line of `sluice`, exactly as `shared/INTERFACES.md` specifies it.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use sluice_client::Compression;

/// Command-line client of the sluice log broker.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Command-line client of the sluice log broker: manage topics and consumer groups, \
             produce standard input, consume to standard output.",
    propagate_version = true
)]
pub struct Cli {
    /// Brokers to connect to: HOST:PORT, comma-separated; the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP",
        default_value = sluice_client::DEFAULT_BOOTSTRAP,
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub bootstrap: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format: human-readable text, or JSON (one document, or one object per line
    /// for streams of records).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Log in with this SASL mechanism (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN), for brokers
    /// that require authentication; the password comes from SLUICE_SASL_PASSWORD.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SASL_MECHANISM",
        value_name = "MECHANISM",
        requires = "sasl_username"
    )]
    pub sasl_mechanism: Option<String>,
    /// The user to log in as (with --sasl-mechanism).
    #[arg(
        long,
        global = true,
        env = "SLUICE_SASL_USERNAME",
        value_name = "USER",
        requires = "sasl_mechanism"
    )]
    pub sasl_username: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// TLS to the brokers (shared with `sluice-bench`).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Connect with TLS, verifying the brokers' certificates against this PEM CA file.
    #[arg(long, global = true, env = "SLUICE_TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for brokers that require one (mutual TLS).
    #[arg(long, global = true, env = "SLUICE_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, global = true, env = "SLUICE_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<std::path::PathBuf>,
}

/// How output is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable text: aligned tables, one record per line.
    Text,
    /// JSON.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe, alter and delete topics.
    Topic(TopicArgs),
    /// Send standard input to a topic, one record per line.
    Produce(ProduceArgs),
    /// Print a topic's records, one per line.
    Consume(ConsumeArgs),
    /// Inspect and manage consumer groups.
    Group(GroupArgs),
    /// Inspect the cluster.
    Cluster(ClusterArgs),
    /// Manage SCRAM users (SASL authentication).
    User(UserArgs),
    /// Manage ACLs (enforced by brokers run with --authorizer on).
    Acl(AclArgs),
    /// Manage client quotas (byte rates per user and client id, enforced by every broker).
    Quota(QuotaArgs),
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(flatten)]
    pub timeout: AdminTimeout,
    #[command(subcommand)]
    pub command: QuotaCommand,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a user's, a client id's or a user's client id's quotas (bytes per second).
    #[command(group(ArgGroup::new("rate").required(true).multiple(true).args(["producer_byte_rate", "consumer_byte_rate"])))]
    Set {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Bytes per second the clients may produce (Kafka's producer_byte_rate).
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        producer_byte_rate: Option<u64>,
        /// Bytes per second the clients may consume (Kafka's consumer_byte_rate).
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        consumer_byte_rate: Option<u64>,
    },
    /// Remove quotas: those named, or both.
    Remove {
        #[command(flatten)]
        entity: QuotaEntityArgs,
        /// Remove the producer byte rate.
        #[arg(long)]
        producer_byte_rate: bool,
        /// Remove the consumer byte rate.
        #[arg(long)]
        consumer_byte_rate: bool,
    },
    /// List every quota.
    List,
}

/// Whom a quota is for, on the command line.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("entity").required(true).multiple(true).args(["user", "default_user", "client_id", "default_client_id"])))]
pub struct QuotaEntityArgs {
    /// For this user (a SASL user's name, without User:).
    #[arg(long, value_name = "NAME", conflicts_with = "default_user")]
    pub user: Option<String>,
    /// For every user without a quota of their own.
    #[arg(long)]
    pub default_user: bool,
    /// For clients with this client id.
    #[arg(long, value_name = "ID", conflicts_with = "default_client_id")]
    pub client_id: Option<String>,
    /// For every client id without a quota of its own.
    #[arg(long)]
    pub default_client_id: bool,
}

#[derive(Debug, Args)]
pub struct AclArgs {
    #[command(flatten)]
    pub timeout: AdminTimeout,
    #[command(subcommand)]
    pub command: AclCommand,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add an ACL.
    Add(AclSpecArgs),
    /// Remove an ACL (given exactly as it was added).
    Remove(AclSpecArgs),
    /// List ACLs.
    List {
        /// Only this principal's ACLs.
        #[arg(long, value_name = "User:NAME")]
        principal: Option<String>,
    },
}

/// One ACL on the command line.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("permission").required(true).args(["allow", "deny"])))]
#[command(group(ArgGroup::new("resource").required(true).args(["topic", "group", "transactional_id", "cluster"])))]
pub struct AclSpecArgs {
    /// Who: User:NAME, or User:* for everyone.
    #[arg(long, value_name = "User:NAME")]
    pub principal: String,
    /// Allow the operation.
    #[arg(long)]
    pub allow: bool,
    /// Deny the operation (a deny wins over any allow).
    #[arg(long)]
    pub deny: bool,
    /// read, write, create, delete, describe, alter or all.
    #[arg(long, value_name = "OPERATION")]
    pub operation: String,
    /// On this topic (* for every topic).
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// On this consumer group (* for every group).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// On this transactional id (* for every id): a transactional producer needs write.
    #[arg(long, value_name = "NAME")]
    pub transactional_id: Option<String>,
    /// On the cluster (topic creation, users, ACLs).
    #[arg(long)]
    pub cluster: bool,
    /// The topic, group or transactional id is a prefix: every name starting with it.
    #[arg(long)]
    pub prefixed: bool,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub timeout: AdminTimeout,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or replace its password, reading the password from standard input
    /// (one line). It is salted and hashed here; brokers never see it.
    Create {
        /// The user's name.
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN logins are checked against either).
        #[arg(long, default_value = "SCRAM-SHA-256", value_name = "MECHANISM")]
        mechanism: String,
    },
    /// Delete a user's credentials (of every mechanism, or of one).
    Delete {
        /// The user's name.
        name: String,
        /// Delete only this mechanism's credential.
        #[arg(long, value_name = "MECHANISM")]
        mechanism: Option<String>,
    },
    /// List users and their mechanisms.
    List,
}

/// How long an admin command keeps retrying what may pass (no active controller, a broker
/// restarting) before it fails; while it waits it says on stderr what for.
#[derive(Debug, Args)]
pub struct AdminTimeout {
    /// Give up after this long (retries included).
    #[arg(long, global = true, value_name = "MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub timeout: AdminTimeout,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub timeout: AdminTimeout,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub timeout: AdminTimeout,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name (ASCII letters, digits, '.', '_' and '-').
        name: String,
        /// Number of partitions.
        #[arg(short, long, default_value_t = 1, value_name = "N")]
        partitions: i32,
        /// Replicas per partition (at most the number of brokers).
        #[arg(short, long, default_value_t = 1, value_name = "R")]
        replication_factor: i16,
        /// A topic config, repeatable. Keys: retention.ms, retention.bytes, segment.bytes,
        /// segment.ms, min.insync.replicas, unclean.leader.election.enable,
        /// compression.type (only `producer`: batches stay as the producer compressed them),
        /// cleanup.policy (delete, compact or compact,delete), delete.retention.ms,
        /// min.cleanable.dirty.ratio, min.compaction.lag.ms, max.compaction.lag.ms (clean
        /// within this whatever the dirty ratio), message.timestamp.after.max.ms and
        /// message.timestamp.before.max.ms (how far ahead of or behind the broker's clock a
        /// record's timestamp may be), message.timestamp.type (CreateTime or
        /// LogAppendTime: the broker's clock stamps each batch), max.message.bytes (the
        /// largest batch a producer may append), index.interval.bytes and
        /// segment.index.bytes (the offset index's spacing and size). Accepted for Kafka's
        /// tools, changing nothing here: compression.gzip.level, compression.lz4.level,
        /// compression.zstd.level, file.delete.delay.ms, flush.messages, flush.ms,
        /// preallocate, segment.jitter.ms, and at their off values
        /// follower.replication.throttled.replicas, leader.replication.throttled.replicas,
        /// local.retention.bytes, local.retention.ms, remote.storage.enable.
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Place the replicas yourself instead of -p and -r (Kafka's syntax): partitions
        /// separated by commas, each partition's broker ids by colons, the first leading;
        /// `1:2,2:3` puts partition 0 on brokers 1 and 2, partition 1 on 2 and 3.
        #[arg(
            long,
            value_name = "B:B,B:B",
            value_parser = parse_replica_assignment,
            conflicts_with_all = ["partitions", "replication_factor"]
        )]
        replica_assignment: Option<ReplicaAssignment>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions (leader, replicas, ISR, offsets) and configuration.
    Describe {
        /// The topic's name.
        name: String,
    },
    /// Delete a topic and all its records.
    Delete {
        /// The topic's name.
        name: String,
    },
    /// Change a topic's configuration: set keys, or remove them (back to the broker's
    /// default), all together or none; or give it more partitions.
    Alter {
        /// The topic's name.
        name: String,
        /// Grow the topic to N partitions (more than it has; partitions cannot be removed).
        /// Existing records stay where they are, so keys map to other partitions from now on.
        #[arg(short, long, value_name = "N")]
        partitions: Option<i32>,
        /// A configuration to set, repeatable: retention.ms, retention.bytes,
        /// segment.bytes, segment.ms, min.insync.replicas, unclean.leader.election.enable,
        /// compression.type (only `producer`), cleanup.policy, delete.retention.ms,
        /// min.cleanable.dirty.ratio, min.compaction.lag.ms, max.compaction.lag.ms,
        /// message.timestamp.after.max.ms, message.timestamp.before.max.ms,
        /// message.timestamp.type, max.message.bytes, index.interval.bytes,
        /// segment.index.bytes, and Kafka's that change nothing here (see topic create).
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// A configuration to remove from the topic, repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete the records below an offset (Kafka's DeleteRecords): consumers then start at
    /// that offset. Only committed records can be deleted.
    DeleteRecords {
        /// The topic's name.
        name: String,
        /// Delete the records below this offset; -1 deletes every committed record.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        offset: i64,
        /// Only this partition (default: every partition of the topic).
        #[arg(short, long, value_name = "P")]
        partition: Option<i32>,
    },
    /// Move a partition to other brokers (Kafka's partition reassignment), or cancel its
    /// move. The added replicas copy the log; the move completes once they are in sync,
    /// then the replicas left behind are deleted.
    #[command(group(ArgGroup::new("target").required(true).args(["replicas", "cancel"])))]
    Reassign {
        /// The topic's name.
        name: String,
        /// The partition.
        #[arg(short, long, value_name = "P")]
        partition: i32,
        /// The broker ids to move it to, comma-separated; the first leads once the move
        /// completes.
        #[arg(long, value_name = "ID,ID,...", value_delimiter = ',')]
        replicas: Vec<i32>,
        /// Move it back to the replicas it had before its move.
        #[arg(long)]
        cancel: bool,
    },
    /// List the partition moves under way.
    Reassignments,
}

/// `--acks` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Do not wait for any acknowledgement.
    #[value(name = "0")]
    None,
    /// Wait for the leader to write the record.
    #[value(name = "1")]
    Leader,
    /// Wait for every in-sync replica.
    #[value(name = "all", alias = "-1")]
    All,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The topic to write to.
    pub topic: String,
    /// Acknowledgement to wait for: 0 (none), 1 (leader), all (every in-sync replica).
    #[arg(long, value_enum, default_value_t = AcksArg::All, allow_negative_numbers = true)]
    pub acks: AcksArg,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long, value_name = "P")]
    pub partition: Option<i32>,
    /// Split each line at the first SEP: the text before is the key, the rest the value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Idempotent writes (no duplicates when a send is retried); applies with --acks all.
    #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_idempotence: bool,
    /// How long a record may wait for its acknowledgement, retries included, before the
    /// command gives up (a partition without a leader, too few in-sync replicas...).
    #[arg(long, value_name = "MS", default_value_t = 120_000)]
    pub timeout_ms: u64,
    /// Largest batch of records sent to a partition in one request, in bytes (never more
    /// than the topic's segment.bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Compress each batch: none, gzip, snappy, lz4 or zstd (Kafka's codecs; consumers,
    /// Kafka's included, decompress transparently).
    #[arg(long, value_name = "CODEC", default_value_t = Compression::None, value_parser = parse_codec)]
    pub compression: Compression,
    /// Compression level: gzip 1-9 (default 6), zstd 1-22 (default 3).
    #[arg(long, value_name = "LEVEL", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,
}

/// Parses `--compression` with Kafka's codec names.
pub fn parse_codec(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>().map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic to read.
    pub topic: String,
    /// Consume as a member of this consumer group (resumes from committed offsets).
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Start at the earliest record (default: only records produced from now on).
    #[arg(long)]
    pub from_beginning: bool,
    /// Read only this partition.
    #[arg(long, value_name = "P")]
    pub partition: Option<i32>,
    /// Start at this offset (in every partition read; use with --partition).
    #[arg(long, value_name = "N", conflicts_with = "from_beginning")]
    pub offset: Option<i64>,
    /// Stop after this many records.
    #[arg(short = 'n', long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Stop when no new record arrived for this long.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Print each record as key SEP value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Which records to print: only those of committed transactions (and every
    /// non-transactional one), or also those of open and aborted transactions.
    #[arg(long, value_name = "LEVEL", default_value = "read_committed")]
    pub isolation_level: IsolationArg,
}

/// `--isolation-level` values, Kafka's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// Records of committed transactions, up to the last stable offset.
    #[value(name = "read_committed")]
    ReadCommitted,
    /// Every record up to the high watermark.
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

impl IsolationArg {
    pub fn level(self) -> sluice_client::IsolationLevel {
        match self {
            IsolationArg::ReadCommitted => sluice_client::IsolationLevel::ReadCommitted,
            IsolationArg::ReadUncommitted => sluice_client::IsolationLevel::ReadUncommitted,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's members, assignments, committed offsets and lag.
    Describe {
        /// The group's id.
        group: String,
    },
    /// Show a group's lag per partition: in records, and in seconds (how old the next
    /// record it has not consumed is).
    Lag {
        /// The group's id.
        group: String,
    },
    /// Overwrite a group's committed offsets for a topic (the group must have no members).
    #[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
    ResetOffsets {
        /// The group's id.
        group: String,
        /// The topic whose offsets to reset.
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// Reset to each partition's earliest offset.
        #[arg(long)]
        to_earliest: bool,
        /// Reset to each partition's latest offset.
        #[arg(long)]
        to_latest: bool,
        /// Reset every partition to this offset.
        #[arg(long, value_name = "N")]
        to_offset: Option<i64>,
    },
    /// Delete a group with no members, and its committed offsets.
    Delete {
        /// The group's id.
        group: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, the controller quorum and every broker.
    Describe,
    /// Move leaderships back to each partition's preferred replica (the first assigned)
    /// where it is in sync; the controller also does this every few minutes.
    ElectLeaders {
        /// Only this topic's partitions (default: every topic).
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
}

/// `--replica-assignment`: each partition's broker ids, in partition order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaAssignment(pub Vec<Vec<i32>>);

fn parse_replica_assignment(s: &str) -> Result<ReplicaAssignment, String> {
    let partitions: Result<Vec<Vec<i32>>, String> = s
        .split(',')
        .map(|partition| {
            partition
                .split(':')
                .map(|id| {
                    id.trim().parse::<i32>().map_err(|_| {
                        format!("expected broker ids like 1:2,2:3, got {id:?} in \"{s}\"")
                    })
                })
                .collect()
        })
        .collect();
    partitions.map(ReplicaAssignment)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got \"{s}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut argv = vec!["sluice"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn fails(args: &[&str]) -> String {
        let mut argv = vec!["sluice"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn globals_default_and_go_anywhere() {
        // The environment may set SLUICE_BOOTSTRAP; pass the flag to test the parse.
        let cli = parse(&["topic", "list"]);
        assert_eq!(cli.format, Format::Text);
        let cli = parse(&[
            "--format",
            "json",
            "--bootstrap",
            "a:1,b:2",
            "topic",
            "list",
        ]);
        assert_eq!(
            (cli.format, cli.bootstrap.as_str()),
            (Format::Json, "a:1,b:2")
        );
        let cli = parse(&["topic", "list", "--format", "json", "--bootstrap", "h:9"]);
        assert_eq!((cli.format, cli.bootstrap.as_str()), (Format::Json, "h:9"));
        assert!(fails(&["topic", "list", "--format", "yaml"]).contains("yaml"));
    }

    fn topic_of(command: Command) -> TopicCommand {
        match command {
            Command::Topic(args) => args.command,
            other => panic!("{other:?}"),
        }
    }

    fn group_of(command: Command) -> GroupCommand {
        match command {
            Command::Group(args) => args.command,
            other => panic!("{other:?}"),
        }
    }

    fn cluster_of(command: Command) -> ClusterCommand {
        match command {
            Command::Cluster(args) => args.command,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_replica_assignment_is_kafkas_syntax_and_excludes_counts() {
        match topic_of(parse(&["topic", "create", "t", "--replica-assignment", "1:2,3:1"]).command)
        {
            TopicCommand::Create {
                replica_assignment, ..
            } => assert_eq!(
                replica_assignment,
                Some(ReplicaAssignment(vec![vec![1, 2], vec![3, 1]]))
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            fails(&["topic", "create", "t", "--replica-assignment", "1:x"]).contains("1:2,2:3")
        );
        assert!(fails(&[
            "topic",
            "create",
            "t",
            "-r",
            "2",
            "--replica-assignment",
            "1:2"
        ])
        .contains("cannot be used with"));
    }

    #[test]
    fn timeouts_have_defaults_and_go_after_the_subcommand() {
        match parse(&["topic", "create", "t", "--timeout-ms", "500"]).command {
            Command::Topic(args) => assert_eq!(args.timeout.timeout_ms, 500),
            other => panic!("{other:?}"),
        }
        match parse(&["group", "list"]).command {
            Command::Group(args) => assert_eq!(args.timeout.timeout_ms, 30_000),
            other => panic!("{other:?}"),
        }
        match parse(&["produce", "t", "--timeout-ms", "2000"]).command {
            Command::Produce(args) => assert_eq!(args.timeout_ms, 2000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn topic_commands() {
        match topic_of(
            parse(&[
                "topic",
                "create",
                "t1",
                "-p",
                "3",
                "-r",
                "2",
                "-c",
                "retention.ms=10",
                "--config",
                "segment.bytes=1024",
            ])
            .command,
        ) {
            TopicCommand::Create {
                name,
                partitions,
                replication_factor,
                configs,
                replica_assignment,
            } => {
                assert_eq!(
                    (name.as_str(), partitions, replication_factor),
                    ("t1", 3, 2)
                );
                assert_eq!(replica_assignment, None);
                assert_eq!(
                    configs,
                    vec![
                        ("retention.ms".into(), "10".into()),
                        ("segment.bytes".into(), "1024".into())
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        match topic_of(
            parse(&[
                "topic",
                "create",
                "t",
                "--partitions",
                "4",
                "--replication-factor",
                "1",
            ])
            .command,
        ) {
            TopicCommand::Create {
                partitions: 4,
                replication_factor: 1,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        match topic_of(parse(&["topic", "create", "t"]).command) {
            TopicCommand::Create {
                partitions: 1,
                replication_factor: 1,
                configs,
                ..
            } => assert!(configs.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(fails(&["topic", "create", "t", "-c", "novalue"]).contains("KEY=VALUE"));
        assert!(matches!(
            topic_of(parse(&["topic", "list"]).command),
            TopicCommand::List
        ));
        assert!(
            matches!(topic_of(parse(&["topic", "describe", "x"]).command), TopicCommand::Describe { name } if name == "x")
        );
        assert!(
            matches!(topic_of(parse(&["topic", "delete", "x"]).command), TopicCommand::Delete { name } if name == "x")
        );
        fails(&["topic", "describe"]);
    }

    #[test]
    fn produce() {
        match parse(&["produce", "t"]).command {
            Command::Produce(a) => {
                assert_eq!(a.acks, AcksArg::All);
                assert_eq!((a.partition, a.key_separator), (None, None));
            }
            other => panic!("{other:?}"),
        }
        for (flag, acks) in [
            ("0", AcksArg::None),
            ("1", AcksArg::Leader),
            ("all", AcksArg::All),
            ("-1", AcksArg::All),
        ] {
            match parse(&["produce", "t", "--acks", flag]).command {
                Command::Produce(a) => assert_eq!(a.acks, acks),
                other => panic!("{other:?}"),
            }
        }
        match parse(&["produce", "t", "--partition", "2", "--key-separator", "|"]).command {
            Command::Produce(a) => assert_eq!(
                (a.partition, a.key_separator.as_deref()),
                (Some(2), Some("|"))
            ),
            other => panic!("{other:?}"),
        }
        fails(&["produce", "t", "--acks", "2"]);
        match parse(&["produce", "t"]).command {
            Command::Produce(a) => assert!(a.enable_idempotence),
            other => panic!("{other:?}"),
        }
        match parse(&["produce", "t", "--enable-idempotence", "false"]).command {
            Command::Produce(a) => assert!(!a.enable_idempotence),
            other => panic!("{other:?}"),
        }
        fails(&["produce", "t", "--enable-idempotence", "maybe"]);
        match parse(&["produce", "t"]).command {
            Command::Produce(a) => {
                assert_eq!(
                    (a.compression, a.compression_level),
                    (Compression::None, None)
                )
            }
            other => panic!("{other:?}"),
        }
        let args = [
            "produce",
            "t",
            "--compression",
            "zstd",
            "--compression-level",
            "7",
        ];
        match parse(&args).command {
            Command::Produce(a) => {
                assert_eq!(
                    (a.compression, a.compression_level),
                    (Compression::Zstd, Some(7))
                )
            }
            other => panic!("{other:?}"),
        }
        fails(&["produce", "t", "--compression", "brotli"]);
    }

    #[test]
    fn consume() {
        match parse(&["consume", "t"]).command {
            Command::Consume(a) => {
                assert!(!a.from_beginning);
                assert_eq!(
                    (a.group, a.partition, a.offset, a.max_messages, a.timeout_ms),
                    (None, None, None, None, None)
                );
            }
            other => panic!("{other:?}"),
        }
        let args = [
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--partition",
            "1",
            "-n",
            "5",
            "--timeout-ms",
            "300",
            "--key-separator",
            "=",
        ];
        match parse(&args).command {
            Command::Consume(a) => {
                assert!(a.from_beginning);
                assert_eq!(a.group.as_deref(), Some("g"));
                assert_eq!(
                    (a.partition, a.max_messages, a.timeout_ms),
                    (Some(1), Some(5), Some(300))
                );
                assert_eq!(a.key_separator.as_deref(), Some("="));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["consume", "t", "--offset", "7", "--max-messages", "2"]).command {
            Command::Consume(a) => assert_eq!((a.offset, a.max_messages), (Some(7), Some(2))),
            other => panic!("{other:?}"),
        }
        fails(&["consume", "t", "--offset", "1", "--from-beginning"]);
    }

    #[test]
    fn group_and_cluster_commands() {
        assert!(matches!(
            group_of(parse(&["group", "list"]).command),
            GroupCommand::List
        ));
        assert!(
            matches!(group_of(parse(&["group", "describe", "g"]).command), GroupCommand::Describe { group } if group == "g")
        );
        assert!(
            matches!(group_of(parse(&["group", "lag", "g"]).command), GroupCommand::Lag { group } if group == "g")
        );
        assert!(
            matches!(group_of(parse(&["group", "delete", "g"]).command), GroupCommand::Delete { group } if group == "g")
        );
        match group_of(
            parse(&[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-offset",
                "5",
            ])
            .command,
        ) {
            GroupCommand::ResetOffsets {
                group,
                topic,
                to_offset,
                to_earliest,
                to_latest,
            } => {
                assert_eq!(
                    (
                        group.as_str(),
                        topic.as_str(),
                        to_offset,
                        to_earliest,
                        to_latest
                    ),
                    ("g", "t", Some(5), false, false)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            group_of(
                parse(&[
                    "group",
                    "reset-offsets",
                    "g",
                    "--topic",
                    "t",
                    "--to-earliest"
                ])
                .command
            ),
            GroupCommand::ResetOffsets {
                to_earliest: true,
                ..
            }
        ));
        assert!(matches!(
            group_of(
                parse(&["group", "reset-offsets", "g", "--topic", "t", "--to-latest"]).command
            ),
            GroupCommand::ResetOffsets {
                to_latest: true,
                ..
            }
        ));
        fails(&["group", "reset-offsets", "g", "--topic", "t"]);
        fails(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest",
        ]);
        assert!(matches!(
            cluster_of(parse(&["cluster", "describe"]).command),
            ClusterCommand::Describe
        ));
    }

    #[test]
    fn help_everywhere() {
        let commands: &[&[&str]] = &[
            &[],
            &["topic"],
            &["topic", "create"],
            &["topic", "list"],
            &["topic", "describe"],
            &["topic", "delete"],
            &["produce"],
            &["consume"],
            &["group"],
            &["group", "list"],
            &["group", "describe"],
            &["group", "reset-offsets"],
            &["group", "delete"],
            &["cluster"],
            &["cluster", "describe"],
        ];
        for command in commands {
            let mut argv = vec!["sluice"];
            argv.extend_from_slice(command);
            argv.push("--help");
            let e = Cli::try_parse_from(&argv).expect_err("help exits");
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{argv:?}");
        }
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
