"""The checked-in gRPC modules are exactly what scripts/generate_protos.py makes of protos/, and
they load under every protobuf runtime the project supports (Flower needs protobuf < 7), beside
the grpcio-health-checking release a resolver picks for that runtime (each release pins its own
protobuf range)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED_PROTOBUF = {  # runtime: the newest grpcio-health-checking pyproject.toml allows with it
    "protobuf==5.28.3": "grpcio-health-checking==1.67.1",
    "protobuf==6.33.6": "grpcio-health-checking==1.81.1",
    "protobuf==7.36.2": "grpcio-health-checking==1.85.1",
}


def _generator():
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "scripts" / "generate_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto_files(tmp_path):
    _generator().generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "securefl" / "v1").glob("*_pb2*.py*"))
    checked_in = sorted(p.relative_to(ROOT) for p in (ROOT / "securefl" / "v1").glob("*_pb2*.py*"))
    assert generated == checked_in, "a .proto file was added or removed without regenerating"
    for path in generated:
        assert (tmp_path / path).read_bytes() == (ROOT / path).read_bytes(), f"{path} drifted from its .proto"


@pytest.mark.parametrize("protobuf", SUPPORTED_PROTOBUF)
def test_generated_code_loads_without_warnings_under_each_supported_protobuf(protobuf):
    runtime = _generator().installed(protobuf, SUPPORTED_PROTOBUF[protobuf])
    script = (
        "import google.protobuf, sys\n"
        "from securefl.v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2, keyholder_pb2_grpc, psi_pb2_grpc\n"
        "from securefl.services.health import Health\n"
        "Health('securefl.v1.Aggregator').serving()\n"
        "receipt = common_pb2.Receipt(round_id='r', vector_length=7, digest=b'x' * 32)\n"
        "assert common_pb2.Receipt.FromString(receipt.SerializeToString()) == receipt\n"
        "assert aggregator_pb2.DESCRIPTOR.services_by_name['Aggregator']\n"
        "print(google.protobuf.__version__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(runtime), str(ROOT)])}, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == protobuf.split("==")[1]
