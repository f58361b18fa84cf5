//! Compiles the SPIFFE Workload API's proto (`proto/workloadapi.proto`) with `protox`, a
//! protobuf compiler written in Rust, so building Remit needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workloadapi.proto");
    let fds = protox::compile(["proto/workloadapi.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(false).build_server(true).compile_fds(fds)?;
    Ok(())
}
