//! The fault-injection harness of the chaos tests (issue 8): a fault-injecting TCP proxy
//! for each directed link between brokers ([`proxy`]) and a cluster whose every link goes
//! through one ([`harness`]), with operations to kill, pause, partition and damage nodes.

pub mod harness;
pub mod proxy;
