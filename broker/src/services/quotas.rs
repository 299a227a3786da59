//! Client quotas: their administration (through the active controller, like ACLs) and
//! their enforcement on this broker, as Kafka's `ClientQuotaManager` does it. Each
//! client's produce request bytes and its fetch answers' bytes are counted against the
//! quota that applies to it ([`crate::cluster::image::quotas::resolve`]) over a sliding
//! window of [`SAMPLES`] one-second samples; a client above its rate is throttled for as
//! long as it takes the window's rate to come back to the quota. The listener sends the
//! answer at once (a Kafka answer carries the time in `throttle_time_ms`, which clients
//! since KIP-219 wait out themselves) and then reads nothing more from the connection
//! until the time has passed, so a client that ignores it is held back all the same.
//! Followers' fetches are never throttled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_protocol::messages::AlterClientQuotasRequest;
use sluice_protocol::{ErrorCode, Request, Response};

use crate::cluster::image::quotas::{
    self, ClientQuota, EntityName, QuotaChange, QuotaKey, UsageKey,
};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;

/// Samples in a client's window (Kafka's `quota.window.num`).
pub const SAMPLES: u32 = 11;
/// Length of one sample (Kafka's `quota.window.size.seconds`).
pub const SAMPLE: Duration = Duration::from_secs(1);
/// How long a change waits for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a change waits to show in this broker's image.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients counted before idle ones are forgotten.
const USAGE_ENTRIES_PRUNE: usize = 4096;

/// How one component of a DescribeClientQuotas filter matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentMatch {
    /// This name.
    Exact(String),
    /// The default entity.
    Default,
    /// Any name or the default, as long as the entity has the component.
    Any,
}

/// Which quota entities a DescribeClientQuotas lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaFilter {
    /// How the user must match, if the filter says.
    pub user: Option<ComponentMatch>,
    /// How the client id must match, if the filter says.
    pub client_id: Option<ComponentMatch>,
    /// Only entities with no component the filter does not name.
    pub strict: bool,
}

impl QuotaFilter {
    /// The filter of a DescribeClientQuotas, from each component's entity type, match
    /// type (Kafka's: 0 this name, 1 the default, 2 any) and name.
    pub fn from_components<'a>(
        components: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<QuotaFilter, ApiError> {
        let mut filter = QuotaFilter {
            strict,
            ..QuotaFilter::default()
        };
        for (entity_type, match_type, name) in components {
            let matched = match (match_type, name) {
                (0, Some(name)) => ComponentMatch::Exact(name.to_owned()),
                (1, _) => ComponentMatch::Default,
                (2, _) => ComponentMatch::Any,
                (other, _) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("match type {other} without a name is not a quota filter"),
                    ))
                }
            };
            let slot = match entity_type {
                "user" => &mut filter.user,
                "client-id" => &mut filter.client_id,
                other => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("sluice has quotas for users and client ids, not for {other:?}"),
                    ))
                }
            };
            *slot = Some(matched);
        }
        Ok(filter)
    }

    fn selects(&self, quota: &ClientQuota) -> bool {
        fn component(
            filter: &Option<ComponentMatch>,
            name: &Option<EntityName>,
            strict: bool,
        ) -> bool {
            match (filter, name) {
                (None, None) => true,
                (None, Some(_)) => !strict,
                (Some(_), None) => false,
                (Some(ComponentMatch::Any), Some(_)) => true,
                (Some(ComponentMatch::Default), Some(n)) => *n == EntityName::Default,
                (Some(ComponentMatch::Exact(want)), Some(n)) => {
                    *n == EntityName::Named(want.clone())
                }
            }
        }
        component(&self.user, &quota.entity.user, self.strict)
            && component(&self.client_id, &quota.entity.client_id, self.strict)
    }
}

/// The client quota service.
pub struct ClientQuotas {
    cluster: Arc<Cluster>,
    authorizer: Arc<Authorizer>,
    metrics: Arc<Metrics>,
    usage: Mutex<Usage>,
}

/// Each client's rate, and when idle ones were last forgotten.
struct Usage {
    rates: HashMap<UsageKey, Rate>,
    pruned: Instant,
}

