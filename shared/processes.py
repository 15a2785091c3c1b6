"""Child processes that never outlive their parent, stopped by their own PID."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that asks Linux to send `signum` to the child when its parent dies.

    This is what keeps a `driftloop up` that was killed -9 from leaving services holding
    their ports. Linux ties the signal to the *thread* that forked the child, so spawn from
    a thread that lives as long as the parent (the main thread). None on other systems.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    # Looked up here, in the parent: the child runs `arm` between fork and exec while other
    # threads' locks (the dynamic loader's among them) may be frozen, so it must not dlopen.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        if prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os.kill(os.getpid(), signum)

    return arm


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (Linux /proc; signal 0 elsewhere)."""
    if not os.path.isdir("/proc"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; always reaps the process."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
