"""A passphrase is asked for only where someone can type it.

`flwr run` from a terminal starts Flower's local SuperLink in a session of its own that still
holds the terminal as stdin; the example's ServerApp (and any securefl process sent to the
background) used to wait there forever on a prompt nobody saw. Each test runs a real process on a
real pseudo-terminal."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from securefl.keyfiles import IDENTITY_PASSPHRASE_ENV

ASK = "from securefl.keyfiles import passphrase; print('got', passphrase('the test key'), flush=True)"
# A session leader opening its terminal makes it its controlling terminal, with itself in front.
TAKE_THE_TERMINAL = "import os; os.close(os.open(os.ttyname(0), os.O_RDWR)); "
NO_PASSPHRASE = {k: v for k, v in os.environ.items() if k != IDENTITY_PASSPHRASE_ENV}


def _on_a_terminal(code: str) -> tuple[subprocess.Popen, int]:
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                               env=NO_PASSPHRASE, start_new_session=True)
    os.close(slave)
    return process, master


def _read_until(master: int, text: str, seconds: float = 20.0) -> str:
    seen, deadline = "", time.monotonic() + seconds
    while text not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 4096).decode(errors="replace")
            except OSError:  # the process ended and closed its side
                break
    return seen


def test_a_process_that_only_inherited_the_terminal_is_told_which_variable_to_set():
    process, master = _on_a_terminal(ASK)
    try:
        output = _read_until(master, IDENTITY_PASSPHRASE_ENV)
        assert process.wait(timeout=20) != 0
    finally:
        process.kill()
        os.close(master)
    assert f"the test key needs a passphrase: set {IDENTITY_PASSPHRASE_ENV}" in output
    assert "passphrase for" not in output  # no prompt


def test_the_terminals_foreground_process_is_asked_and_gets_what_was_typed():
    process, master = _on_a_terminal(TAKE_THE_TERMINAL + ASK)
    try:
        assert "passphrase for the test key:" in _read_until(master, "passphrase for the test key:")
        os.write(master, b"typed secret\n")
        assert "got typed secret" in _read_until(master, "got typed secret")
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        os.close(master)
