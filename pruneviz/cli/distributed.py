"""Data-parallel fine-tuning under torchrun: joining the process group, checking that the
processes agree, and tagging their error lines."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from pruneviz.errors import PrunevizError
from pruneviz.workflows.finetune import (
    FinetuneResult,
)


def start_distributed() -> tuple[int, int, bool]:
    """Join the torchrun process group if launched by torchrun with more than one process:
    (rank, world size, whether this call started the group)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        raise PrunevizError(f"WORLD_SIZE={text!r} is not a number of processes") from None
    if world <= 1:
        return 0, 1, False
    dist = torch.distributed
    if not dist.is_available():
        raise PrunevizError(f"launched as one of {world} processes, but this PyTorch build "
                            "has no torch.distributed")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    try:
        dist.init_process_group("gloo")
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunevizError(f"cannot join the process group (gloo, MASTER_ADDR="
                            f"{os.environ.get('MASTER_ADDR')}, MASTER_PORT="
                            f"{os.environ.get('MASTER_PORT')}): {first}") from None
    return dist.get_rank(), dist.get_world_size(), True


def rank_device(name: str, environ: Mapping[str, str], cuda_devices: int) -> str:
    """The --device of this torchrun process: `cuda` (or `auto` with GPUs) becomes the GPU
    of its local rank, `cuda:{LOCAL_RANK}` (modulo the GPUs there are), so that the
    processes do not share the first GPU; anything else, or a single process, is kept."""
    if environ.get("WORLD_SIZE", "1") in ("", "1") or cuda_devices < 1:
        return name
    if name not in ("cuda", "auto"):
        return name
    try:
        local = int(environ.get("LOCAL_RANK", "0"))
    except ValueError:
        local = 0
    return f"cuda:{local % cuda_devices}"


def check_ranks_agree(result: FinetuneResult) -> None:
    """Every process must end with the same weights and the same stopping decision."""
    dist = torch.distributed
    weights = [v.detach().double() for v in result.state.values() if v.is_floating_point()]
    mine = torch.tensor([float(result.steps), float(result.best_step),
                         float(sum(w.sum() for w in weights)),
                         float(sum(w.abs().sum() for w in weights))], dtype=torch.float64)
    low, high = mine.clone(), mine.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("the processes ended training with different weights or steps "
                           f"(steps {int(low[0])}..{int(high[0])}); they must stay in step")


def rank_tag() -> str:
    """' (rank N)' in the error lines of the processes other than torchrun's first."""
    rank = os.environ.get("RANK", "0")
    return f" (rank {rank})" if os.environ.get("WORLD_SIZE", "1") != "1" and rank != "0" else ""
