//! Compiles `proto/tessera.proto` with protox (a pure-Rust protobuf compiler:
//! no system `protoc`), then generates the tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tessera.proto");
    let fds = protox::compile(["tessera.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
