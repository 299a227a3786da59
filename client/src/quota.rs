//! Client quotas as the admin client sets and lists them: byte rates per user, client id,
//! or both (Kafka's `producer_byte_rate` and `consumer_byte_rate`), enforced by every
//! broker on its own.

use std::collections::BTreeMap;

use sluice_protocol::messages::{QuotaEntityComponent, QuotaEntry};

/// A user or client id a quota is for, or the default one (every user or client id without
/// a quota of its own at that level).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaName {
    /// The default user or client id.
    Default,
    /// This user or client id.
    Named(String),
}

impl QuotaName {
    /// `alice`, or `<default>` as Kafka's tools print it.
    pub fn display(&self) -> &str {
        match self {
            QuotaName::Default => "<default>",
            QuotaName::Named(n) => n,
        }
    }
}

/// Whom a quota is for: a user, a client id, or a user's client id.
///
/// ```
/// use sluice_client::{QuotaEntity, QuotaName};
/// let etl = QuotaEntity {
///     user: None,
///     client_id: Some(QuotaName::Named("etl".into())),
/// };
/// assert_eq!(etl.to_string(), "client-id=etl");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuotaEntity {
    /// The user (a principal's name without `User:`), if the quota names one.
    pub user: Option<QuotaName>,
    /// The client id, if the quota names one.
    pub client_id: Option<QuotaName>,
}

impl QuotaEntity {
    pub(crate) fn to_wire(&self) -> Vec<QuotaEntityComponent> {
        let component = |entity_type: &str, name: &Option<QuotaName>| {
            name.as_ref().map(|n| QuotaEntityComponent {
                entity_type: entity_type.to_owned(),
                name: match n {
                    QuotaName::Default => None,
                    QuotaName::Named(n) => Some(n.clone()),
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

    fn from_wire(components: &[QuotaEntityComponent]) -> QuotaEntity {
        let mut entity = QuotaEntity::default();
        for c in components {
            let name = c.name.clone().map_or(QuotaName::Default, QuotaName::Named);
            match c.entity_type.as_str() {
                "user" => entity.user = Some(name),
                "client-id" => entity.client_id = Some(name),
                _ => {}
            }
        }
        entity
    }
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [("user", &self.user), ("client-id", &self.client_id)]
            .into_iter()
            .filter_map(|(kind, name)| Some(format!("{kind}={}", name.as_ref()?.display())))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// An entity's quotas, by Kafka's name (`producer_byte_rate`), in bytes per second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientQuota {
    /// Whom the quotas are for.
    pub entity: QuotaEntity,
    /// Bytes per second, by quota name.
    pub values: BTreeMap<String, u64>,
}

impl ClientQuota {
    pub(crate) fn from_wire(entry: QuotaEntry) -> ClientQuota {
        ClientQuota {
            entity: QuotaEntity::from_wire(&entry.entity),
            values: entry
                .values
                .into_iter()
                .map(|v| (v.key, u64::try_from(v.value).unwrap_or(0)))
                .collect(),
        }
    }
}
