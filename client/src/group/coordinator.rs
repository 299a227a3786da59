//! [`Coordinator`]: finds a group's coordinator (or a transactional id's) and sends it
//! requests, over a connection of its own.
//!
//! Why a dedicated connection rather than the client's connection to that broker: the
//! broker answers a connection's requests in the order they came, and it holds a JoinGroup
//! until the whole group has rejoined (up to the rebalance timeout). On a shared
//! connection that held answer would stall every later answer behind it: the fetches of
//! consumers sharing the client, and worse, the heartbeats of another member of the same
//! group, which would then never learn that it must rejoin. Kafka's clients do the same.
//!
//! Retry rules (the coordinator contract): NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE and
//! a connection that fails or goes silent mean the coordinator moved or is being elected:
//! find it again (FindCoordinator, answered by any broker) and retry after a backoff.
//! COORDINATOR_LOAD_IN_PROGRESS means the right coordinator is still loading the group:
//! retry it after a backoff; so does CONCURRENT_TRANSACTIONS, a transaction coordinator
//! still writing the markers of the last transaction.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_protocol::messages::{CoordinatorType, FindCoordinatorRequest};
use sluice_protocol::{BrokerId, ErrorCode, Request, Response};

use crate::backoff::{Backoff, Jitter};
use crate::client::{format_address, unexpected, Client};
use crate::connection::Connection;
use crate::error::{Error, Result};

/// Wait between tries of a request the coordinator could not serve yet: 100 ms doubling
/// to 1 s, jittered. A coordinator failover (broker session timeout, election, loading
/// the group) takes a few seconds.
pub(crate) const COORDINATOR_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(1),
};

/// What a failed request to the coordinator calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The coordinator moved, is being elected, or cannot be reached: find it again.
    Rediscover,
    /// The coordinator is loading the group: ask it again after a backoff.
    Wait,
}

/// How long coordinator retries go on before the wait is logged (`waiting: ...`).
const WAIT_REPORTED_AFTER: Duration = Duration::from_secs(2);

/// What to do about `error` from the coordinator; `None` when retrying cannot help.
pub(crate) fn recovery(error: &Error) -> Option<Recovery> {
    match error {
        Error::Connect { .. } | Error::Network { .. } | Error::Timeout { .. } => {
            Some(Recovery::Rediscover)
        }
        Error::Broker { code, .. } => code_recovery(*code),
        _ => None,
    }
}

/// What to do about a coordinator's error code; `None` for codes retrying cannot help.
pub(crate) fn code_recovery(code: ErrorCode) -> Option<Recovery> {
    match code {
        ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable => {
            Some(Recovery::Rediscover)
        }
        ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::RequestTimedOut
        | ErrorCode::ConcurrentTransactions
        | ErrorCode::UnstableOffsetCommit => Some(Recovery::Wait),
        _ => None,
    }
}

/// The coordinator found last.
struct Known {
    broker: BrokerId,
    connection: Arc<Connection>,
}

/// The coordinator of one group (or transactional id), found on demand and forgotten when
/// it stops serving it. Shared (in an `Arc`) by a consumer's `poll` and its heartbeat and
/// commit tasks.
pub(crate) struct Coordinator {
    client: Client,
    group_id: String,
    /// A group's coordinator, or a transactional id's.
    key_type: CoordinatorType,
    /// The coordinator in use. Locked only to read or replace it; finding and dialling
    /// happen outside the lock (two tasks finding it at once is harmless).
    known: Mutex<Option<Known>>,
    /// Requests sent whose answer never came (the connection failed or went silent after
    /// sending): such a request may have taken effect.
    answers_lost: AtomicU32,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("group_id", &self.group_id)
            .field("broker", &self.broker())
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// The coordinator of `group_id`, not looked up yet.
    pub fn new(client: Client, group_id: impl Into<String>) -> Coordinator {
        Coordinator::of(client, group_id.into(), CoordinatorType::Group)
    }

    /// The transaction coordinator of `transactional_id`, not looked up yet.
    pub fn transactions(client: Client, transactional_id: impl Into<String>) -> Coordinator {
        Coordinator::of(
            client,
            transactional_id.into(),
            CoordinatorType::Transaction,
        )
    }

    fn of(client: Client, key: String, key_type: CoordinatorType) -> Coordinator {
        Coordinator {
            client,
            group_id: key,
            key_type,
            known: Mutex::new(None),
            answers_lost: AtomicU32::new(0),
        }
    }

