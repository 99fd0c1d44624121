"""Trials as Ray tasks: up to N at once over every CPU and GPU of a local instance or of a running cluster.

The study's trial runner (for an oracle study: recipe, dense model, task with its data, plan) goes into Ray's
object store once; each worker process fetches it on its first trial and keeps it for the next ones. A task returns its
record and the model to export (on the CPU); the driver alone writes the store. A worker that dies mid-trial
(killed, out of memory, node lost) has its trial run again by Ray (``execution.max_retries``), and since the
driver records only what tasks return, that trial is recorded once.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Iterator

import ray

from hfprune.errors import HfpruneError, reason
from hfprune.study.executors.base import FinishedTrial, TrialRunner, torch_threads
from hfprune.study.recipe import ExecutionSection
from hfprune.study.spec import TrialSpec

_RUNNERS: dict[str, TrialRunner] = {}  # in a worker process: the trial runner of the study it serves, by object id


def _run_on_worker(runner_ref: list, spec: TrialSpec, threads: int) -> FinishedTrial:
    """The Ray task: one trial, on the device Ray assigned (``runner_ref`` is a one-element list so that Ray
    hands over the reference, not a fresh copy of the runner per task)."""
    key = runner_ref[0].hex()
    if key not in _RUNNERS:
        _RUNNERS.clear()
        _RUNNERS[key] = ray.get(runner_ref[0])
    with torch_threads(threads):
        finished = _RUNNERS[key].run(spec, progress=False)
    if finished.checkpoint is not None:
        finished.checkpoint.to("cpu")  # the driver may have no GPU
    return finished


def check_address(address: str | None) -> None:
    """Fail at once, before any work, where a HOST:PORT has no Ray head listening (ray.init would retry for
    minutes); ``auto`` and other forms are left to Ray."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise HfpruneError(f"--ray-address {address}: no Ray cluster answers there ({reason(error)}); start one "
                           "with `ray start --head --port PORT`, or give --workers N alone for a local "
                           "instance") from None


class RayExecutor:
    """Trials fanned out as Ray tasks; ``workers`` caps how many run at once (None: as many as fit)."""

    def __init__(self, execution: ExecutionSection, workers: int | None = None, address: str | None = None):
        self.execution, self.workers, self.address = execution, workers, address
        self.started = False

    def __enter__(self) -> "RayExecutor":
        if ray.is_initialized():  # e.g. a test or a notebook connected already
            return self
        address = self.address or os.environ.get("RAY_ADDRESS")  # set for a `ray job submit` entrypoint
        try:
            if address:
                ray.init(address=address, logging_level="warning")
            else:
                ray.init(num_cpus=math.ceil(self.workers * self.execution.cpus_per_trial), include_dashboard=False,
                         logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise HfpruneError(f"cannot {where} ({reason(error)}); start a cluster with `ray start --head` and give "
                               "--ray-address, or give --workers N alone for a local instance") from None
        self.started = True
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            ray.shutdown()
            self.started = False

    def _remote(self):
        execution = self.execution
        gpus = execution.gpus_per_trial if ray.cluster_resources().get("GPU", 0) > 0 else 0
        return ray.remote(num_cpus=execution.cpus_per_trial, num_gpus=gpus,
                          max_retries=execution.max_retries)(_run_on_worker)

    def run(self, runner: TrialRunner, specs: list[TrialSpec]) -> Iterator[FinishedTrial]:
        if not specs:
            return
        execution = self.execution
        threads = execution.threads_per_trial
        remote, runner_ref = self._remote(), ray.put(runner)
        queue, pending = iter(specs), {}
        limit = self.workers or len(specs)

        def submit() -> None:
            spec = next(queue, None)
            if spec is not None:  # the task's name is its worker's process title: ray::<trial id>
                pending[remote.options(name=spec.trial_id).remote([runner_ref], spec, threads)] = spec

        for _ in range(limit):
            submit()
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(ref)
                finished = _result(ref, spec, execution.max_retries)
                submit()
                yield finished
        finally:
            for ref in pending:  # an error or an interrupt: stop what is still running
                ray.cancel(ref, force=True)


def _result(ref, spec: TrialSpec, retries: int) -> FinishedTrial:
    """The task's value; its own error as raised on the worker; one line if its workers kept dying."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        raise error.cause from error
    except ray.exceptions.RayError as error:
        raise HfpruneError(f"trial {spec.trial_id}: its Ray worker died {retries + 1} time(s) "
                           f"({reason(error, 200)}); finished trials are saved, rerun the same command to "
                           "resume (execution.max_retries sets how often a trial is retried)") from None
