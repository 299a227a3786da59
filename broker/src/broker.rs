//! The node's shared state ([`Broker`]): configuration, the cluster (metadata log,
//! controller), the hosted topics, the group coordinator's shards, the [`Services`] the
//! listeners call, and the lifecycle signals (registered, fenced, shutdown). The work
//! that runs over this state is elsewhere: `background` (metadata application,
//! maintenance), `lifecycle` (registration, heartbeats), `replication`; they import
//! `Broker`, and it imports none of them.

use std::sync::Arc;
use std::time::Duration;

use sluice_storage::{Clock, SystemClock};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::data_dir::{DataDirLock, NodeFile, NodeIdentity};
use crate::error::BrokerError;
use crate::groups::group::GroupTimings;
use crate::groups::Coordinator;
use crate::groups::GroupCoordinator;
use crate::metrics::Metrics;
use crate::services::admin::Admin;
use crate::services::fetch::Fetch;
use crate::services::offsets::Offsets;
use crate::services::produce::Produce;
use crate::services::producer_ids::ProducerIds;
use crate::topics::Topics;

/// Everything a request handler may use. Shared by every connection as `Arc<Broker>`.
pub struct Broker {
    /// The effective configuration.
    pub config: BrokerConfig,
    /// The metadata log, the controller and the way to it.
    pub cluster: Arc<Cluster>,
    /// Topics and partition replicas hosted here.
    pub topics: Arc<Topics>,
    /// The consumer groups of the `__consumer_offsets` partitions led here.
    pub groups: Arc<GroupCoordinator>,
    /// The services the listeners' handlers call.
    pub services: Arc<Services>,
    /// The event metrics (counters, histograms) everything on the request path moves;
    /// `http` exports them with the state it computes at each scrape.
    pub metrics: Arc<Metrics>,
    /// Who owns the data directory, and the cluster it joined.
    pub identity: std::sync::Mutex<(NodeIdentity, NodeFile)>,
    /// The address Kafka clients connect to, once the Kafka listener is bound; registered
    /// with the controller as the `kafka` listener.
    kafka_address: std::sync::OnceLock<String>,
    /// This process's exclusive lock on the data directory, released by
    /// [`Broker::release_data_dir`] once everything in it is closed.
    data_dir_lock: std::sync::Mutex<Option<DataDirLock>>,
    /// Wakes the metadata application when this broker (re)registers: leaderships held
    /// back until then may be taken.
    registered: tokio::sync::Notify,
    /// `Some(fenced)` once registered: whether the controller fences this broker.
    fenced: watch::Sender<Option<bool>>,
    /// Graceful shutdown asked the controller to move leaderships away...
    shutdown_requested: watch::Sender<bool>,
    /// ...and the controller confirmed it, or no controller answered.
    shutdown_granted: watch::Sender<ShutdownAnswer>,
    /// `true` once shutdown began: long polls end, connections stop reading.
    stopping: watch::Sender<bool>,
}

