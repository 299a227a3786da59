//! An in-process sluice cluster for tests: 1..N real brokers (the same [`sluice_broker`]
//! code the `sluice-broker` binary runs, no test double) on free loopback ports, with
//! temporary data directories, started and stopped from the calling process.
//!
//! A test of your own code against three brokers, one of which dies (add
//! `sluice-testkit` as a dev-dependency):
//!
//! ```
//! use sluice_client::{Admin, Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
//! use sluice_testkit::Cluster;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a test: #[tokio::test(flavor = "multi_thread")] async fn ...
//! let mut cluster = Cluster::start(3).await?;
//! let client = Client::connect(ClientConfig {
//!     bootstrap: cluster.bootstrap_servers(), // ["127.0.0.1:PORT", ...]: the running nodes
//!     ..ClientConfig::default()
//! })
//! .await?;
//! Admin::new(client.clone()).create_topic(NewTopic::new("orders", 1, 3)).await?;
//! let producer = Producer::new(client, ProducerConfig::default());
//! producer.send(ProducerRecord::new("orders", "one")).await?.await?;
//!
//! cluster.kill(2).await; // as abrupt as SIGKILL for the broker's state
//! producer.send(ProducerRecord::new("orders", "two")).await?.await?; // two replicas are left
//! cluster.restart(2).await?; // same id, address and data directory
//! # Ok(())
//! # }
//! // Dropping the cluster stops the brokers and deletes their data.
//! ```
//!
//! Each broker runs on its own tokio runtime on its own thread, so [`Cluster::kill`] can
//! drop everything it runs at once: its sockets close, its tasks stop at their next await,
//! and nothing it has not yet written reaches the disk through it, as after a SIGKILL
//! (what it wrote is in the page cache and stays, as after a SIGKILL; acknowledged records
//! were fsynced before the acknowledgement anyway). What this cannot show is a crash of the
//! whole machine, and a paused process; tests of those need real processes
//! (`sluice-integration-tests`).
//!
//! Dropping the cluster stops every broker gracefully (the configured shutdown, up to
//! [`NodeSettings::shutdown_timeout`] each, all at once) and deletes the data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_broker::config::Voter;
use sluice_broker::server::Listeners;
use sluice_broker::{Broker, BrokerConfig, BrokerError};
use sluice_protocol::BrokerId;
use tokio::sync::oneshot;

/// What can go wrong starting or restarting a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding a listener or creating a directory or thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The broker refused to start (its own error says why).
    #[error("node {node} did not start: {source}")]
    Broker {
        /// The node.
        node: i32,
        /// The broker's error.
        #[source]
        source: BrokerError,
    },
    /// The broker started but did not register with the controller in time.
    #[error("node {node} did not become ready within {timeout:?}")]
    NotReady {
        /// The node.
        node: i32,
        /// How long it was given.
        timeout: Duration,
    },
    /// No node has this id.
    #[error("no node {0} in this cluster")]
    NoSuchNode(i32),
}

/// Settings every node of a cluster shares, on top of the broker's defaults.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// How long a node may take to register with the controller and open its replicas.
    pub ready_timeout: Duration,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Applied to each node's configuration (after the cluster's addresses and data
    /// directory are set), to change anything else, e.g. `broker_session_timeout_ms`.
    pub configure: fn(&mut BrokerConfig),
}

impl Default for NodeSettings {
    fn default() -> NodeSettings {
        NodeSettings {
            ready_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            configure: |_| {},
        }
    }
}

/// A running in-process cluster. Node ids are 1..=n; every node is a controller voter.
pub struct Cluster {
    nodes: BTreeMap<i32, Node>,
    settings: NodeSettings,
    /// Holds every node's data directory; deleted on drop, after the nodes stop.
    dir: tempfile::TempDir,
}

struct Node {
    config: BrokerConfig,
    running: Option<Running>,
}

struct Running {
    stop: oneshot::Sender<Stop>,
    thread: JoinHandle<()>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Graceful,
    Kill,
}

impl Cluster {
    /// Starts `n` brokers (1..=9 make sense on one machine) with the default settings and
    /// waits until every one has registered with the controller.
    pub async fn start(n: usize) -> Result<Cluster, Error> {
        Cluster::start_with(n, NodeSettings::default()).await
    }

