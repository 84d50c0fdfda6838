//! Generates the gRPC message types the decoders read (`src/protocol/grpc/`)
//! from the vendored upstream `.proto` files, with protox as the compiler so
//! that no `protoc` binary is needed. Only messages: modelwatch never serves
//! or calls these services, it reads the frames that pass through it.

fn main() {
    const ROOT: &str = "src/protocol/grpc/proto";
    let files = [
        "triton/grpc_service.proto",
        "tensorflow/tensorflow_serving/apis/predict.proto",
    ];
    let includes = [format!("{ROOT}/triton"), format!("{ROOT}/tensorflow")];
    let paths: Vec<String> = files.iter().map(|f| format!("{ROOT}/{f}")).collect();
    println!("cargo:rerun-if-changed={ROOT}");
    let descriptors =
        protox::compile(&paths, &includes).expect("the vendored .proto files compile");
    prost_build::Config::new()
        // Feature order of TF Serving's `map<string, TensorProto>` inputs: by name.
        .btree_map(["."])
        .compile_fds(descriptors)
        .expect("prost generates the message types");
}