impl Broker {
    /// Opens the data directory and starts the metadata log. Partitions open when the
    /// first metadata image is applied ([`Broker::spawn_background`]).
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // Without an HTTP listener nothing can read the metrics: count nothing.
        let metrics = match config.http_listen {
            Some(_) => Metrics::new(),
            None => Metrics::disabled(),
        };
        let (lock, topics, identity) = {
            let config = config.clone();
            let observer = metrics
                .enabled()
                .then(|| -> Arc<dyn sluice_storage::FlushObserver> { metrics.clone() });
            tokio::task::spawn_blocking(move || {
                // First of all: nothing in the directory is read or written unlocked.
                let lock = DataDirLock::acquire(&config.data_dir)?;
                let file = NodeFile::new(&config.data_dir);
                let identity = file.load_or_create(config.node_id)?;
                let topics = Topics::open(&config, clock, observer)?;
                Ok::<_, BrokerError>((lock, topics, (identity, file)))
            })
            .await
            .map_err(|e| BrokerError::DataDir(format!("opening the data directory: {e}")))??
        };
        let cluster = Arc::new(Cluster::start(&config).await?);
        let topics = Arc::new(topics);
        let timings = GroupTimings {
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
        };
        let groups = Arc::new(GroupCoordinator::new(config.node_id, timings));
        let stopping = watch::channel(false).0;
        let services = Arc::new(Services::new(
            &config,
            &cluster,
            &topics,
            &groups,
            stopping.subscribe(),
            &metrics,
        ));
        Ok(Arc::new(Broker {
            groups,
            services,
            metrics,
            config,
            cluster,
            topics,
            identity: std::sync::Mutex::new(identity),
            data_dir_lock: std::sync::Mutex::new(Some(lock)),
            kafka_address: std::sync::OnceLock::new(),
            registered: tokio::sync::Notify::new(),
            fenced: watch::channel(None).0,
            shutdown_requested: watch::channel(false).0,
            shutdown_granted: watch::channel(ShutdownAnswer::Pending).0,
            stopping,
        }))
    }

    /// Records the address Kafka clients connect to (call before the broker registers).
    pub fn set_kafka_address(&self, address: String) {
        let _ = self.kafka_address.set(address);
    }

    /// The address Kafka clients connect to, when the Kafka listener is on.
    pub fn kafka_address(&self) -> Option<&str> {
        self.kafka_address.get().map(String::as_str)
    }

    /// Whether the cluster is this node alone (the default): it then waits to be ready
    /// before it serves, as a single process would.
    pub fn is_single_node(&self) -> bool {
        self.config.voters.len() == 1 && self.config.is_voter()
    }

    /// Waits until this broker is registered, unfenced, and its replicas reconciled with
    /// the metadata applied then, or `timeout` passes. Returns whether it got there.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let ready = async {
            let mut fenced = self.fenced.subscribe();
            if fenced.wait_for(|f| *f == Some(false)).await.is_err() {
                return;
            }
            let index = self.cluster.applied_index();
            self.topics.wait_reconciled(index, Duration::MAX).await;
        };
        tokio::time::timeout(timeout, ready).await.is_ok()
    }

    /// Whether this broker is ready for clients (`/ready`): registered with the
    /// controller, unfenced (the controller unfences a broker once its metadata has caught
    /// up with its registration) and not shutting down.
    pub fn is_ready(&self) -> bool {
        *self.fenced.borrow() == Some(false) && !self.is_stopping()
    }

    /// This broker registered (again): re-applies the metadata, so leaderships held back
    /// until the registration are taken.
    pub fn note_registered(&self) {
        self.registered.notify_one();
    }

    /// Completes when this broker registers (again) after the call.
    pub async fn registered(&self) {
        self.registered.notified().await
    }

    /// The metadata index the hosted replicas last reconciled with: every replica the
    /// image at that index gives this broker is open.
    pub fn reconciled_index(&self) -> u64 {
        self.topics.reconciled_index()
    }

    /// Waits until the hosted replicas reflect the applied metadata at `index` or later.
    pub async fn wait_reconciled(&self, index: u64, timeout: Duration) {
        self.topics.wait_reconciled(index, timeout).await;
    }

    /// Records whether the controller fences this broker.
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced.send_replace(Some(fenced));
    }

    /// Whether graceful shutdown asked to move leaderships away.
    pub fn shutdown_requested(&self) -> bool {
        *self.shutdown_requested.borrow()
    }

    /// The controller moved this broker's leaderships away: it may stop.
    pub fn grant_shutdown(&self) {
        self.shutdown_granted.send_replace(ShutdownAnswer::Granted);
    }

    /// No controller answers the controlled shutdown's heartbeats (the whole cluster is
    /// stopping, or the quorum is lost): waiting longer would only delay the stop.
    pub fn no_controller_for_shutdown(&self) {
        self.shutdown_granted
            .send_if_modified(|answer| match answer {
                ShutdownAnswer::Pending => {
                    *answer = ShutdownAnswer::NoController;
                    true
                }
                _ => false,
            });
    }

    /// The first step of a graceful shutdown (DESIGN §7): asks the controller, through the
    /// next heartbeat, to move this broker's leaderships to other in-sync replicas, and
    /// waits for that (at most `timeout`) while still serving, so producers that retry
    /// see NOT_LEADER_OR_FOLLOWER and move on, not errors.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        if *self.fenced.borrow() != Some(false) {
            return;
        }
        let node = self.config.node_id;
        if !self
            .cluster
            .image()
            .active_brokers()
            .iter()
            .any(|b| *b != node)
        {
            // The last broker up (or a single node): no one can take its leaderships, and
            // with the others gone the controller may have no quorum to confirm.
            tracing::info!("no other active broker to move leaderships to; shutting down");
            return;
        }
        self.shutdown_requested.send_replace(true);
        let mut granted = self.shutdown_granted.subscribe();
        // The watch's guard is dropped within this statement: it must not live across an
        // await (it is not Send).
        let answer = match tokio::time::timeout(
            timeout,
            granted.wait_for(|a| *a != ShutdownAnswer::Pending),
        )
        .await
        {
            Ok(Ok(answer)) => Some(*answer),
            _ => None,
        };
        match answer {
            Some(ShutdownAnswer::Granted) => {
                // Let the local replicas take their new roles before connections close.
                let index = self.cluster.applied_index();
                self.wait_reconciled(index, Duration::from_secs(1)).await;
                tracing::info!("leaderships moved; shutting down")
            }
            Some(_) => tracing::info!(
                "no controller answers to move leaderships (the other brokers are stopping \
                 too, or the quorum is lost); shutting down"
            ),
            None => tracing::warn!("the controller did not confirm the controlled shutdown in {timeout:?}; shutting down anyway"),
        }
    }

    /// A receiver that turns `true` when shutdown begins.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Begins shutdown: long polls return, connections stop reading new requests.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Flushes and closes every log (the end of a graceful shutdown). Blocking.
    pub fn close(&self) {
        self.topics.close_all();
    }

    /// Releases the data directory's lock, once its logs and the metadata log are closed,
    /// so that another broker (or this one, restarted in the same process) may open it.
    pub fn release_data_dir(&self) {
        self.data_dir_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// Every service of this broker, for the listeners' adapters: the one place they are
/// wired together (`services` and `groups` do not import each other's wiring).
pub struct Services {
    /// Topic administration and the cluster view.
    pub admin: Admin,
    /// Appends.
    pub produce: Produce,
    /// Consumer reads.
    pub fetch: Fetch,
    /// Offset lookups.
    pub offsets: Offsets,
    /// Producer ids.
    pub producer_ids: Arc<ProducerIds>,
    /// The transaction coordinator (the `__transaction_state` partitions led here).
    pub txns: Arc<crate::txn::coordinator::Transactions>,
    /// Consumer groups.
    pub groups: Arc<Coordinator>,
    /// SCRAM users.
    pub users: crate::services::users::Users,
    /// Logins (SASL), for both listeners.
    pub auth: Arc<crate::security::Authenticator>,
    /// What each principal may do (ACLs), for every service.
    pub authorizer: Arc<crate::security::acl::Authorizer>,
    /// ACL administration.
    pub acls: crate::services::acls::Acls,
    /// Client quotas: their administration and this broker's throttling.
    pub quotas: crate::services::quotas::ClientQuotas,
}

impl Services {
    /// Wires the services over this node's cluster layer and hosted topics.
    pub fn new(
        config: &BrokerConfig,
        cluster: &Arc<Cluster>,
        topics: &Arc<Topics>,
        groups: &Arc<crate::groups::GroupCoordinator>,
        stopping: watch::Receiver<bool>,
        metrics: &Arc<Metrics>,
    ) -> Services {
        let images = Arc::clone(cluster);
        let images: Arc<dyn Fn() -> Arc<crate::cluster::image::MetadataImage> + Send + Sync> =
            Arc::new(move || images.image());
        let auth = crate::security::Authenticator::new(
            config.sasl_mechanisms.clone(),
            config.sasl_plain_without_tls,
            Arc::clone(&images),
            Arc::clone(metrics),
        );
        let authorizer = Arc::new(crate::security::acl::Authorizer::new(
            config.authorizer,
            config
                .superusers
                .iter()
                .map(|p| crate::security::Principal::named(p))
                .collect(),
            images,
            Arc::clone(metrics),
        ));
        let admin = Admin::new(
            config,
            Arc::clone(cluster),
            Arc::clone(topics),
            Arc::clone(&authorizer),
        );
        let producer_ids = Arc::new(ProducerIds::new(
            config.node_id,
            Arc::clone(cluster),
            Arc::clone(&authorizer),
        ));
        let txns = Arc::new(crate::txn::coordinator::Transactions::new(
            config,
            admin.clone(),
            Arc::clone(topics),
            Arc::clone(&producer_ids),
            Arc::clone(&authorizer),
            Arc::clone(groups),
        ));
        let verifier: Arc<dyn crate::services::produce::TxnVerifier> = Arc::new(
            crate::txn::verify::Verifier::new(config, admin.clone(), Arc::clone(&txns)),
        );
        Services {
            acls: crate::services::acls::Acls::new(Arc::clone(cluster), Arc::clone(&authorizer)),
            quotas: crate::services::quotas::ClientQuotas::new(
                Arc::clone(cluster),
                Arc::clone(&authorizer),
                Arc::clone(metrics),
            ),
            users: crate::services::users::Users::new(Arc::clone(cluster), Arc::clone(&authorizer)),
            auth: Arc::new(auth),
            produce: Produce::new(
                Arc::clone(cluster),
                Arc::clone(topics),
                Arc::clone(metrics),
                Arc::clone(&authorizer),
                Arc::clone(&verifier),
            ),
            fetch: Fetch::new(
                Arc::clone(cluster),
                Arc::clone(topics),
                config.max_frame_bytes,
                stopping,
                Arc::clone(metrics),
                Arc::clone(&authorizer),
            ),
            offsets: Offsets::new(
                Arc::clone(cluster),
                Arc::clone(topics),
                Arc::clone(metrics),
                Arc::clone(&authorizer),
            ),
            txns,
            producer_ids,
            groups: Arc::new(Coordinator::new(
                config,
                admin.clone(),
                Arc::clone(groups),
                Arc::clone(metrics),
                verifier,
            )),
            admin,
            authorizer,
        }
    }
}

/// What became of a controlled shutdown's request ([`Broker::controlled_shutdown`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShutdownAnswer {
    /// Not answered yet.
    Pending,
    /// The controller moved the leaderships away.
    Granted,
    /// Heartbeats found no controller to ask.
    NoController,
}
