//! Compiles the .proto files with protox (pure Rust, no protoc) and generates tonic client and
//! server code for every service. A new service (member-to-member, say) is a new file in
//! `PROTO_FILES`.

const PROTO_FILES: &[&str] = &["cairn.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `bytes::Bytes` for the BSON payloads: a 48 MB reply is decoded without another copy.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
