//! The cluster layer: the controller quorum's replicated metadata (an openraft Raft group
//! of the `--voters`, every other broker a learner), the metadata image every node applies,
//! and the active controller's logic (registrations, heartbeats and fencing, ISR changes,
//! topic placement).
//!
//! - [`image`]: the metadata image and the commands of the metadata log, applied
//!   deterministically on every node (pure: no I/O, no clock).
//! - [`raft`]: openraft's type configuration for sluice.
//! - [`store`]: the Raft log and state machine on disk (`<data_dir>/controller`).
//! - [`network`] and [`peer`]: Raft messages and every other broker-to-broker request
//!   over the native protocol, on the same listener as clients.
//! - [`election`]: when a voter stands for election: our timer and pre-vote in place of
//!   openraft's timer.
//! - [`controller`]: what the active controller does with registrations, heartbeats, ISR
//!   proposals and topic administration; session expiry and fencing.
//! - [`client`]: how any broker reaches the active controller.

pub mod client;
pub mod controller;
pub mod election;
pub mod image;
pub mod network;
pub mod peer;
pub mod raft;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::BasicNode;
use sluice_protocol::BrokerId;
use tokio::sync::watch;

use self::client::ControllerClient;
use self::controller::Controller;
use self::image::MetadataImage;
use self::raft::{Applied, NodeId, Raft};
use self::store::LogReader;
use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// How long a broker-to-broker connection may take to establish.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the Raft leader heartbeats its followers.
pub const RAFT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The settings of this node's connections to other brokers: the one place they are
/// made, so every connection (Raft, the controller client, replica fetchers) is dialled
/// from this node's listen IP and honours `peer_overrides`.
pub fn peer_config(config: &BrokerConfig) -> peer::PeerConfig {
    let mut peer =
        peer::PeerConfig::new(config.node_id, PEER_CONNECT_TIMEOUT, config.max_frame_bytes);
    peer.overrides = config
        .peer_overrides
        .iter()
        .map(|o| (o.id, o.address.clone()))
        .collect();
    peer.bind_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
    peer.tls = match (&config.tls.peer, config.inter_broker_tls) {
        (_, false) => peer::PeerTransport::Plain,
        (Some(tls), true) => peer::PeerTransport::Tls(tls.clone()),
        (None, true) => peer::PeerTransport::TlsWithoutCa,
    };
    peer
}

/// This node's part in the cluster.
pub struct Cluster {
    /// The metadata log's Raft node.
    pub raft: Raft,
    /// The controller logic, on voters.
    pub controller: Option<Arc<Controller>>,
    /// The way to the active controller.
    pub client: ControllerClient,
    /// The metadata log's entries, for pre-vote answers.
    pub log: LogReader,
    applied: watch::Receiver<Applied>,
    /// This broker's epoch from its current registration, -1 before it registers.
    broker_epoch: AtomicI64,
    voters: Vec<BrokerId>,
    /// A voter's election timer and what stops it, stopped (and awaited) before the Raft
    /// node: a timer tick that asked a stopping node for its state made openraft log an
    /// ERROR at a clean shutdown (see [`election::run_timer`]).
    election_timer: std::sync::Mutex<Option<(tokio::task::JoinHandle<()>, watch::Sender<bool>)>>,
}

