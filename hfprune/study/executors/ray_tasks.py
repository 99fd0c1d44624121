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
from typing import Iterable, Iterator

import ray

from hfprune.errors import HfpruneError, reason
from hfprune.study.executors.base import FinishedTrial, TrialRunner, torch_threads
from hfprune.study.executors.packing import packs, run_group
from hfprune.study.recipe import ExecutionSection
from hfprune.study.spec import TrialSpec

_RUNNERS: dict[str, TrialRunner] = {}  # in a worker process: the trial runner of the study it serves, by object id


def _runner(runner_ref: list) -> TrialRunner:
    key = runner_ref[0].hex()
    if key not in _RUNNERS:
        _RUNNERS.clear()
        _RUNNERS[key] = ray.get(runner_ref[0])
    return _RUNNERS[key]


def _run_on_worker(runner_ref: list, specs: list[TrialSpec], threads: int) -> list[FinishedTrial]:
    """The Ray task: one trial, or one pack of trials, on the device Ray assigned (``runner_ref`` is a one-element
    list so that Ray hands over the reference, not a fresh copy of the runner per task)."""
    runner = _runner(runner_ref)
    with torch_threads(threads):
        finished = run_group(runner, specs, progress=False)
    for trial in finished:
        if trial.checkpoint is not None:
            trial.checkpoint.to("cpu")  # the driver may have no GPU
    return finished


def _calibrate_on_worker(runner_ref: list, spec: TrialSpec, threads: int) -> int:
    """The Ray task of ``execution.pack: auto``: the pack size a worker's device trains fastest."""
    with torch_threads(threads):
        return _runner(runner_ref).calibrate(spec)


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

    def __init__(self, execution: ExecutionSection, workers: int | None = None, address: str | None = None,
                 pack: int | str | None = None):
        self.execution, self.workers, self.address = execution, workers, address
        self.pack = execution.pack if pack is None else pack
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

    def _remote(self, function):
        execution = self.execution
        gpus = execution.gpus_per_trial if ray.cluster_resources().get("GPU", 0) > 0 else 0
        return ray.remote(num_cpus=execution.cpus_per_trial, num_gpus=gpus,
                          max_retries=execution.max_retries)(function)

    def run(self, runner: TrialRunner, specs: Iterable[TrialSpec]) -> Iterator[FinishedTrial]:
        """Each trial, or each pack of trials (``execution.pack``), as one task; up to ``workers`` at once."""
        execution = self.execution
        threads = execution.threads_per_trial
        remote, runner_ref = None, None
        pending: dict = {}

        def calibrate(spec: TrialSpec) -> int:
            calibration = self._remote(_calibrate_on_worker).options(name=f"calibrate {spec.trial_id}")
            return ray.get(calibration.remote([reference()], spec, threads))

        def reference():
            nonlocal runner_ref, remote
            if runner_ref is None:
                remote, runner_ref = self._remote(_run_on_worker), ray.put(runner)
            return runner_ref

        queue = packs(runner, specs, self.pack, calibrate)
        limit = self.workers or float("inf")

        def submit() -> bool:
            group = next(queue, None)
            if group is None:
                return False
            name = group[0].trial_id + (f" +{len(group) - 1}" if len(group) > 1 else "")  # the worker's title
            ref = reference()
            pending[remote.options(name=name).remote([ref], group, threads)] = group
            return True

        try:
            while len(pending) < limit and submit():
                pass
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(ref)
                finished = _result(ref, group[0], execution.max_retries)
                submit()
                yield from finished
        finally:
            for ref in pending:  # an error or an interrupt: stop what is still running
                ray.cancel(ref, force=True)


def _result(ref, spec: TrialSpec, retries: int) -> list[FinishedTrial]:
    """The task's value; its own error as raised on the worker; one line if its workers kept dying."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        raise error.cause from error
    except ray.exceptions.RayError as error:
        raise HfpruneError(f"trial {spec.trial_id}: its Ray worker died {retries + 1} time(s) "
                           f"({reason(error, 200)}); finished trials are saved, rerun the same command to "
                           "resume (execution.max_retries sets how often a trial is retried)") from None
