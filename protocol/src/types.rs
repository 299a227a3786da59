//! Newtypes for the numbers that mean something: an offset is not an epoch, and a broker id
//! is not a partition index. Each is the fixed-width integer of the wire and disk formats.

use std::fmt;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

newtype!(
    /// Position of a record in a partition's log: 0 for the first record ever written,
    /// one more for each record after it. Never reused, never negative in a log.
    Offset(i64)
);
newtype!(
    /// Generation of a partition's leadership; bumped on every leader change and stamped on
    /// every batch the leader writes (`partitionLeaderEpoch`). -1 means "unknown".
    LeaderEpoch(i32)
);
newtype!(
    /// Identity of a broker node (`--node-id`). -1 means "none".
    BrokerId(i32)
);
newtype!(
    /// Index of a partition within its topic, from 0.
    PartitionId(i32)
);

impl Offset {
    /// The offset `n` records after this one.
    pub fn plus(self, n: i64) -> Offset {
        Offset(self.0 + n)
    }
}

impl LeaderEpoch {
    /// "No epoch known": what Kafka writes as -1.
    pub const UNKNOWN: LeaderEpoch = LeaderEpoch(-1);
}

impl BrokerId {
    /// "No broker": what Kafka writes as -1 (for example a partition without a leader).
    pub const NONE: BrokerId = BrokerId(-1);
}
