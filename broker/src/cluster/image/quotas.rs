//! Client quotas (Kafka's KIP-13 and KIP-55): byte rates a client may produce
//! (`producer_byte_rate`) and consume (`consumer_byte_rate`) on each broker, set for a
//! user, a client id, or both, or for the default user or client id. They live in the
//! metadata image, so every broker enforces the same ones; which one applies to a client
//! is Kafka's order of precedence ([`resolve`]), and how it is enforced is
//! `crate::services::quotas`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_protocol::messages::{QuotaAlteration, QuotaEntityComponent, QuotaOp};

/// One component of a quota entity: a name, or the default (every user or client id that
/// has no quota of its own at that level).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    /// `alice`, or `<default>` as Kafka's tools print it.
    pub fn display(&self) -> &str {
        match self {
            EntityName::Default => "<default>",
            EntityName::Named(n) => n,
        }
    }
}

/// Whom a quota is for: a user, a client id, or a user's client id.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    /// The user (the principal's name without `User:`), if the quota names one.
    pub user: Option<EntityName>,
    /// The client id, if the quota names one.
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// Refuses an entity with no component.
    pub fn validate(&self) -> Result<(), String> {
        if self.user.is_none() && self.client_id.is_none() {
            return Err("a quota entity names a user, a client id, or both".to_owned());
        }
        Ok(())
    }

    /// The entity as the wire names it: a component per name, null for a default.
    pub fn to_wire(&self) -> Vec<QuotaEntityComponent> {
        let component = |entity_type: &str, name: &Option<EntityName>| {
            name.as_ref().map(|n| QuotaEntityComponent {
                entity_type: entity_type.to_owned(),
                name: match n {
                    EntityName::Default => None,
                    EntityName::Named(n) => Some(n.clone()),
                },
            })
        };
        [
            component("user", &self.user),
            component("client-id", &self.client_id),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `user=alice,client-id=<default>`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [("user", &self.user), ("client-id", &self.client_id)]
            .into_iter()
            .filter_map(|(kind, name)| Some(format!("{kind}={}", name.as_ref()?.display())))
            .collect();
        parts.join(",")
    }
}

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaKey {
    /// Bytes per second of produce requests.
    #[serde(rename = "producer_byte_rate")]
    ProducerByteRate,
    /// Bytes per second of fetch answers to consumers (followers are not limited).
    #[serde(rename = "consumer_byte_rate")]
    ConsumerByteRate,
}

impl QuotaKey {
    /// Every key.
    pub const ALL: [QuotaKey; 2] = [QuotaKey::ProducerByteRate, QuotaKey::ConsumerByteRate];

    /// Kafka's name of it.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
        }
    }

    /// The key Kafka names `name`; an error saying what sluice enforces for any other.
    pub fn from_name(name: &str) -> Result<QuotaKey, String> {
        QuotaKey::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                format!(
                    "sluice enforces the quotas producer_byte_rate and consumer_byte_rate, \
                     not {name:?}"
                )
            })
    }
}

/// The quotas of one entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientQuota {
    pub entity: QuotaEntity,
    /// Bytes per second, per key set.
    pub values: BTreeMap<QuotaKey, u64>,
}

/// A change of one entity's quotas: keys set, then keys removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaChange {
    pub entity: QuotaEntity,
    pub set: BTreeMap<QuotaKey, u64>,
    pub remove: Vec<QuotaKey>,
}

impl QuotaChange {
    /// Refuses an entity with no component and a rate of zero.
    pub fn validate(&self) -> Result<(), String> {
        self.entity.validate()?;
        if let Some((key, _)) = self.set.iter().find(|(_, &v)| v == 0) {
            return Err(format!(
                "{} must be at least 1 byte per second; remove the quota to lift the limit",
                key.name()
            ));
        }
        Ok(())
    }
}

