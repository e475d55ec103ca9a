"""Regenerate securefl/v1/*_pb2*.py from protos/. The only way generated code is made.

The code generator is pinned (`GRPC_TOOLS`), whatever is installed: its gencode targets
protobuf 5.27, which every protobuf runtime from 5.28 to 7.x loads, so securefl installs
beside Flower (protobuf < 7) as well as beside current protobuf 7. The pinned tools are
installed once into a cache directory of their own, never into the project's environment.

    python scripts/generate_protos.py            # rewrite securefl/v1 in place
    python scripts/generate_protos.py OUT_DIR    # write elsewhere (the drift test does)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GRPC_TOOLS = "grpcio-tools==1.66.2"
PROTOBUF_FOR_TOOLS = "protobuf==5.29.6"


def cache_dir(requirement: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "securefl" / requirement.replace("==", "-")


def installed(*requirements: str) -> Path:
    """A directory holding exactly `requirements` (pip --target), made once and reused."""
    target = cache_dir("+".join(requirements))
    marker = target / ".complete"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
             "--upgrade", "--target", str(target), *requirements],
            check=True,
        )
        marker.touch()
    return target


def generate(out_dir: Path) -> None:
    """Run the pinned grpc_tools.protoc over every .proto file, writing Python modules into out_dir."""
    tools = installed(GRPC_TOOLS, PROTOBUF_FOR_TOOLS)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from grpc_tools import protoc\n"
        "include = str(Path(protoc.__file__).parent / '_proto')\n"
        "sys.exit(protoc.main(['protoc', '-I' + sys.argv[1], '-I' + include, '--python_out=' + sys.argv[2],"
        " '--pyi_out=' + sys.argv[2], '--grpc_python_out=' + sys.argv[2], *sys.argv[3:]]))\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # -S: only the pinned tools are importable, never the environment's own protobuf.
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, str(PROTO_ROOT), str(out_dir), *protos],
        env={**os.environ, "PYTHONPATH": str(tools)},
    )
    if result.returncode != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
