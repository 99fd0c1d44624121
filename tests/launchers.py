"""Start hfprune on several CPU processes the way a test can: torchrun (``accelerate launch --cpu`` starts one)."""

import os
import socket
import sys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, processes: int = 2) -> list[str]:
    """The command line of ``torchrun --nproc_per_node processes ARGS`` on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(free_port()), *args]


def cpu_ddp_environment(**extra: str) -> dict[str, str]:
    """accelerate on the CPU (gloo), one thread per process, offline."""
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", **extra}
