//! [`ChaosCluster`]: real `sluice-broker` processes, node N listening on 127.0.0.N with its
//! own data directory, and a fault-injecting [`Proxy`] on every directed link between two
//! nodes. Node A dials node B only through the proxy of A→B (`--peer-overrides`, which
//! covers Raft, the controller client and replica fetches), and that proxy connects to B
//! from A's own address, so B sees A at 127.0.0.A either way. Clients connect to the
//! brokers directly.
//!
//! Faults: SIGKILL, graceful stop, restart, SIGSTOP/SIGCONT of a node; cutting, delaying
//! and healing links (one way or both), isolating a node; truncating or corrupting the
//! newest segment of a stopped node's replica.
//!
//! Everything is synchronous, like [`TestCluster`] (call it from a plain `#[test]`, not
//! from inside a tokio runtime); the proxies run on a runtime of their own.
//!
//! While a partition is in force, read the cluster's state through the nodes of the
//! majority (`cluster().topic_metadata_from(..)`, `broker_state_from`, `controller_from`):
//! a partitioned node still answers with its stale metadata, and the plain queries ask
//! any serving node.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use super::proxy::{Cut, Proxy, ProxyConfig};
use crate::{free_addr, BrokerProcess, KafkaListener, SegmentDamage, TestCluster};

/// Most nodes: node N listens on 127.0.0.N.
pub const MAX_NODES: usize = 254;

