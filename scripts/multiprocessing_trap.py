"""Does a multiprocessing pool leak constraints to the program that uses it? (issue 13, item 1)

For the `spawn` and `forkserver` start methods (`fork` is unsafe once gRPC threads run), and for
the ways a user runs code (a script without an `if __name__ == "__main__":` guard, `python -`,
`python -c`), this runs a small program that starts the forkserver first (before any gRPC
thread), then opens a gRPC channel, then maps a builtin over a 2-process pool, and reports
whether the pool answered and how many times the program's own top-level code ran (once is
right; more means every worker re-ran the caller's script).

Run: python scripts/multiprocessing_trap.py"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

PROGRAM = """\
import multiprocessing, multiprocessing.forkserver, sys
print("TOP-LEVEL CODE RAN", flush=True)
context = multiprocessing.get_context({method!r})
if {method!r} == "forkserver":
    multiprocessing.forkserver.ensure_running()  # before any gRPC thread exists
import grpc
channel = grpc.insecure_channel("127.0.0.1:1")  # gRPC's threads now run in this process
from concurrent.futures import ProcessPoolExecutor
try:
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        print("POOL ANSWERED", list(pool.map(abs, [-1, -2])), flush=True)
except Exception as exc:
    print("POOL FAILED", type(exc).__name__, flush=True)
"""


def run(method: str, entry: str, directory: Path) -> str:
    program = PROGRAM.format(method=method)
    if entry == "script without a main guard":
        (directory / "program.py").write_text(program)
        command, stdin = [sys.executable, str(directory / "program.py")], None
    elif entry == "python -":
        command, stdin = [sys.executable, "-"], program
    else:
        command, stdin = [sys.executable, "-c", program], None
    completed = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, cwd=directory)
    output = completed.stdout + completed.stderr
    answered = "POOL ANSWERED" in completed.stdout
    return (f"pool {'answered' if answered else 'FAILED'}; the program's top-level code ran "
            f"{output.count('TOP-LEVEL CODE RAN')}x; pools that failed: {output.count('POOL FAILED')}")


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        for method in ("spawn", "forkserver"):
            for entry in ("script without a main guard", "python -", "python -c"):
                print(f"{method:10} {entry:28} {run(method, entry, Path(directory))}", flush=True)


if __name__ == "__main__":
    main()