impl ClientQuotas {
    /// The quotas of `cluster`'s metadata, guarded by `authorizer`.
    pub fn new(
        cluster: Arc<Cluster>,
        authorizer: Arc<Authorizer>,
        metrics: Arc<Metrics>,
    ) -> ClientQuotas {
        ClientQuotas {
            cluster,
            authorizer,
            metrics,
            usage: Mutex::new(Usage {
                rates: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// Applies each well-formed change (one command, through the controller, unless
    /// `validate_only`); each entry's outcome, in order. Alter on the cluster.
    pub async fn alter(
        &self,
        principal: &Principal,
        changes: Vec<Result<QuotaChange, ApiError>>,
        validate_only: bool,
    ) -> Vec<Result<(), ApiError>> {
        if let Err(e) = self
            .authorizer
            .check(principal, Operation::Alter, Resource::Cluster)
        {
            return changes.iter().map(|_| Err(e.clone())).collect();
        }
        let valid: Vec<QuotaChange> = changes.iter().filter_map(|c| c.clone().ok()).collect();
        let outcome = if valid.is_empty() {
            Ok(())
        } else {
            self.call(&valid, validate_only).await
        };
        if outcome.is_ok() && !validate_only && !valid.is_empty() {
            // Applied here once every changed entity shows its change (other changes may
            // land meanwhile).
            let shows = |quotas: &[ClientQuota], change: &QuotaChange| {
                let values = quotas::find(quotas, &change.entity).map(|q| &q.values);
                change
                    .set
                    .iter()
                    .filter(|(k, _)| !change.remove.contains(k))
                    .all(|(k, v)| values.and_then(|vs| vs.get(k)) == Some(v))
                    && change
                        .remove
                        .iter()
                        .all(|k| values.is_none_or(|vs| !vs.contains_key(k)))
            };
            self.cluster
                .wait_for_image(APPLY_TIMEOUT, |image| {
                    valid.iter().all(|c| shows(&image.client_quotas, c))
                })
                .await;
            for change in &valid {
                tracing::info!(%principal, entity = change.entity.describe(), ?change.set, ?change.remove, "client quotas changed");
            }
        }
        changes
            .into_iter()
            .map(|c| c.and_then(|_| outcome.clone()))
            .collect()
    }

    async fn call(&self, valid: &[QuotaChange], validate_only: bool) -> Result<(), ApiError> {
        let request = Request::AlterClientQuotas(AlterClientQuotasRequest {
            entries: valid.iter().map(QuotaChange::to_wire).collect(),
            validate_only,
        });
        match self
            .cluster
            .client
            .call(request, CONTROLLER_TIMEOUT)
            .await?
        {
            Response::AlterClientQuotas(r) => match r
                .results
                .into_iter()
                .find(|r| r.error_code != ErrorCode::None)
            {
                Some(r) => Err(ApiError::new(
                    r.error_code,
                    r.error_message.unwrap_or_default(),
                )),
                None => Ok(()),
            },
            other => Err(super::controller_answered(other.api_key())),
        }
    }

    /// The quotas `filter` selects. Describe on the cluster.
    pub fn describe(
        &self,
        principal: &Principal,
        filter: &QuotaFilter,
    ) -> Result<Vec<ClientQuota>, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Cluster)?;
        Ok(self
            .cluster
            .image()
            .client_quotas
            .iter()
            .filter(|q| filter.selects(q))
            .cloned()
            .collect())
    }

    /// The most bytes one fetch answer may carry for `principal`'s client `client_id`: a
    /// window's worth of its consumer quota (Kafka's `getMaxValueInQuotaWindow`), so one
    /// large fetch cannot outrun the quota; `None` without a quota. A fetch still returns
    /// at least one batch.
    pub fn fetch_limit(&self, principal: &Principal, client_id: &str) -> Option<i32> {
        let image = self.cluster.image();
        if image.client_quotas.is_empty() {
            return None;
        }
        let (quota, _) = crate::cluster::image::quotas::resolve(
            &image.client_quotas,
            QuotaKey::ConsumerByteRate,
            user_of(principal),
            client_id,
        )?;
        let window = u64::from(SAMPLES - 1) * SAMPLE.as_secs();
        Some(i32::try_from(quota.saturating_mul(window)).unwrap_or(i32::MAX))
    }

    /// Counts `bytes` of `principal`'s client `client_id` against its `key` quota, if it
    /// has one; how long the client must now wait (zero within its quota).
    pub fn record(
        &self,
        key: QuotaKey,
        principal: &Principal,
        client_id: &str,
        bytes: usize,
    ) -> Duration {
        let image = self.cluster.image();
        if image.client_quotas.is_empty() {
            return Duration::ZERO;
        }
        let Some((quota, usage)) = crate::cluster::image::quotas::resolve(
            &image.client_quotas,
            key,
            user_of(principal),
            client_id,
        ) else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let mut usage_of = self.usage.lock().expect("quota usage lock");
        // At most once a second: a scan per request, under this lock, once many clients
        // (a new client id per request) are counted would hold back every request.
        if usage_of.rates.len() >= USAGE_ENTRIES_PRUNE
            && now.duration_since(usage_of.pruned) >= Duration::from_secs(1)
        {
            usage_of.rates.retain(|_, rate| !rate.idle(now));
            usage_of.pruned = now;
        }
        let wait = usage_of
            .rates
            .entry(usage)
            .or_default()
            .record(now, bytes as u64, quota);
        drop(usage_of);
        if !wait.is_zero() {
            self.metrics.throttled(key.name(), wait);
        }
        wait
    }
}

/// A principal's name as a quota's user entity names it (`alice` for `User:alice`).
fn user_of(principal: &Principal) -> &str {
    principal
        .as_str()
        .strip_prefix("User:")
        .unwrap_or(principal.as_str())
}

/// The longest a client is held back at once (its debt beyond is forgiven: a rate this far
/// over its quota is a misconfiguration to fix, not to wait out).
const THROTTLE_MAX: Duration = Duration::from_secs(300);

/// A client's usage over the last [`SAMPLES`] samples.
#[derive(Debug, Default)]
struct Rate {
    /// (start, bytes) of each sample, oldest first.
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Adds `bytes` at `now`; the throttle time for `quota` bytes per second: Kafka's
    /// `(rate - quota) / quota * window`, where the window is the samples' span but never
    /// less than all but one of them (so a client's first burst is measured over the whole
    /// window, not over the instant it took). Not capped at the window: a burst larger than
    /// a window's worth is waited out in full (at most [`THROTTLE_MAX`]), though its
    /// samples expire meanwhile.
    fn record(&mut self, now: Instant, bytes: u64, quota: u64) -> Duration {
        let window = SAMPLE * SAMPLES;
        while self
            .samples
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) >= window)
        {
            self.samples.pop_front();
        }
        match self.samples.back_mut() {
            Some((start, total)) if now.duration_since(*start) < SAMPLE => *total += bytes,
            _ => self.samples.push_back((now, bytes)),
        }
        let total: u64 = self.samples.iter().map(|(_, b)| b).sum();
        let oldest = self.samples.front().map_or(now, |(start, _)| *start);
        let span = now
            .duration_since(oldest)
            .max(SAMPLE * (SAMPLES - 1))
            .as_secs_f64();
        let rate = total as f64 / span;
        let quota = quota as f64;
        if rate <= quota {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((rate - quota) / quota * span).min(THROTTLE_MAX.as_secs_f64()))
    }

