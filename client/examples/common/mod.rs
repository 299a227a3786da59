//! What every example shares: where the cluster is. With `SLUICE_BOOTSTRAP` set
//! (`HOST:PORT[,HOST:PORT...]`, as for the `sluice` CLI) an example talks to that cluster;
//! without it, it starts an in-process one with `sluice-testkit`, so
//! `cargo run -p sluice-client --example NAME` works on a machine with no broker running.

// Each example uses a part of this module; the rest is dead code in its build.
#![allow(dead_code)]

use sluice_client::{Admin, Client, ClientConfig, ErrorCode, NewTopic};
use sluice_testkit::Cluster;

/// The error type of the examples' `main`s: anything that prints.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connected client, and the in-process cluster behind it when there is one (dropping
/// it stops the brokers and deletes their data, so keep it alive as long as the client).
pub struct Target {
    pub client: Client,
    pub embedded: Option<Cluster>,
}

impl Target {
    /// The cluster named by `SLUICE_BOOTSTRAP`, or else `n_brokers` in-process brokers.
    pub async fn from_env(n_brokers: usize) -> Result<Target, BoxError> {
        match std::env::var("SLUICE_BOOTSTRAP") {
            Ok(bootstrap) if !bootstrap.is_empty() => Ok(Target {
                client: connect(&bootstrap).await?,
                embedded: None,
            }),
            _ => Target::embedded(n_brokers).await,
        }
    }

    /// `n_brokers` in-process brokers, and a client of them.
    pub async fn embedded(n_brokers: usize) -> Result<Target, BoxError> {
        let cluster = Cluster::start(n_brokers).await?;
        eprintln!(
            "started an in-process cluster of {n_brokers} at {}",
            cluster.bootstrap()
        );
        let config = ClientConfig {
            bootstrap: cluster.bootstrap_servers(),
            ..ClientConfig::default()
        };
        Ok(Target {
            client: Client::connect(config).await?,
            embedded: Some(cluster),
        })
    }
}

/// A client of the brokers in `bootstrap` (comma-separated `HOST:PORT`s).
pub async fn connect(bootstrap: &str) -> Result<Client, BoxError> {
    let config = ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_owned).collect(),
        ..ClientConfig::default()
    };
    Ok(Client::connect(config).await?)
}

/// Creates `topic`, or leaves it as it is if it exists already (an example run twice
/// against the same cluster).
pub async fn ensure_topic(client: &Client, topic: NewTopic) -> Result<(), BoxError> {
    match Admin::new(client.clone()).create_topic(topic).await {
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
        other => Ok(other?),
    }
}
