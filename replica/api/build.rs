//! Compiles `proto/dssmr.proto` with tonic-prost-build, using the protoc shipped by
//! `protoc-bin-vendored` so that no system protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/dssmr.proto");
    tonic_prost_build::configure().compile_protos(&["proto/dssmr.proto"], &["proto"])?;
    Ok(())
}
