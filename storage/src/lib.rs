//! `sluice-storage`: the durable, segmented log of one partition replica.
