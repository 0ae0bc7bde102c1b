"""End-of-text pooling as a one-hot MatMul: the same numbers as indexing, in ops NNAPI runs.

Indexing `x[b, argmax(ids[b])]` exports as Tile + GatherElements (or GatherND), which NNAPI lacks, so
the text graph split into several partitions; this form leaves only the ArgMax on the CPU.
"""
from __future__ import annotations

import torch


def select_eot(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Features [B, D] of each row's end-of-text token (the argmax of its ids) out of x [B, L, D].

    The position becomes a one-hot row through Sub/Abs/Relu (NNAPI has no Equal or OneHot) and a batched
    MatMul picks the features; every other term is an exact zero, so the result equals indexing bit for bit.
    """
    positions = torch.arange(ids.shape[-1], dtype=x.dtype, device=x.device)  # [L]
    eot = ids.argmax(dim=-1, keepdim=True).to(x.dtype)  # [B, 1]
    onehot = torch.relu(1.0 - (positions - eot).abs())  # [B, L]: 1 at the eot position, 0 elsewhere
    return (onehot.unsqueeze(1) @ x).squeeze(1)