impl Cluster {
    /// Opens the metadata log in `<data_dir>/controller`, starts the Raft node, and on a
    /// voter's first start initializes the quorum with every voter (the lowest-numbered
    /// at once, the others only if no leader appears: [`initialize_unless_formed`]; the
    /// same membership everywhere makes either safe).
    pub async fn start(config: &BrokerConfig) -> Result<Cluster, BrokerError> {
        let dir = config.data_dir.join("controller");
        let (applied_tx, applied) = watch::channel(Applied::default());
        let (mut log_store, state_machine) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || store::open(&dir, applied_tx))
                .await
                .map_err(|e| BrokerError::DataDir(format!("opening the metadata log: {e}")))??
        };
        let raft_config = openraft::Config {
            cluster_name: "sluice".into(),
            // Voters stand for election by our own timer, after a pre-vote
            // ([`election`]): openraft's timer is off. Its election timeouts still set its
            // leader lease (election_timeout_max): a voter that heard from a leader within
            // 400 ms refuses a vote, and grants no pre-vote either. openraft times each
            // AppendEntries out after one heartbeat interval, which is why the interval is
            // not shorter.
            heartbeat_interval: RAFT_HEARTBEAT_INTERVAL.as_millis() as u64,
            election_timeout_min: 300,
            election_timeout_max: 400,
            enable_elect: false,
            install_snapshot_timeout: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| BrokerError::Config(format!("raft configuration: {e}")))?;
        let node_id = config.node_id.0 as NodeId;
        let log = log_store.get_log_reader().await;
        let network = network::Network::new(node_id, peer_config(config));
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| BrokerError::DataDir(format!("starting the metadata log: {e}")))?;
        if config.is_voter() {
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|v| {
                    let node = BasicNode {
                        addr: v.address.clone(),
                    };
                    (v.id.0 as NodeId, node)
                })
                .collect();
            let rank = members.keys().position(|id| *id == node_id).unwrap_or(0) as u32;
            if rank == 0 {
                initialize(&raft, members).await?;
            } else {
                tokio::spawn(initialize_unless_formed(
                    raft.clone(),
                    members,
                    INITIALIZE_GRACE * rank,
                ));
            }
        }
        tokio::spawn(log_controller_changes(raft.metrics()));
        let controller = config.is_voter().then(|| {
            Arc::new(Controller::new(
                config.clone(),
                raft.clone(),
                applied.clone(),
            ))
        });
        let mut election_timer = None;
        if let Some(controller) = &controller {
            let voters = config
                .voters
                .iter()
                .map(|v| (v.id.0 as NodeId, v.address.clone()))
                .collect();
            let (stop, stopped) = watch::channel(false);
            let timer = tokio::spawn(election::run_timer(
                raft.clone(),
                log.clone(),
                node_id,
                voters,
                peer_config(config),
                controller.last_stand(),
                stopped,
            ));
            election_timer = Some((timer, stop));
        }
        let client = ControllerClient::new(config.clone(), raft.clone(), controller.clone());
        Ok(Cluster {
            raft,
            controller,
            client,
            log,
            applied,
            broker_epoch: AtomicI64::new(-1),
            voters: config.voters.iter().map(|v| v.id).collect(),
            election_timer: std::sync::Mutex::new(election_timer),
        })
    }

    /// The applied metadata, to watch for changes.
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.applied.clone()
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.applied.borrow().image)
    }

    /// The index of the last applied metadata entry.
    pub fn applied_index(&self) -> u64 {
        self.applied.borrow().index
    }

    /// The active controller, if one is known.
    pub fn controller_id(&self) -> Option<BrokerId> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|id| BrokerId(id as i32))
    }

    /// The controller quorum.
    pub fn voters(&self) -> &[BrokerId] {
        &self.voters
    }

    /// This broker's registration epoch, -1 before it registers.
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// Records this broker's epoch from a registration (`crate::lifecycle`).
    pub(crate) fn set_broker_epoch(&self, epoch: i64) {
        self.broker_epoch.store(epoch, Ordering::Release);
    }

    /// Waits until the applied image satisfies `ready`, or `timeout` passes; returns the
    /// image either way.
    pub async fn wait_for_image(
        &self,
        timeout: Duration,
        ready: impl Fn(&MetadataImage) -> bool,
    ) -> Arc<MetadataImage> {
        let mut applied = self.applied();
        let waited = tokio::time::timeout(timeout, applied.wait_for(|a| ready(&a.image))).await;
        match waited {
            Ok(Ok(a)) => Arc::clone(&a.image),
            _ => self.image(),
        }
    }

    /// Stops the election timer, then the Raft node.
    pub async fn shutdown(&self) {
        let timer = self
            .election_timer
            .lock()
            .expect("election timer lock")
            .take();
        if let Some((timer, stop)) = timer {
            let _ = stop.send(true);
            let _ = timer.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("stopping the metadata log: {e}");
        }
    }
}

/// How long a voter other than the lowest-numbered waits, per rank, before it forms the
/// quorum itself on a first start (see [`initialize_unless_formed`]).
const INITIALIZE_GRACE: Duration = Duration::from_secs(2);

/// Forms the quorum with `members` on this voter's first start; a no-op once formed.
async fn initialize(raft: &Raft, members: BTreeMap<NodeId, BasicNode>) -> Result<(), BrokerError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| BrokerError::DataDir(format!("metadata log: {e}")))?;
    if !initialized {
        match raft.initialize(members).await {
            Ok(()) => tracing::info!("initialized the controller quorum"),
            Err(e) => tracing::info!("controller quorum already formed: {e}"),
        }
    }
    Ok(())
}

/// The lowest-numbered voter forms the quorum on a first start; the k-th other one does
/// only if it has heard nothing from a leader after `grace` (k times
/// [`INITIALIZE_GRACE`]), so a first start does not wait for a voter that is down. Why not
/// every voter at once: each initialize makes its node a candidate in term 1; the losers
/// are left with a vote openraft cannot compare with the winner's, refuse its entries,
/// and make it step down until somebody stands again in term 2 (an election more, and a
/// fencing of the first controller, on most first starts).
async fn initialize_unless_formed(
    raft: Raft,
    members: BTreeMap<NodeId, BasicNode>,
    grace: Duration,
) {
    tokio::time::sleep(grace).await;
    if let Err(e) = initialize(&raft, members).await {
        tracing::warn!("forming the controller quorum: {e}");
    }
}

/// Logs, at INFO, each change of the active controller as this node sees it: the account
/// of the quorum an operator reads, in place of openraft's own per-RPC lines (which the
/// binary's default log filter leaves out: a peer that restarts is normal operation).
async fn log_controller_changes(
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
) {
    let mut last: Option<NodeId> = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            match leader {
                Some(id) => tracing::info!("node {id} is the active controller (term {term})"),
                None => {
                    tracing::info!("no active controller (term {term}): an election is under way")
                }
            }
            last = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
