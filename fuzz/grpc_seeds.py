# Writes the gRPC fuzz targets' seeds (fuzz/corpus/*grpc*/seed*) with
# Python's protobuf, from the vendored .proto files compiled by grpc_tools:
#   .testbed/venvs/kserve/bin/python fuzz/grpc_seeds.py    (from the repository root)
# A second encoder than prost: src/protocol/grpc/tests.rs decodes the seeds.
import sys, struct, gzip, os, subprocess, tempfile

P = "src/protocol/grpc/proto"
out = tempfile.mkdtemp()
subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{P}/triton", f"-I{P}/tensorflow", f"--python_out={out}",
                f"{P}/triton/grpc_service.proto", f"{P}/triton/model_config.proto",
                f"{P}/tensorflow/tensorflow_serving/apis/predict.proto", f"{P}/tensorflow/tensorflow_serving/apis/model.proto"]
               + [f"{P}/tensorflow/tensorflow/core/framework/{n}.proto" for n in ("tensor", "tensor_shape", "types", "resource_handle")],
               check=True)
sys.path.insert(0, out)
import grpc_service_pb2 as pb
from tensorflow_serving.apis import predict_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2, tensor_shape_pb2

def frame(msgs, compress=False):
    out = b""
    for m in msgs:
        b = m.SerializeToString()
        if compress:
            b = gzip.compress(b)
        out += struct.pack(">BI", 1 if compress else 0, len(b)) + b
    return out

def pair(req, resp):
    assert b"\xff\x00" not in req, "the split marker inside the request"
    return req + b"\xff\x00" + resp

def oip_req(i, raw=False):
    r = pb.ModelInferRequest(model_name="bc", model_version="v1", id=f"r{i}")
    t = r.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    if raw:
        r.raw_input_contents.append(struct.pack("<4f", 1.5, 2.5, 3.5, 4.5))
    else:
        t.contents.fp32_contents.extend([1.5, 2.5, 3.5, 4.5])
    s = r.inputs.add(name="s", datatype="BYTES", shape=[2, 1])
    if raw:
        r.raw_input_contents.append(struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c")
    else:
        s.contents.bytes_contents.extend([b"ab", b"c"])
    return r

def oip_resp(i):
    r = pb.ModelInferResponse(model_name="bc", model_version="v1", id=f"r{i}")
    o = r.outputs.add(name="predict", datatype="INT64", shape=[2, 1])
    o.contents.int64_contents.extend([1, 0])
    p = r.outputs.add(name="proba", datatype="FP64", shape=[2, 2])
    p.contents.fp64_contents.extend([0.25, 0.75, 0.5, 0.5])
    return r

def write(target, name, data):
    d = f"fuzz/corpus/{target}"
    os.makedirs(d, exist_ok=True)
    open(f"{d}/{name}", "wb").write(data)

write("decode_grpc_oip", "seed1", pair(frame([oip_req(0)]), frame([oip_resp(0)])))
write("decode_grpc_oip", "seed2", pair(frame([oip_req(0, raw=True), oip_req(1)]), frame([oip_resp(1), oip_resp(0)])))
stream = pb.ModelStreamInferResponse(infer_response=oip_resp(0))
err = pb.ModelStreamInferResponse(error_message="failed")
write("decode_grpc_oip", "seed3", pair(frame([oip_req(0), oip_req(1)]), frame([stream, err])))

def tensor(dtype, dims, **vals):
    t = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))
    for k, v in vals.items():
        if k == "tensor_content":
            t.tensor_content = v
        else:
            getattr(t, k).extend(v)
    return t

req = predict_pb2.PredictRequest()
req.model_spec.name = "iris"
req.model_spec.version.value = 3
req.inputs["a"].CopyFrom(tensor(types_pb2.DT_FLOAT, [2, 1], float_val=[1.5, 2.5]))
req.inputs["b"].CopyFrom(tensor(types_pb2.DT_DOUBLE, [2, 1], tensor_content=struct.pack("<2d", 3.0, 4.0)))
resp = predict_pb2.PredictResponse()
resp.model_spec.name = "iris"
resp.outputs["scores"].CopyFrom(tensor(types_pb2.DT_FLOAT, [2, 2], float_val=[0.1, 0.9, 0.8, 0.2]))
write("decode_grpc_tfserving", "seed1", pair(frame([req]), frame([resp])))
write("decode_grpc_tfserving", "seed2", pair(frame([req], True), frame([resp], True)))

write("grpc_framing", "seed1", b"\x02" + frame([oip_req(0), oip_resp(0)]))
write("grpc_framing", "seed2", b"\x00" + frame([oip_req(0)], True))