    /// Starts `n` brokers with `settings`.
    pub async fn start_with(n: usize, settings: NodeSettings) -> Result<Cluster, Error> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-testkit-")
            .tempdir()
            .map_err(|source| io("creating the data directory", source))?;
        // Every address first: each node's voters list names all of them.
        let mut listeners = Vec::with_capacity(n);
        for _ in 0..n {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|source| io("binding a loopback port", source))?;
            listeners.push(listener);
        }
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()
            .map_err(|source| io("reading a bound address", source))?;
        let voters: Vec<Voter> = addresses
            .iter()
            .enumerate()
            .map(|(i, address)| Voter {
                id: BrokerId(i as i32 + 1),
                address: address.to_string(),
            })
            .collect();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            settings,
            dir,
        };
        let mut ready = Vec::with_capacity(n);
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as i32 + 1;
            let config = cluster.node_config(id, addresses[i], &voters);
            let (running, is_ready) = spawn_node(config.clone(), listener, &cluster.settings)?;
            cluster.nodes.insert(
                id,
                Node {
                    config,
                    running: Some(running),
                },
            );
            ready.push((id, is_ready));
        }
        for (id, is_ready) in ready {
            wait_started(id, is_ready, cluster.settings.ready_timeout).await?;
        }
        Ok(cluster)
    }

    fn node_config(&self, id: i32, address: SocketAddr, voters: &[Voter]) -> BrokerConfig {
        let mut config = BrokerConfig {
            node_id: BrokerId(id),
            listen: address,
            advertise: address.to_string(),
            kafka_listen: None,
            data_dir: self.data_dir(id),
            voters: voters.to_vec(),
            shutdown_timeout_ms: self.settings.shutdown_timeout.as_millis() as u64,
            ..BrokerConfig::default()
        };
        (self.settings.configure)(&mut config);
        config
    }

    fn data_dir(&self, id: i32) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// The ids of all nodes, running or not.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.keys().copied().collect()
    }

    /// Whether node `id` is running.
    pub fn is_running(&self, id: i32) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.running.is_some())
    }

    /// Node `id`'s native listener address.
    pub fn address(&self, id: i32) -> Result<SocketAddr, Error> {
        self.nodes
            .get(&id)
            .map(|n| n.config.listen)
            .ok_or(Error::NoSuchNode(id))
    }

    /// Node `id`'s configuration (its data directory, for instance).
    pub fn config(&self, id: i32) -> Result<&BrokerConfig, Error> {
        self.nodes
            .get(&id)
            .map(|n| &n.config)
            .ok_or(Error::NoSuchNode(id))
    }

    /// The bootstrap list of the running nodes, `HOST:PORT,...`, as the `sluice` CLI's
    /// `--bootstrap` and `SLUICE_BOOTSTRAP` take it.
    pub fn bootstrap(&self) -> String {
        self.bootstrap_servers().join(",")
    }

    /// The running nodes' addresses, `HOST:PORT` each, as `sluice_client::ClientConfig`'s
    /// `bootstrap` takes them.
    pub fn bootstrap_servers(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.running.is_some())
            .map(|n| n.config.listen.to_string())
            .collect()
    }

    /// Stops node `id` abruptly, as SIGKILL would (see the crate doc); a no-op if it is
    /// not running.
    pub async fn kill(&mut self, id: i32) {
        self.stop_node(id, Stop::Kill).await;
    }

    /// Stops node `id` gracefully (its leaderships move first, as on SIGTERM); a no-op if
    /// it is not running.
    pub async fn stop(&mut self, id: i32) {
        self.stop_node(id, Stop::Graceful).await;
    }

    async fn stop_node(&mut self, id: i32, how: Stop) {
        let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.take()) else {
            return;
        };
        let _ = running.stop.send(how);
        // The thread ends once the runtime has dropped everything; join off the caller's
        // runtime.
        let _ = tokio::task::spawn_blocking(move || running.thread.join()).await;
    }

    /// Starts node `id` again (stopped or killed), with its id, address and data, and
    /// waits until it has registered.
    pub async fn restart(&mut self, id: i32) -> Result<(), Error> {
        self.stop_node(id, Stop::Kill).await;
        let config = self.config(id)?.clone();
        let listener = bind_again(config.listen).await?;
        let (running, is_ready) = spawn_node(config, listener, &self.settings)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.running = Some(running);
        }
        wait_started(id, is_ready, self.settings.ready_timeout).await
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.node_ids())
            .field("bootstrap", &self.bootstrap())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Drop for Cluster {
    /// Stops every node gracefully and at once, then deletes the data.
    fn drop(&mut self) {
        let running: Vec<Running> = self
            .nodes
            .values_mut()
            .filter_map(|n| n.running.take())
            .collect();
        let threads: Vec<JoinHandle<()>> = running
            .into_iter()
            .map(|r| {
                let _ = r.stop.send(Stop::Graceful);
                r.thread
            })
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn io(what: &str, source: std::io::Error) -> Error {
    Error::Io {
        what: what.to_owned(),
        source,
    }
}

/// Binds `address` again for a restarted node; the old listener has just closed, so a
/// moment may pass before the port is free.
async fn bind_again(address: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let mut attempts = 0;
    loop {
        match std::net::TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(e) if attempts < 50 => {
                attempts += 1;
                tracing::debug!("binding {address} again: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => return Err(io(&format!("binding {address} again"), source)),
        }
    }
}

/// Starts one broker on its own thread and runtime. The receiver gets the outcome of its
/// start: `Ok` once it is ready, or the reason it stopped.
fn spawn_node(
    config: BrokerConfig,
    listener: std::net::TcpListener,
    settings: &NodeSettings,
) -> Result<(Running, oneshot::Receiver<Result<(), Error>>), Error> {
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let id = config.node_id.0;
    let ready_timeout = settings.ready_timeout;
    let thread = std::thread::Builder::new()
        .name(format!("sluice-node-{id}"))
        .spawn(move || run_node(config, listener, stop_rx, ready_tx, ready_timeout))
        .map_err(|source| io("starting a node's thread", source))?;
    Ok((
        Running {
            stop: stop_tx,
            thread,
        },
        ready_rx,
    ))
}

async fn wait_started(
    id: i32,
    ready: oneshot::Receiver<Result<(), Error>>,
    timeout: Duration,
) -> Result<(), Error> {
    match ready.await {
        Ok(outcome) => outcome,
        // The node's thread ended without a word: it panicked.
        Err(_) => Err(Error::NotReady { node: id, timeout }),
    }
}

/// A node's thread: its runtime serves the broker until told to stop.
fn run_node(
    config: BrokerConfig,
    listener: std::net::TcpListener,
    stop: oneshot::Receiver<Stop>,
    ready: oneshot::Sender<Result<(), Error>>,
    ready_timeout: Duration,
) {
    let id = config.node_id.0;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(format!("sluice-node-{id}"))
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = ready.send(Err(io("starting a node's runtime", source)));
            return;
        }
    };
    runtime.block_on(serve(config, listener, stop, ready, ready_timeout));
    // Every task still running on it (replica fetchers, the Raft node, connections) is
    // dropped at its next await, the abrupt end of a killed process; blocking I/O under
    // way gets a moment to finish, so the data directory's lock is free for a restart.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// Opens and runs the broker until told to stop; a graceful stop waits for its shutdown.
async fn serve(
    config: BrokerConfig,
    listener: std::net::TcpListener,
    stop: oneshot::Receiver<Stop>,
    ready: oneshot::Sender<Result<(), Error>>,
    ready_timeout: Duration,
) {
    let id = config.node_id.0;
    let native = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(native) => native,
        Err(source) => {
            let _ = ready.send(Err(io("serving a bound listener", source)));
            return;
        }
    };
    let broker = match Broker::open(config).await {
        Ok(broker) => broker,
        Err(source) => {
            let _ = ready.send(Err(Error::Broker { node: id, source }));
            return;
        }
    };
    let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
    let serving = tokio::spawn(sluice_broker::run(
        std::sync::Arc::clone(&broker),
        Listeners {
            native,
            kafka: None,
        },
        async move {
            let _ = graceful_rx.await;
        },
    ));
    let is_ready = broker.wait_ready(ready_timeout).await;
    drop(broker);
    let _ = ready.send(if is_ready {
        Ok(())
    } else {
        Err(Error::NotReady {
            node: id,
            timeout: ready_timeout,
        })
    });
    let how = stop.await.unwrap_or(Stop::Graceful);
    if how == Stop::Graceful {
        let _ = graceful_tx.send(());
        let _ = serving.await;
    }
}