impl QuotaChange {
    /// The change an AlterClientQuotas entry asks for, or why it cannot be made.
    pub fn from_wire(entry: &QuotaAlteration) -> Result<QuotaChange, String> {
        let mut entity = QuotaEntity::default();
        for component in &entry.entity {
            let name = component
                .name
                .clone()
                .map_or(EntityName::Default, EntityName::Named);
            let slot = match component.entity_type.as_str() {
                "user" => &mut entity.user,
                "client-id" => &mut entity.client_id,
                other => {
                    return Err(format!(
                        "sluice sets quotas for a user and a client id, not for entity type \
                         {other:?}"
                    ))
                }
            };
            if slot.replace(name).is_some() {
                return Err(format!("the entity names {} twice", component.entity_type));
            }
        }
        let mut change = QuotaChange {
            entity,
            set: BTreeMap::new(),
            remove: Vec::new(),
        };
        for op in &entry.ops {
            let key = QuotaKey::from_name(&op.key)?;
            if op.remove {
                change.remove.push(key);
            } else {
                let rate = u64::try_from(op.value)
                    .map_err(|_| format!("{} must not be negative", op.key))?;
                change.set.insert(key, rate);
            }
        }
        change.validate()?;
        Ok(change)
    }

    /// This change as an AlterClientQuotas entry.
    pub fn to_wire(&self) -> QuotaAlteration {
        let entity = self.entity.to_wire();
        let set = self.set.iter().map(|(k, v)| QuotaOp {
            key: k.name().to_owned(),
            value: i64::try_from(*v).unwrap_or(i64::MAX),
            remove: false,
        });
        let remove = self.remove.iter().map(|k| QuotaOp {
            key: k.name().to_owned(),
            value: 0,
            remove: true,
        });
        QuotaAlteration {
            entity,
            ops: set.chain(remove).collect(),
        }
    }
}

/// Applies `changes` to `quotas` (kept sorted by entity; an entity left without quotas
/// goes). Through a map, so a command of many entities in any order costs
/// O((quotas + changes) log), not a vector insert per change.
pub fn apply(quotas: &mut Vec<ClientQuota>, changes: &[QuotaChange]) {
    let mut all: BTreeMap<QuotaEntity, BTreeMap<QuotaKey, u64>> = std::mem::take(quotas)
        .into_iter()
        .map(|q| (q.entity, q.values))
        .collect();
    for change in changes {
        let values = all.entry(change.entity.clone()).or_default();
        values.extend(change.set.iter().map(|(k, v)| (*k, *v)));
        for key in &change.remove {
            values.remove(key);
        }
        if values.is_empty() {
            all.remove(&change.entity);
        }
    }
    *quotas = all
        .into_iter()
        .map(|(entity, values)| ClientQuota { entity, values })
        .collect();
}

/// `entity`'s quotas in `quotas` (sorted by entity, as [`apply`] keeps them).
pub fn find<'a>(quotas: &'a [ClientQuota], entity: &QuotaEntity) -> Option<&'a ClientQuota> {
    let at = quotas.binary_search_by(|q| q.entity.cmp(entity)).ok()?;
    Some(&quotas[at])
}

/// The quota on `key` that applies to `user`'s client `client_id`, and the usage it is
/// counted against: Kafka's precedence, the most specific entity with `key` set first
/// (user and client id, user and default client id, user, default user and client id,
/// default user and default client id, default user, client id, default client id).
/// Usage is counted per name the entity's components match: under a default user's
/// quota each user has a rate of their own, as in Kafka.
pub fn resolve<'a>(
    quotas: &[ClientQuota],
    key: QuotaKey,
    user: &'a str,
    client_id: &'a str,
) -> Option<(u64, UsageKey)> {
    const ORDER: [(Level, Level); 8] = [
        (Level::Named, Level::Named),
        (Level::Named, Level::Default),
        (Level::Named, Level::Absent),
        (Level::Default, Level::Named),
        (Level::Default, Level::Default),
        (Level::Default, Level::Absent),
        (Level::Absent, Level::Named),
        (Level::Absent, Level::Default),
    ];
    let wanted = |level: Level, name: &'a str| match level {
        Level::Absent => Wanted::Absent,
        Level::Default => Wanted::Default,
        Level::Named => Wanted::Named(name),
    };
    // Each level names exactly one entity: a binary search each, not a scan of every quota
    // on every request.
    ORDER.iter().find_map(|&(user_level, client_level)| {
        let (want_user, want_client) = (wanted(user_level, user), wanted(client_level, client_id));
        let at = quotas
            .binary_search_by(|q| {
                compare(&q.entity.user, want_user)
                    .then_with(|| compare(&q.entity.client_id, want_client))
            })
            .ok()?;
        let rate = *quotas[at].values.get(&key)?;
        Some((
            rate,
            UsageKey {
                key,
                user: (user_level != Level::Absent).then(|| user.to_owned()),
                client_id: (client_level != Level::Absent).then(|| client_id.to_owned()),
            },
        ))
    })
}

