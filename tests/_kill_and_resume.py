"""Shared by the kill tests: start ``python -m jaxdl`` in a subprocess, SIGKILL it after its first
checkpoint while an uninterrupted twin runs to the end."""

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest


def start_jaxdl(log_path, *args) -> subprocess.Popen:
    """Starts ``python -m jaxdl ARGS`` writing its output to ``log_path``."""
    with open(log_path, "wb") as log:  # the child keeps its own handle
        command = [sys.executable, "-m", "jaxdl", *args]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_until(saved: Callable[[], bool], process: subprocess.Popen, timeout=120.0) -> None:
    """Blocks until ``saved()`` (a complete checkpoint exists: orbax renames a step when done);
    fails if ``process`` ends first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if saved():
            return
        if process.poll() is not None:
            command = " ".join(process.args[2:4])  # "jaxdl train", "jaxdl sweep"
            pytest.fail(f"{command} ended (status {process.returncode}) before a checkpoint")
        time.sleep(0.05)
    pytest.fail("no checkpoint within the timeout")


def kill_after_checkpoint(
    saved: Callable[[], bool],
    killed: subprocess.Popen,
    uninterrupted: subprocess.Popen,
    uninterrupted_log,
) -> None:
    """SIGKILLs ``killed`` once ``saved()``, and waits for ``uninterrupted`` to end with status 0
    (its log is the failure message); neither process outlives the call."""
    try:
        wait_until(saved, killed)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        assert uninterrupted.wait(timeout=300) == 0, uninterrupted_log.read_text()
    finally:
        for process in (killed, uninterrupted):
            if process.poll() is None:
                process.kill()
