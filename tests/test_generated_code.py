"""The checked-in gRPC modules are exactly what scripts/generate_protos.py makes of protos/."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_proto_files(tmp_path):
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "scripts" / "generate_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "securefl" / "v1").glob("*_pb2*.py*"))
    checked_in = sorted(p.relative_to(ROOT) for p in (ROOT / "securefl" / "v1").glob("*_pb2*.py*"))
    assert generated == checked_in, "a .proto file was added or removed without regenerating"
    for path in generated:
        assert (tmp_path / path).read_bytes() == (ROOT / path).read_bytes(), f"{path} drifted from its .proto"


def test_generated_code_loads_with_installed_protobuf_runtime():
    from securefl.v1 import aggregator_pb2, keyholder_pb2

    assert aggregator_pb2.DESCRIPTOR.package == "securefl.v1"
    assert keyholder_pb2.DESCRIPTOR.services_by_name["KeyHolder"].methods_by_name["Decrypt"]
