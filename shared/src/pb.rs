//! Generated protobuf and gRPC code for package `hive.v1`, and the encoded
//! descriptor set that server reflection serves. The only place where lint
//! allowances for generated code live. One message is written by hand:
//! [`WatchResponse`] (see `watch_response`).

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("hive.v1");
}

mod watch_response;

pub use generated::*;
pub use watch_response::{WatchResponse, encode_record};

/// Encoded `FileDescriptorSet` of every `hive.v1` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hive_descriptor.bin"));
