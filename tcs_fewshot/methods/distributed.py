"""Data-parallel distillation with torch.distributed on CPUs (gloo), as torchrun starts it.

    torchrun --nproc_per_node 2 -m tcs_fewshot.cli distill --benchmark emoji --out s.pt

Each process takes every ``world_size``-th row of each global batch; gradients are averaged
by DistributedDataParallel, and batch norm statistics are summed over all processes
(:class:`AllReduceBatchNorm`; torch's SyncBatchNorm runs only on CUDA), so a step equals the
single-process step on the same global batch up to float rounding.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_from_environment() -> tuple[int, int]:
    """``(rank, world_size)``; joins the process group torchrun describes (gloo), else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm (1d or 2d) whose training statistics cover the batch of every process (sums all-reduced)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected a 2D, 3D or 4D input (got {x.dim()}D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import (
            all_reduce,  # differentiable all-reduce
        )

        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        variance = stats[channels:2 * channels] / total - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
            unbiased = variance.detach() * total / (total - 1)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        normalised = (x - mean.view(shape)) / torch.sqrt(variance.view(shape) + self.eps)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised


_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d)


def all_reduce_batch_norm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm1d/2d of ``module`` (in place) for :class:`AllReduceBatchNorm`, same state."""
    for name, child in module.named_children():
        if type(child) in _PLAIN:
            replacement = AllReduceBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                             child.track_running_stats)
            replacement.plain_type = type(child)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            all_reduce_batch_norm(child)
    return module


def plain_batch_norm(module: nn.Module) -> nn.Module:
    """Undo :func:`all_reduce_batch_norm` (in place), so checkpoints load into ordinary students."""
    for name, child in module.named_children():
        if isinstance(child, AllReduceBatchNorm):
            plain = child.plain_type(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            plain_batch_norm(child)
    return module


def sum_over_processes(values: torch.Tensor, world_size: int) -> torch.Tensor:
    """``values`` summed over every process (itself when alone)."""
    if world_size > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, AllReduceBatchNorm)


def freeze_biases_before_batch_norm(module: nn.Module) -> list[str]:
    """Stop training every conv/linear bias that a batch norm directly follows; returns their names.

    Batch norm subtracts the batch mean, so such a bias has no effect and an exactly zero
    gradient; in floating point it gets rounding noise, which Adam scales into steps of the
    learning rate, different in one process and in several (different reduction orders).
    Frozen, these biases keep their initial values everywhere and the outputs are unchanged.
    """
    frozen = []
    for prefix, parent in module.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (name, layer), (_, following) in zip(children, children[1:]):
            if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)) and layer.bias is not None \
                    and isinstance(following, _BATCH_NORMS):
                layer.bias.requires_grad_(False)
                frozen.append(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return frozen
