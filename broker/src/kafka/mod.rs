//! The Kafka wire protocol, for a second listener that Kafka clients (librdkafka, the Java
//! client, kafka-python) talk to. `codec` turns one frame's payload into a typed request
//! and typed responses back into bytes; it is sans-IO, like `sluice-protocol`, and the
//! framing (a `u32` length prefix) is the native `FrameCodec`'s. The message types come from
//! the `kafka-protocol` crate (vendored and patched, see `third_party/kafka-protocol`).
//!
//! Architecture invariant: nothing here does I/O or knows the service layer; the listener
//! and the handlers that serve Kafka requests sit on top of `codec`.

pub mod codec;
