"""Where the rows of tasks are computed: in this process, or on the workers of a Ray cluster.

An executor maps a function over chunks of tasks and yields each chunk's result as soon as
it finishes, in any order. The evaluator builds the chunks and alone stores what comes back
(one transaction per task), so an executor never touches the run directory, and a run
started with one executor resumes with another.

    evaluate(tasks, methods, features, run_dir="runs/a", executor=RayExecutor(chunk_size=8))

Ray is optional: ``pip install 'tcs-fewshot[ray]'``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from tcs_fewshot.errors import TcsFewshotError

Chunk = TypeVar("Chunk", bound=Sequence)
Result = TypeVar("Result")

RAY_MISSING = "the ray executor needs Ray: pip install 'tcs-fewshot[ray]'"


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn`` on chunks of tasks.

    Attributes:
        name: Short name recorded in the run manifest (``local``, ``ray``).
        chunk_size: Tasks per chunk, i.e. per unit of work sent to a worker.
    """

    name: str
    chunk_size: int

    def map_chunks(self, fn: Callable[[Chunk], Result], chunks: Iterable[Chunk]) -> Iterator[Result]:
        """``fn(chunk)`` of every chunk, yielded as each finishes (any order, each exactly once)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What to record about this executor in the run manifest (not part of the run's identity)."""
        ...


class LocalExecutor:
    """Computes chunks one after another in this process (nothing is pickled)."""

    name = "local"

    def __init__(self, chunk_size: int = 1) -> None:
        """``chunk_size`` 1 (the default) stores every task as soon as it is computed."""
        self.chunk_size = _check_chunk_size(chunk_size)

    def map_chunks(self, fn: Callable[[Chunk], Result], chunks: Iterable[Chunk]) -> Iterator[Result]:
        for chunk in chunks:
            yield fn(chunk)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "chunk_size": self.chunk_size}


class RayExecutor:
    """Sends chunks to Ray as remote tasks and yields their results as they finish.

    ``fn`` (the methods and their inputs) goes to the object store once and is unpickled once
    per worker process. A worker that dies mid-chunk (killed, out of memory, ``os._exit``) has
    its chunk rerun by Ray up to ``max_retries`` times; no partial chunk ever reaches the
    evaluator, so nothing is stored twice and nothing is missed.
    """

    name = "ray"

    def __init__(self, address: str | None = None, chunk_size: int = 8, max_retries: int = 3,
                 max_in_flight: int | None = None, num_cpus: int | None = None) -> None:
        """Check that Ray is installed; connect (or start a local Ray) on first use.

        Args:
            address: A running cluster (``auto``, ``host:port``, ``ray://host:port``); None
                joins the one this process already initialised, or starts a local Ray.
            chunk_size: Tasks per remote task; bigger amortises Ray's per-task cost (about a
                millisecond), smaller loses less work to a dead worker.
            max_retries: Reruns of a chunk whose worker died before Ray gives up.
            max_in_flight: Chunks submitted at once (default twice the cluster's CPUs), which
                bounds the driver's memory and the work lost when the driver itself is killed.
            num_cpus: CPUs of a local Ray started here (default all).
        """
        try:
            import ray  # noqa: F401  # only: is it installed?
        except ImportError:
            raise TcsFewshotError(RAY_MISSING) from None
        if max_retries < 0:
            raise TcsFewshotError(f"max_retries must be at least 0, got {max_retries}")
        self.address, self.max_retries, self.num_cpus = address, max_retries, num_cpus
        self.chunk_size = _check_chunk_size(chunk_size)
        self.max_in_flight = max_in_flight

    def _ray(self) -> Any:
        import ray

        if ray.is_initialized():
            return ray
        if self.address not in (None, "auto", "local"):
            _check_reachable(self.address)
        try:
            ray.init(address=self.address, num_cpus=self.num_cpus if self.address is None else None,
                     include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
            where = f"at '{self.address}'" if self.address else "locally"
            raise TcsFewshotError(f"cannot start or reach Ray {where} ({_first_line(error)}); "
                                  "start a cluster with 'ray start --head' or use --executor local") from None
        return ray

    def describe(self) -> dict[str, Any]:
        ray = self._ray()
        return {"name": self.name, "chunk_size": self.chunk_size, "max_retries": self.max_retries,
                "address": self.address, "ray_version": ray.__version__,
                "cluster_cpus": ray.cluster_resources().get("CPU")}

    def map_chunks(self, fn: Callable[[Chunk], Result], chunks: Iterable[Chunk]) -> Iterator[Result]:
        ray = self._ray()
        try:
            function = [ray.put(fn)]  # in a list, so Ray hands workers the reference, not a copy per chunk
        except Exception as error:  # noqa: BLE001  # cloudpickle raises many types for unpicklable objects
            raise TcsFewshotError(f"the methods or inputs cannot be sent to Ray workers ({_first_line(error)}); "
                                  "make them picklable or use --executor local") from None
        remote = ray.remote(_run_chunk).options(max_retries=self.max_retries, num_cpus=1)
        limit = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending: dict[Any, int] = {}
        chunks = iter(chunks)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    chunk = next(chunks, None)
                    if chunk is None:
                        exhausted = True
                    else:
                        pending[remote.remote(function, chunk)] = len(chunk)
                if not pending:
                    return
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                size = pending.pop(ready)
                yield self._result(ray, ready, size)
        finally:
            for ref in pending:  # stopped early (fail-fast, an error): drop the work still queued
                ray.cancel(ref)

    def _result(self, ray: Any, ref: Any, size: int) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, TcsFewshotError):
                raise error.cause from None
            raise
        except ray.exceptions.RayError as error:
            raise TcsFewshotError(
                f"a chunk of {size} tasks was lost on Ray after {self.max_retries} retries "
                f"({type(error).__name__}: {_first_line(error)}); the finished tasks are stored: run again to resume"
            ) from None


_WORKER_FUNCTIONS: dict[str, Callable] = {}


def _run_chunk(function: list, chunk: Sequence) -> Any:
    """On a Ray worker: fetch ``fn`` once per worker process, then apply it to ``chunk``."""
    import ray

    key = function[0].hex()
    if key not in _WORKER_FUNCTIONS:
        _WORKER_FUNCTIONS.clear()  # one run's methods at a time per worker
        _WORKER_FUNCTIONS[key] = ray.get(function[0])
    return _WORKER_FUNCTIONS[key](chunk)


def make_executor(name: str = "local", address: str | None = None, chunk_size: int | None = None) -> Executor:
    """The executor the command line names: ``local`` or ``ray`` (optionally at ``address``)."""
    if name == "local":
        if address is not None:
            raise TcsFewshotError("--address needs --executor ray")
        return LocalExecutor(chunk_size or 1)
    if name == "ray":
        return RayExecutor(address=address, chunk_size=chunk_size or 8)
    raise TcsFewshotError(f"unknown executor '{name}'; choose local or ray")


def _check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise TcsFewshotError(f"the chunk size must be a whole number of tasks, at least 1; got {chunk_size!r}")
    return chunk_size


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a cluster address nobody listens at (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (ValueError, OverflowError):
        raise TcsFewshotError(f"Ray address '{address}' is not host:port, ray://host:port or auto") from None
    except OSError as error:
        raise TcsFewshotError(f"no Ray cluster answers at '{address}' ({error.strerror or error}); "
                              "start one with 'ray start --head' or check --address") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]
