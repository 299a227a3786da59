//! The chaos suite's pieces (issue 8): a fault-injecting TCP proxy for each directed link
//! between brokers ([`proxy`]) and a cluster whose every link goes through one
//! ([`harness`]), with operations to kill, pause, partition and damage nodes; the workload
//! that runs against it ([`workload`]); the history it records ([`history`]) and the
//! Jepsen-style checker of that history ([`checker`]); the seeded nemesis ([`nemesis`]);
//! and a transactional consume-transform-produce pipeline with its own checker
//! ([`pipeline`], issue 26).

pub mod checker;
pub mod harness;
pub mod history;
pub mod nemesis;
pub mod pipeline;
pub mod proxy;
pub mod workload;
