//! Generates the gRPC contract's Rust code from `proto/` at build time, without a system protoc.
//!
//! protox compiles the `.proto` files to a descriptor set in-process; tonic-prost-build turns
//! that into messages, the server trait and the client. The encoded descriptor set is written
//! next to the generated code so the adapter can serve gRPC reflection from it.

use std::env;
use std::error::Error;
use std::fs;
use std::path::PathBuf;

use prost::Message;

/// The contract's files, relative to the module root `proto/` (the root buf lints).
const PROTO_FILES: [&str; 2] = [
    "refbus/v1/referral.proto",
    "refbus/v1/referral_service.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(PROTO_FILES, [&proto_root])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("refbus_v1_descriptor.binpb"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The person's identity must never reach a log line through `{:?}`; lib.rs gives it a
        // Debug that shows nothing.
        .skip_debug([".refbus.v1.ClientIdentity"])
        .compile_fds(descriptors)?;
    Ok(())
}
