//! Compiles `proto/hive/v1/*.proto` with protox (no `protoc` needed) into OUT_DIR
//! (all but `WatchResponse`, written by hand in `src/pb/watch_response.rs`),
//! and writes the encoded descriptor set that server reflection serves; and
//! `otlp/trace.proto`, the OTLP trace export (client and server: tests run a collector).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("../proto");
    let files = ["hive/v1/types.proto", "hive/v1/worker.proto", "hive/v1/admin.proto"];
    println!("cargo:rerun-if-changed=../proto");

    let descriptor_set = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("hive_descriptor.bin"), descriptor_set.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::HiveCodec")
        // Written by hand, so events are encoded once for every watcher (`pb::watch_response`).
        .extern_path(".hive.v1.WatchResponse", "crate::pb::WatchResponse")
        .compile_fds(descriptor_set)?;

    println!("cargo:rerun-if-changed=otlp");
    let otlp = protox::compile(["trace.proto"], ["otlp"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(otlp)?;
    Ok(())
}