    /// The group's id (or the transactional id).
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// What is coordinated, for messages: `consumer group "g"`, `transactional id "t"`.
    fn describe(&self) -> String {
        match self.key_type {
            CoordinatorType::Transaction => format!("transactional id \"{}\"", self.group_id),
            _ => format!("consumer group \"{}\"", self.group_id),
        }
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The coordinator in use, if one is known.
    pub fn broker(&self) -> Option<BrokerId> {
        self.lock().as_ref().map(|k| k.broker)
    }

    /// How many requests were sent without an answer coming back (each may have taken
    /// effect).
    pub fn answers_lost(&self) -> u32 {
        self.answers_lost.load(Ordering::Relaxed)
    }

    /// Forgets the coordinator: the next request finds it again.
    pub fn forget(&self) {
        if let Some(known) = self.lock().take() {
            tracing::debug!(group = %self.group_id, broker = %known.broker, "coordinator forgotten");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` to the coordinator once (finding it first if needed) and waits up
    /// to `timeout` for the answer. A transport failure or a top-level coordinator error
    /// forgets the coordinator before it is returned.
    pub async fn send(&self, request: &Request, timeout: Duration) -> Result<Response> {
        let connection = self.connection().await?;
        let result = connection.send_with_timeout(request, timeout).await;
        if let Err(Error::Network { .. } | Error::Timeout { .. }) = &result {
            self.answers_lost.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            if recovery(e) == Some(Recovery::Rediscover) {
                self.forget();
            }
        }
        result
    }

    /// Sends `request` until `extract` accepts the answer or fails for good: a coordinator
    /// that moved, is being elected, cannot be reached or is loading the group (a
    /// [`recovery`] error, from the transport or returned by `extract` for a group-level
    /// code) is found again or waited for, with a backoff, until `deadline` (`None`: no
    /// limit, for a join that goes on across polls). `timeout` bounds each try.
    pub async fn call<T>(
        &self,
        request: Request,
        timeout: Duration,
        deadline: Option<Instant>,
        mut extract: impl FnMut(Response) -> Result<T>,
    ) -> Result<T> {
        let mut jitter = Jitter::new();
        let mut failures = 0u32;
        let started = Instant::now();
        let mut reported = String::new();
        loop {
            let error = match self.send(&request, timeout).await.and_then(&mut extract) {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let Some(what) = recovery(&error) else {
                return Err(error);
            };
            if what == Recovery::Rediscover {
                self.forget();
            }
            failures = failures.saturating_add(1);
            let delay = COORDINATOR_BACKOFF.delay(failures, &mut jitter);
            if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                return Err(error);
            }
            tracing::debug!(
                group = %self.group_id,
                api = request.api_key().name(),
                error = %error,
                ?delay,
                "coordinator request failed; retrying"
            );
            // A group's first use routinely waits a moment for its coordinator (the offsets
            // topic is being created, a shard loads); a wait past that is said, once per
            // reason, so a user is never left guessing.
            let reason = error.to_string();
            if started.elapsed() >= WAIT_REPORTED_AFTER && reason != reported {
                tracing::warn!("waiting: {}: {reason}; retrying", self.describe());
                reported = reason;
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The connection to the coordinator: the known one while it is alive, else the
    /// coordinator is looked up (one FindCoordinator) and dialled.
    async fn connection(&self) -> Result<Arc<Connection>> {
        if let Some(known) = self.lock().as_ref() {
            if !known.connection.is_dead() {
                return Ok(known.connection.clone());
            }
        }
        let (broker, address) = self.find().await?;
        let connection =
            Arc::new(Connection::connect(&address, self.client.connection_config()).await?);
        tracing::debug!(group = %self.group_id, %broker, %address, "coordinator found");
        *self.lock() = Some(Known {
            broker,
            connection: connection.clone(),
        });
        Ok(connection)
    }

    /// Asks any broker where the group's coordinator is.
    async fn find(&self) -> Result<(BrokerId, String)> {
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            key: self.group_id.clone(),
            key_type: self.key_type,
        });
        let response = match self.client.send_any(request).await? {
            Response::FindCoordinator(r) => r,
            other => return Err(unexpected("FindCoordinator", &other)),
        };
        if response.error_code != ErrorCode::None {
            return Err(Error::broker(
                format!("finding the coordinator of {}", self.describe()),
                response.error_code,
                response.error_message,
            ));
        }
        Ok((
            response.node_id,
            format_address(&response.host, response.port),
        ))
    }
}

/// An error for a group-level `code` (not NONE) while doing `context`.
pub(crate) fn group_error(context: &str, code: ErrorCode, message: Option<String>) -> Error {
    Error::broker(context, code, message)
}