/// A cluster whose every inter-broker link can be cut; see the module doc.
pub struct ChaosCluster {
    /// The nodes; dropped (SIGKILLed) first.
    cluster: TestCluster,
    /// The proxy of each directed link, by (from, to) node ids.
    links: BTreeMap<(i32, i32), Proxy>,
    /// Runs the proxies; `None` only once dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

/// The address of node `id`: 127.0.0.`id`.
pub fn node_ip(id: i32) -> IpAddr {
    let last = u8::try_from(id)
        .ok()
        .filter(|b| *b >= 1 && usize::from(*b) <= MAX_NODES)
        .unwrap_or_else(|| panic!("node {id} has no 127.0.0.x address"));
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

impl ChaosCluster {
    /// Starts `n` voters (node N on 127.0.0.N, data in `dir/nN`) with `extra` flags each
    /// and a proxy on each of the n·(n-1) links, and waits until every node is active.
    pub fn start(n: usize, dir: &Path, extra: &[&str]) -> ChaosCluster {
        ChaosCluster::start_with_brokers(n, 0, dir, extra)
    }

    /// As [`ChaosCluster::start`], with `brokers` more nodes after the `voters` that join
    /// as brokers only (not controller voters).
    pub fn start_with_brokers(
        voters: usize,
        brokers: usize,
        dir: &Path,
        extra: &[&str],
    ) -> ChaosCluster {
        let n = voters + brokers;
        assert!(
            (1..=MAX_NODES).contains(&n),
            "a chaos cluster has 1 to {MAX_NODES} nodes, not {n}"
        );
        let ids: Vec<i32> = (1..=n as i32).collect();
        // Panics with the address if this machine cannot bind 127.0.0.N.
        let addrs: Vec<SocketAddr> = ids.iter().map(|&id| free_addr(node_ip(id))).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()
            .expect("a runtime for the proxies");
        let mut links = BTreeMap::new();
        for &from in &ids {
            for &to in ids.iter().filter(|&&to| to != from) {
                let config = ProxyConfig {
                    // On the target's address, so a broker's log names whom it dialled.
                    listen: SocketAddr::new(node_ip(to), 0),
                    target: addrs[(to - 1) as usize],
                    source_ip: Some(node_ip(from)),
                };
                let proxy = runtime
                    .block_on(Proxy::start(config))
                    .unwrap_or_else(|e| panic!("start the proxy of link {from}->{to}: {e}"));
                links.insert((from, to), proxy);
            }
        }
        let flags = |id: i32| {
            let overrides = links
                .iter()
                .filter(|((from, _), _)| *from == id)
                .map(|((_, to), proxy)| format!("{to}@{}", proxy.addr()))
                .collect::<Vec<_>>()
                .join(",");
            let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            if !overrides.is_empty() {
                flags.extend(["--peer-overrides".to_string(), overrides]);
            }
            flags
        };
        let cluster =
            TestCluster::start_at_with_voters(&addrs, voters, dir, KafkaListener::Off, flags);
        ChaosCluster {
            cluster,
            links,
            runtime: Some(runtime),
        }
    }

    /// The nodes, for queries ([`TestCluster::partition_state`], `wait_isr`, ...).
    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    /// The nodes, for helpers that take a [`TestCluster`] (`checks::check_replicas_identical`).
    pub fn cluster_mut(&mut self) -> &mut TestCluster {
        &mut self.cluster
    }

    /// How many nodes there are (ids 1..=n).
    pub fn n_nodes(&self) -> usize {
        self.cluster.brokers.len()
    }

    /// Node `id`'s process.
    pub fn node(&self, id: i32) -> &BrokerProcess {
        &self.cluster.brokers[self.index(id)]
    }

    fn node_mut(&mut self, id: i32) -> &mut BrokerProcess {
        let index = self.index(id);
        &mut self.cluster.brokers[index]
    }

    fn index(&self, id: i32) -> usize {
        usize::try_from(id - 1)
            .ok()
            .filter(|&i| i < self.n_nodes())
            .unwrap_or_else(|| panic!("no node {id} in a cluster of {}", self.n_nodes()))
    }

    /// Every node's client address, comma-separated (clients connect directly).
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap()
    }

    /// SIGKILL node `id`: it dies at once with whatever was only in its memory.
    pub fn kill(&mut self, id: i32) {
        self.node_mut(id).kill();
    }

    /// SIGTERM node `id` and wait for it to exit (a graceful, controlled shutdown, which
    /// needs the controller: with its links cut it waits out `shutdown_timeout_ms`).
    pub fn terminate(&mut self, id: i32) -> ExitStatus {
        self.node_mut(id).terminate()
    }

    /// Starts the stopped node `id` again with its data, address, flags and proxies, and
    /// waits until it answers.
    pub fn restart(&mut self, id: i32) {
        self.node_mut(id).restart();
    }

    /// SIGSTOP node `id`: it freezes with its sockets open.
    pub fn pause(&mut self, id: i32) {
        self.node_mut(id).pause();
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: i32) {
        self.node_mut(id).resume();
    }

    /// The proxy of the directed link `from`→`to`.
    pub fn link(&self, from: i32, to: i32) -> &Proxy {
        self.links
            .get(&(from, to))
            .unwrap_or_else(|| panic!("no link {from}->{to}"))
    }

    /// Cuts (or heals, with `None`) the link `from`→`to`.
    fn set_cut(&self, from: i32, to: i32, cut: Option<Cut>) {
        let link = self.link(from, to);
        match cut {
            Some(cut) => link.cut_with(cut),
            None => link.heal(),
        }
    }

    /// Cuts the connections `from` opens to `to` the way `cut` says, requests and their
    /// answers both; the connections `to` opens to `from` still work. A one-way cut at
    /// the connection level, which is what a broker notices (its calls to `to` fail).
    pub fn cut_one_way(&mut self, from: i32, to: i32, cut: Cut) {
        self.set_cut(from, to, Some(cut));
    }

    /// Partitions `a` and `b` from each other (blackhole, both directions).
    pub fn cut(&mut self, a: i32, b: i32) {
        self.set_cut(a, b, Some(Cut::Blackhole));
        self.set_cut(b, a, Some(Cut::Blackhole));
    }

    /// Heals both directions between `a` and `b`.
    pub fn heal(&mut self, a: i32, b: i32) {
        self.set_cut(a, b, None);
        self.set_cut(b, a, None);
    }

    /// Partitions `id` from every other node (clients still reach it).
    pub fn isolate(&mut self, id: i32) {
        self.index(id); // Panics on an unknown node.
        for other in self.others(id) {
            self.cut(id, other);
        }
    }

    /// Delays every link between `a` and `b` by `delay` each way (zero: no delay).
    pub fn delay(&mut self, a: i32, b: i32, delay: Duration) {
        self.link(a, b).delay(delay);
        self.link(b, a).delay(delay);
    }

    /// Heals every link and removes every delay.
    pub fn heal_all(&mut self) {
        for link in self.links.values() {
            link.heal();
            link.delay(Duration::ZERO);
        }
    }

    /// The nodes other than `id`.
    pub fn others(&self, id: i32) -> Vec<i32> {
        (1..=self.n_nodes() as i32).filter(|&n| n != id).collect()
    }

    /// Cuts the last `bytes` bytes of the newest segment of node `id`'s replica of
    /// `topic`'s partition; the node must be stopped. See
    /// [`BrokerProcess::truncate_newest_segment`].
    pub fn truncate_newest_segment(
        &self,
        id: i32,
        topic: &str,
        partition: i32,
        bytes: u64,
    ) -> Option<SegmentDamage> {
        self.node(id)
            .truncate_newest_segment(topic, partition, bytes)
    }

    /// Flips the last `bytes` bytes of the newest segment of node `id`'s replica of
    /// `topic`'s partition; the node must be stopped. See
    /// [`BrokerProcess::corrupt_newest_segment`].
    pub fn corrupt_newest_segment(
        &self,
        id: i32,
        topic: &str,
        partition: i32,
        bytes: u64,
    ) -> Option<SegmentDamage> {
        self.node(id)
            .corrupt_newest_segment(topic, partition, bytes)
    }

    /// Heals every link, resumes paused nodes and stops every running node, checking
    /// each graceful stop ([`TestCluster::stop_all`]).
    pub fn stop_all(&mut self) {
        self.heal_all();
        self.cluster.stop_all();
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime; the
        // proxies' tasks need no waiting for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