/// An entity component as [`resolve`] looks one up, without owning its name.
#[derive(Clone, Copy)]
enum Wanted<'a> {
    Absent,
    Default,
    Named(&'a str),
}

/// How `have` orders against `want` in [`QuotaEntity`]'s derived order (`None`, then
/// `Default`, then names in byte order).
fn compare(have: &Option<EntityName>, want: Wanted<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (have, want) {
        (None, Wanted::Absent) => Equal,
        (None, _) => Less,
        (Some(_), Wanted::Absent) => Greater,
        (Some(EntityName::Default), Wanted::Default) => Equal,
        (Some(EntityName::Default), Wanted::Named(_)) => Less,
        (Some(EntityName::Named(_)), Wanted::Default) => Greater,
        (Some(EntityName::Named(n)), Wanted::Named(w)) => n.as_str().cmp(w),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Named,
    Default,
    Absent,
}

/// What a client's usage is counted under: the quota's key and the names its entity
/// matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub key: QuotaKey,
    pub user: Option<String>,
    pub client_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn named(n: &str) -> Option<EntityName> {
        Some(EntityName::Named(n.to_owned()))
    }

    fn quota(user: Option<EntityName>, client_id: Option<EntityName>, rate: u64) -> QuotaChange {
        QuotaChange {
            entity: QuotaEntity { user, client_id },
            set: BTreeMap::from([(QuotaKey::ProducerByteRate, rate)]),
            remove: vec![],
        }
    }

    #[test]
    fn the_most_specific_quota_applies_and_defaults_count_each_name_apart() {
        let mut quotas = Vec::new();
        apply(
            &mut quotas,
            &[
                quota(None, Some(EntityName::Default), 8),
                quota(None, named("etl"), 7),
                quota(Some(EntityName::Default), None, 6),
                quota(named("alice"), None, 3),
                quota(named("alice"), named("etl"), 1),
            ],
        );
        let p = QuotaKey::ProducerByteRate;
        let rate = |user, client| resolve(&quotas, p, user, client).map(|(r, _)| r);
        assert_eq!(rate("alice", "etl"), Some(1));
        assert_eq!(rate("alice", "web"), Some(3));
        assert_eq!(
            rate("bob", "etl"),
            Some(6),
            "the default user before client ids"
        );
        assert_eq!(
            resolve(&quotas, QuotaKey::ConsumerByteRate, "bob", "etl"),
            None
        );
        let (_, usage) = resolve(&quotas, p, "bob", "etl").unwrap();
        assert_eq!(
            (usage.user.as_deref(), usage.client_id.as_deref()),
            (Some("bob"), None),
            "each user counted apart under the default user's quota"
        );
        // Without user quotas, client ids decide.
        let clients: Vec<ClientQuota> = quotas
            .iter()
            .filter(|q| q.entity.user.is_none())
            .cloned()
            .collect();
        assert_eq!(resolve(&clients, p, "bob", "etl").unwrap().0, 7);
        assert_eq!(resolve(&clients, p, "bob", "web").unwrap().0, 8);
    }

    #[test]
    fn changes_round_trip_through_the_wire_and_bad_entries_are_refused() {
        let mut change = quota(named("alice"), Some(EntityName::Default), 5);
        change.remove.push(QuotaKey::ConsumerByteRate);
        assert_eq!(
            QuotaChange::from_wire(&change.to_wire()),
            Ok(change.clone())
        );
        let mut ip = change.to_wire();
        ip.entity[0].entity_type = "ip".to_owned();
        assert!(QuotaChange::from_wire(&ip).unwrap_err().contains("\"ip\""));
        let mut twice = change.to_wire();
        twice.entity[1].entity_type = "user".to_owned();
        assert!(QuotaChange::from_wire(&twice).is_err());
        let mut percentage = change.to_wire();
        percentage.ops[0].key = "request_percentage".to_owned();
        assert!(QuotaChange::from_wire(&percentage).is_err());
        let mut negative = change.to_wire();
        negative.ops[0].value = -1;
        assert!(QuotaChange::from_wire(&negative).is_err());
    }

    #[test]
    fn removing_an_entitys_last_quota_removes_the_entity() {
        let mut quotas = Vec::new();
        apply(&mut quotas, &[quota(named("alice"), None, 5)]);
        let mut change = quota(named("alice"), None, 9);
        change.set.insert(QuotaKey::ConsumerByteRate, 4);
        apply(&mut quotas, &[change]);
        assert_eq!(quotas.len(), 1);
        assert_eq!(quotas[0].values[&QuotaKey::ProducerByteRate], 9);
        let remove = QuotaChange {
            entity: quotas[0].entity.clone(),
            set: BTreeMap::new(),
            remove: QuotaKey::ALL.to_vec(),
        };
        apply(&mut quotas, &[remove]);
        assert!(quotas.is_empty());
    }

    #[test]
    fn an_entity_without_components_and_a_zero_rate_are_refused() {
        assert!(quota(None, None, 5).validate().is_err());
        assert!(quota(named("a"), None, 0).validate().is_err());
        assert!(quota(named("a"), None, 1).validate().is_ok());
        assert!(QuotaKey::from_name("request_percentage").is_err());
        assert_eq!(
            QuotaEntity {
                user: named("alice"),
                client_id: Some(EntityName::Default)
            }
            .describe(),
            "user=alice,client-id=<default>"
        );
    }

    /// Kafka's precedence spelled out as a scan of every quota: what [`resolve`]'s binary
    /// searches must agree with.
    fn resolve_by_scan(
        quotas: &[ClientQuota],
        key: QuotaKey,
        user: &str,
        client_id: &str,
    ) -> Option<u64> {
        let level = |name: &Option<EntityName>| match name {
            None => 0,
            Some(EntityName::Default) => 1,
            Some(EntityName::Named(_)) => 2,
        };
        let matches = |name: &Option<EntityName>, actual: &str| match name {
            Some(EntityName::Named(n)) => n == actual,
            _ => true,
        };
        let order = [
            (2, 2),
            (2, 1),
            (2, 0),
            (1, 2),
            (1, 1),
            (1, 0),
            (0, 2),
            (0, 1),
        ];
        order.iter().find_map(|&(u, c)| {
            quotas.iter().find_map(|q| {
                let e = &q.entity;
                let fits = level(&e.user) == u
                    && level(&e.client_id) == c
                    && matches(&e.user, user)
                    && matches(&e.client_id, client_id);
                q.values.get(&key).copied().filter(|_| fits)
            })
        })
    }

    fn name() -> impl Strategy<Value = Option<EntityName>> {
        prop_oneof![
            Just(None),
            Just(Some(EntityName::Default)),
            prop::sample::select(vec!["", "a", "ab", "b", "alice", "\u{e9}"])
                .prop_map(|n| Some(EntityName::Named(n.to_owned()))),
        ]
    }

    proptest! {
        #[test]
        fn resolve_agrees_with_a_scan_of_every_quota(
            changes in prop::collection::vec(
                (name(), name(), prop::option::of(1u64..100), prop::option::of(1u64..100), any::<bool>()),
                0..40,
            ),
            user in prop::sample::select(vec!["", "a", "ab", "b", "alice", "zed"]),
            client_id in prop::sample::select(vec!["", "a", "ab", "b", "alice", "zed"]),
        ) {
            let mut quotas = Vec::new();
            for (u, c, produce, consume, remove) in changes {
                let entity = QuotaEntity { user: u, client_id: c };
                if entity.validate().is_err() {
                    continue;
                }
                let set: BTreeMap<QuotaKey, u64> = [
                    (QuotaKey::ProducerByteRate, produce),
                    (QuotaKey::ConsumerByteRate, consume),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect();
                let remove = if remove { vec![QuotaKey::ConsumerByteRate] } else { vec![] };
                apply(&mut quotas, &[QuotaChange { entity, set, remove }]);
            }
            prop_assert!(quotas.windows(2).all(|w| w[0].entity < w[1].entity));
            for key in QuotaKey::ALL {
                prop_assert_eq!(
                    resolve(&quotas, key, user, client_id).map(|(rate, _)| rate),
                    resolve_by_scan(&quotas, key, user, client_id)
                );
            }
        }
    }
}
