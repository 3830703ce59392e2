"""Data parallelism for the trainers over torch.distributed (gloo on CPU, nccl on GPUs).

    from editr1.training.parallel import launch
    result = launch(train_fn, workers=2, args=(cfg,))   # train_fn(*args) runs in every rank; rank 0's result

Rank 0 runs in the calling process, ranks 1… in spawned processes; they meet through a file
rendezvous next to the run. Each rank takes its share of every batch; `all_reduce_sum` adds the
gradients (and the loss) so every rank applies the same update, and `broadcast` keeps decisions
that depend on the clock (time budgets, the learning rate of a time-based schedule) identical.
With one process every helper is a no-op, so single-process code paths need no branches.

A rank that dies breaks the collectives of the others (gloo closes the connection), so a crash or a
kill stops the whole group; the trainers' checkpoints make the re-run resume. A rank that dies
before it joins (a spawned interpreter that cannot start, e.g. a script without an
``if __name__ == "__main__":`` guard) is an error at once, not a wait at the rendezvous.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import tempfile
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# Rank 0 evaluates and checkpoints while the others wait in the next collective.
TIMEOUT = timedelta(hours=4)
READY = "ready"


def _wait_ready(children: list, messages: Any) -> None:
    """Block until every spawned rank has started (it says so), or raise if one died first."""
    ready = 0
    while ready < len(children):
        try:
            message = messages.get(timeout=0.2)
        except queue.Empty:
            dead = [c.exitcode for c in children if c.exitcode is not None]
            if dead:
                raise RuntimeError(f"a data-parallel rank exited before it started (exit code {dead[0]}); "
                                   "a script that trains with workers > 1 needs an if __name__ == '__main__': guard")
            continue
        if message == READY:
            ready += 1
        else:
            raise RuntimeError(f"a data-parallel rank failed: {message.strip().splitlines()[-1]}")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def shard(items: Sequence[Any]) -> list[Any]:
    """This rank's share of a batch: every world_size-th item from position rank."""
    return list(items[rank()::world_size()])


def all_reduce_sum(tensors: Iterable[torch.Tensor]) -> None:
    """Sum the tensors over all ranks, in place (one flat collective)."""
    tensors = [t for t in tensors if t is not None]
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], extra: Sequence[torch.Tensor] = ()) -> None:
    """Sum the gradients of ``params`` (and the ``extra`` tensors) over all ranks, in place. A parameter
    this rank's batch did not reach gets a zero gradient first, so it still takes part in the sum."""
    if world_size() == 1:
        return
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_sum([p.grad for p in params] + list(extra))


def broadcast(values: Sequence[float]) -> list[float]:
    """Rank 0's values, on every rank."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)
    dist.broadcast(tensor, 0)
    return tensor.tolist()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's picklable object, on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's module (an identical start)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, 0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _init(rendezvous: str, rank_: int, workers: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank_, world_size=workers,
                            timeout=TIMEOUT)


def _child(rendezvous: str, rank_: int, workers: int, fn: Callable[..., Any], args: tuple, errors: Any) -> None:
    try:
        errors.put(READY)
        _init(rendezvous, rank_, workers)
        fn(*args)
    except BaseException:  # reported to rank 0, which raises
        errors.put(f"rank {rank_}: {traceback.format_exc()}")
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(fn: Callable[..., Any], workers: int, args: tuple = (), workdir: Path | None = None) -> Any:
    """Run ``fn(*args)`` in ``workers`` ranks (this process is rank 0) and return rank 0's result.

    With workers == 1 (or inside an existing group) it is a plain call. ``fn`` and ``args`` must be
    picklable (the other ranks are spawned, not forked: torch's threads do not survive a fork).
    """
    if workers <= 1 or dist.is_initialized():
        return fn(*args)
    workdir = Path(workdir or tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    fd, rendezvous = tempfile.mkstemp(prefix=".rendezvous-", dir=workdir)
    os.close(fd)
    os.unlink(rendezvous)  # the file store creates it; a stale file from a killed run would hang
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    children = [ctx.Process(target=_child, args=(rendezvous, r, workers, fn, args, errors), daemon=True)
                for r in range(1, workers)]
    for child in children:
        child.start()
    try:
        _wait_ready(children, errors)
        _init(rendezvous, 0, workers)
        try:
            result = fn(*args)
        except BaseException as exc:
            for child in children:
                child.join(timeout=5)
                if child.is_alive():
                    child.kill()
            detail = errors.get() if not errors.empty() else ""
            if detail:
                raise RuntimeError(f"a data-parallel rank failed: {detail.strip().splitlines()[-1]}") from exc
            raise
        for child in children:
            child.join()
        failed = [c.exitcode for c in children if c.exitcode]
        if failed:
            detail = errors.get() if not errors.empty() else f"exit codes {failed}"
            raise RuntimeError(f"a data-parallel rank failed: {detail.strip().splitlines()[-1]}")
        return result
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for child in children:
            if child.is_alive():
                child.kill()
        Path(rendezvous).unlink(missing_ok=True)
