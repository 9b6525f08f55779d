"""A process pool in which every item runs under a wall-clock limit, and a worker stuck on one is replaced.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot stop one hung task. A worker stuck in a long
C call (a huge sympy integer, a regex) ignores everything but SIGKILL, and killing an executor's worker
breaks the whole executor. Here each worker has its own pipe, the parent knows which item each worker is
on, and a worker past its item's deadline is killed and replaced while the others carry on.

Workers are started with "spawn", not "fork": forking a trainer that already runs torch/OpenMP threads can
deadlock the child. A spawned worker's main thread can also use `signal.alarm`, which math-verify's own
(cheaper, finer) timeouts need.
"""

import logging
import math
import multiprocessing
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger(__name__)

# A worker that has not imported its task's modules by then is broken, not slow.
START_SECONDS = 120.0
# Chunks per worker in one map(): enough that the workers finish together (the last chunk runs alone),
# few enough that messages stay cheap. Chunks are contiguous, so a GRPO group's rows share a worker.
CHUNKS_PER_WORKER = 16

_READY, _RESULT, _FAILED = "ready", "result", "failed"


def _serve(connection: Connection, task: Callable[[Any], Any], initializer: Callable[[], None] | None) -> None:
    """Worker main loop. Each item is answered as soon as it is done, so the parent can time items one by one."""
    if initializer is not None:
        initializer()
    connection.send((_READY, -1, None))
    while True:
        try:
            request = connection.recv()
        except EOFError:  # the parent went away
            return
        if request is None:
            return
        for index, item in request:
            try:
                reply = (_RESULT, index, task(item))
            except Exception as error:  # sent as text: not every exception pickles
                reply = (_FAILED, index, f"{type(error).__name__}: {error}")
            connection.send(reply)


@dataclass(eq=False)  # workers are compared by identity
class _Worker:
    process: BaseProcess
    connection: Connection
    # Until the worker is ready: when it must be. Then: when its current item must be done (inf when idle).
    deadline: float
    ready: bool = False
    in_flight: deque[tuple[int, Any]] = field(default_factory=deque)


def _stop_workers(workers: list[_Worker]) -> None:
    """Ask idle workers to exit, then kill whatever is left (a busy worker would finish its chunk first)."""
    for worker in workers:
        try:
            worker.connection.send(None)
        except OSError:
            pass
    for worker in workers:
        worker.process.join(timeout=1)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.connection.close()