    fn idle(&self, now: Instant) -> bool {
        self.samples
            .back()
            .is_none_or(|(start, _)| now.duration_since(*start) >= SAMPLE * SAMPLES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_within_its_quota_waits_not_and_one_above_it_waits_until_back_under() {
        let start = Instant::now();
        let mut rate = Rate::default();
        // 1,000 B/s: 10 KB within the first second is the whole window's worth.
        assert_eq!(rate.record(start, 9_000, 1_000), Duration::ZERO);
        let wait = rate.record(start, 2_000, 1_000);
        // 11,000 bytes over the 10 s minimum span: 1,100 B/s, 10 % over: 1 s.
        assert_eq!(wait, Duration::from_secs(1));
        // Once the samples age out, nothing is owed.
        let later = start + SAMPLE * SAMPLES;
        assert_eq!(rate.record(later, 1, 1_000), Duration::ZERO);
        assert!(!rate.idle(later));
        assert!(rate.idle(later + SAMPLE * SAMPLES));
    }

    #[test]
    fn a_burst_beyond_the_window_is_waited_out_in_full_up_to_the_maximum() {
        let mut rate = Rate::default();
        // 50,000 bytes at 1,000 B/s: 5,000 B/s over 10 s, 4x over: 40 s, not the window's 11.
        let wait = rate.record(Instant::now(), 50_000, 1_000);
        assert_eq!(wait, Duration::from_secs(40));
        let mut rate = Rate::default();
        assert_eq!(rate.record(Instant::now(), 1 << 30, 1), THROTTLE_MAX);
    }

    #[test]
    fn filters_match_components_exactly_by_default_or_any_and_strictly() {
        use crate::cluster::image::quotas::QuotaEntity;
        let quota = |user: Option<EntityName>, client_id: Option<EntityName>| ClientQuota {
            entity: QuotaEntity { user, client_id },
            values: Default::default(),
        };
        let alice = Some(EntityName::Named("alice".into()));
        let both = quota(alice.clone(), Some(EntityName::Default));
        let user_only = quota(alice, None);
        let by_user = QuotaFilter {
            user: Some(ComponentMatch::Exact("alice".into())),
            ..QuotaFilter::default()
        };
        assert!(by_user.selects(&both) && by_user.selects(&user_only));
        let strict = QuotaFilter {
            strict: true,
            ..by_user.clone()
        };
        assert!(!strict.selects(&both) && strict.selects(&user_only));
        let default_client = QuotaFilter {
            client_id: Some(ComponentMatch::Default),
            ..QuotaFilter::default()
        };
        assert!(default_client.selects(&both) && !default_client.selects(&user_only));
        let any_client = QuotaFilter {
            client_id: Some(ComponentMatch::Any),
            ..QuotaFilter::default()
        };
        assert!(any_client.selects(&both) && !any_client.selects(&user_only));
    }
}
