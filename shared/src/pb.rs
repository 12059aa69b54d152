//! Generated protobuf and gRPC code for package `hive.v1`, and the encoded
//! descriptor set that server reflection serves. The only place where lint
//! allowances for generated code live.

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("hive.v1");
}

pub use generated::*;

/// Encoded `FileDescriptorSet` of every `hive.v1` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hive_descriptor.bin"));