class TimedWorkerPool:
    """Apply one picklable `task` to many items in `workers` processes, each item within `item_seconds`.

    An item whose worker runs past its deadline, or dies on it, gets `timeout_result`; the worker is killed
    and replaced, and the items queued behind it go to the other workers. An item whose task raises makes
    `map` raise RuntimeError once every other item is done. Workers are started at construction and kept
    until `close()` or garbage collection, so imports and per-process caches survive between calls.
    Not thread-safe: callers serialise `map`.
    """

    def __init__(
        self,
        task: Callable[[Any], Any],
        workers: int,
        item_seconds: float,
        timeout_result: Any,
        initializer: Callable[[], None] | None = None,
        name: str = "worker pool",
    ) -> None:
        self.name = name
        self.item_seconds = item_seconds
        self.timeout_result = timeout_result
        self.replaced_workers = 0
        self._task = task
        self._initializer = initializer
        self._context = multiprocessing.get_context("spawn")
        self._workers = [self._start_worker() for _ in range(workers)]
        # Replacements happen in place in this list, so the finalizer always stops the current workers.
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)

    def map(self, items: Sequence[Any]) -> list[Any]:
        """Results in the order of `items`."""
        results: list[Any] = [None] * len(items)
        failures: list[str] = []
        indexed = list(enumerate(items))
        chunk_size = max(1, math.ceil(len(indexed) / (CHUNKS_PER_WORKER * len(self._workers))))
        queue = deque(indexed[start : start + chunk_size] for start in range(0, len(indexed), chunk_size))
        unanswered = len(indexed)
        try:
            while unanswered:
                self._dispatch(queue)
                for worker in self._readable_workers():
                    unanswered -= self._receive(worker, results, failures, queue)
                unanswered -= self._expire(results, queue)
        finally:
            # Only an interrupted map leaves work in flight; those workers' late replies must not reach the next map.
            for worker in [worker for worker in self._workers if worker.in_flight]:
                self._replace(worker)
        if failures:
            raise RuntimeError(f"{self.name}: {len(failures)} of {len(items)} items raised; first: {failures[0]}")
        return results

    def close(self) -> None:
        """Stop the workers now rather than at garbage collection or interpreter exit."""
        self._finalizer()

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child_end, self._task, self._initializer), name=self.name, daemon=True
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end, deadline=time.monotonic() + START_SECONDS)

    def _replace(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join()
        worker.connection.close()
        self._workers[self._workers.index(worker)] = self._start_worker()
        self.replaced_workers += 1

    def _dispatch(self, queue: deque[list[tuple[int, Any]]]) -> None:
        for worker in list(self._workers):
            if not (queue and worker.ready and not worker.in_flight):
                continue
            chunk = queue.popleft()
            try:
                worker.connection.send(chunk)
            except OSError:  # it died while idle: nothing of this chunk has run
                queue.appendleft(chunk)
                self._replace(worker)
                continue
            worker.in_flight.extend(chunk)
            worker.deadline = time.monotonic() + self.item_seconds

    def _readable_workers(self) -> list[_Worker]:
        watched = [worker for worker in self._workers if worker.in_flight or not worker.ready]
        timeout = max(0.0, min(worker.deadline for worker in watched) - time.monotonic())
        readable = set(wait([worker.connection for worker in watched], timeout))
        return [worker for worker in watched if worker.connection in readable]

    def _receive(
        self, worker: _Worker, results: list[Any], failures: list[str], queue: deque[list[tuple[int, Any]]]
    ) -> int:
        """Read one message from a worker; return how many items it answered (0 or 1)."""
        try:
            kind, index, value = worker.connection.recv()
        except (EOFError, OSError):  # the worker died: a crash, or the OOM killer
            worker.process.join(timeout=1)  # so that its exit code is known
            if not worker.ready:
                raise RuntimeError(
                    f"{self.name}: a worker exited while starting (exit code {worker.process.exitcode})"
                ) from None
            return self._give_up(worker, results, queue, f"killed its worker (exit code {worker.process.exitcode})")
        if kind == _READY:
            worker.ready = True
            worker.deadline = math.inf
            return 0
        worker.in_flight.popleft()
        if kind == _RESULT:
            results[index] = value
        else:
            failures.append(value)
        worker.deadline = time.monotonic() + self.item_seconds if worker.in_flight else math.inf
        return 1

    def _expire(self, results: list[Any], queue: deque[list[tuple[int, Any]]]) -> int:
        """Give up on every item past its deadline; return how many that answered."""
        answered = 0
        for worker in [worker for worker in self._workers if time.monotonic() >= worker.deadline]:
            if not worker.ready:
                raise RuntimeError(f"{self.name}: a worker did not start within {START_SECONDS:g} s")
            answered += self._give_up(worker, results, queue, f"ran past its {self.item_seconds:g} s limit")
        return answered

    def _give_up(self, worker: _Worker, results: list[Any], queue: deque[list[tuple[int, Any]]], why: str) -> int:
        """Score the worker's current item `timeout_result`, requeue the rest of its chunk, replace it."""
        if not worker.in_flight:  # it died while idle
            self._replace(worker)
            return 0
        index, _ = worker.in_flight.popleft()
        results[index] = self.timeout_result
        logger.warning(
            "%s: item %d %s; the worker was replaced and the item scores %r", self.name, index, why, self.timeout_result
        )
        if worker.in_flight:
            queue.appendleft(list(worker.in_flight))
            worker.in_flight.clear()
        self._replace(worker)
        return 1
