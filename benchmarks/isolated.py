"""Run one piece of work in its own process group within a time cap, and say how it ended.

The work is a function run in a forked child (fast: the child inherits this process's imports) or a command run
as a fresh interpreter. Either writes its outcome (a JSON object) to a result file; a crash, a kill by the
out-of-memory killer or a hang past the cap ends that process group only, and comes back as a ``failed`` outcome
with the reason and the last line the work printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable


def one_line(error: BaseException, limit: int = 400) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    text = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
    return message if len(message) <= limit else message[:limit - 3] + "..."


def redirect_output(log: Path) -> None:
    """This process's stdout and stderr, file descriptors and Python streams alike, into ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # Python's streams too, even where replaced (pytest)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def finish(body: Callable[[], dict], result: Path) -> None:
    """Write ``body()``'s outcome to ``result`` and exit this process at once (no cleanup handlers)."""
    code = 0
    try:
        result.write_text(json.dumps(body(), default=str))
    except BaseException:  # noqa: BLE001 - whatever happens, the process ends here
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_forked(body: Callable[[], dict], cap: float, log: Path, result: Path) -> dict:
    """``body()`` in a forked child of its own process group, output to ``log``; see :func:`outcome`."""
    result.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        redirect_output(log)
        finish(body, result)
    try:
        os.setpgid(pid, pid)  # here too: a kill right after the fork must reach the child's group
    except OSError:
        pass
    return outcome(pid, cap, log, result, started)


def run_spawned(command: list[str], cap: float, log: Path, result: Path, cwd: Path | None = None) -> dict:
    """``command`` (which writes its outcome to ``result``) in a new session, output to ``log``."""
    result.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    status = outcome(process.pid, cap, log, result, started)
    process.returncode = 0  # reaped by outcome(); keeps Popen from waiting on it again
    return status


def outcome(pid: int, cap: float, log: Path, result: Path, started: float) -> dict:
    """Wait for ``pid`` up to ``cap`` seconds, then end its whole process group; the outcome it wrote, or
    ``{"status": "failed", "why": ...}`` when it timed out, was killed or exited without one. ``seconds`` added."""
    status, timed_out = wait(pid, cap)
    seconds = time.perf_counter() - started
    if result.is_file() and not timed_out:
        return {**json.loads(result.read_text()), "seconds": seconds}
    if timed_out:
        why = f"timed out after {cap:.0f} s (its cap)"
    elif os.WIFSIGNALED(status):
        why = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        why = f"exited with status {os.WEXITSTATUS(status)} without a result"
    last = last_line(log)
    return {"status": "failed", "why": why + (f"; last output: {last}" if last else ""), "figures": {},
            "seconds": seconds}


def wait(pid: int, cap: float) -> tuple[int | None, bool]:
    """(wait status, timed out): the group is killed before the child is reaped, so its id cannot be reused."""
    deadline = time.monotonic() + cap
    while True:
        ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if ended is not None:
            kill_group(pid)  # whatever it started and left behind (e.g. Ray's processes)
            return os.waitpid(pid, 0)[1], False
        if time.monotonic() > deadline:
            kill_group(pid)
            os.waitpid(pid, 0)
            return None, True
        time.sleep(0.05)


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def last_line(log: Path, limit: int = 300) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-limit:] if lines else ""


def fork_keeps_cuda() -> bool:
    """Whether a forked child can still use CUDA (not when something in this process initialised it)."""
    import torch

    if torch.cuda.is_initialized():
        return False
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.zeros(1, device="cuda").add_(1)
            torch.cuda.synchronize()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
