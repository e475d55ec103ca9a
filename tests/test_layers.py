"""One protocol core, thin transports: no module of the core imports a transport (gRPC, Flower)
or anything from securefl/services or securefl/integrations, directly or through a module of
the core it imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "securefl"
CORE = ["rounds", "he", "masking", "psi", "errors.py", "identity.py", "quantize.py", "tensors.py", "federation.py",
        "pki.py", "keyfiles.py", "prg.py", "schemes.py", "telemetry.py"]
FORBIDDEN = ("grpc", "flwr", "prometheus_client", "securefl.services", "securefl.integrations")


def core_modules() -> list[Path]:
    paths = []
    for entry in CORE:
        path = PACKAGE / entry
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return paths


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_no_transport(path):
    offending = sorted(n for n in imported_modules(path) if n.startswith(FORBIDDEN))
    assert not offending, f"{path.relative_to(PACKAGE)} imports {offending}"


def test_the_check_sees_a_transport_import():
    module = PACKAGE / "services" / "aggregator.py"
    assert any(n.startswith(FORBIDDEN) for n in imported_modules(module))
