"""HiCo compression as pure tensor functions.

Clip-level: repeated ToMe bipartite soft matching merges each clip's tokens down to a target count (64 per
4-frame clip, 16 per frame on average), as the official `tome16_mlp_hd64` projector does before its MLP.
"""

from __future__ import annotations

import torch

TOKENS_PER_CLIP = 64
METRIC_HEADS = 16  # the matching metric averages the features over 16 "heads" (64 dims for a 1024-wide tower)


def merge_schedule(num_tokens: int, target: int) -> list[int]:
    """Tokens removed per round: halve while the remainder does not fit, then remove exactly the rest.

    784 -> 64 gives [392, 196, 98, 34]; 3136 -> 64 gives [1568, 784, 392, 196, 98, 34].
    """
    if not 0 < target < num_tokens:
        raise ValueError(f"cannot merge {num_tokens} tokens down to {target}: the target must be in [1, {num_tokens})")
    schedule, remaining = [], num_tokens
    while remaining != target:
        if remaining - target <= remaining // 2:
            schedule.append(remaining - target)
            break
        schedule.append(remaining // 2)
        remaining -= remaining // 2
    return schedule


def bipartite_merge(tokens: torch.Tensor, sizes: torch.Tensor, remove: int,
                    heads: int = METRIC_HEADS) -> tuple[torch.Tensor, torch.Tensor]:
    """One ToMe round on (batch, p, C) tokens with their (batch, p, 1) sizes; returns p - remove tokens.

    Even-position tokens (set A) are matched to their most similar odd-position token (set B) by cosine
    similarity of the head-averaged features; the `remove` A tokens with the best matches are folded into
    their B match by size-weighted average. Output order: unmerged A tokens by descending best score, then
    all B tokens in their original order. Ties keep the earlier token first (stable sort).
    """
    batch, count, width = tokens.shape
    remove = min(remove, count // 2)
    if remove <= 0:
        raise ValueError(f"a merge round needs at least 2 tokens and remove > 0 (got {count} tokens, remove={remove})")
    with torch.no_grad():
        metric = tokens.reshape(batch, count, heads, width // heads).mean(dim=2)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # (batch, |A|, |B|)
        best, best_match = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True, stable=True)[..., None]  # (batch, |A|, 1)
        kept, merged = order[:, remove:], order[:, :remove]
        targets = best_match[..., None].gather(1, merged)
    weighted = tokens * sizes
    new_tokens = _fold(weighted, kept, merged, targets)
    new_sizes = _fold(sizes, kept, merged, targets)
    return new_tokens / new_sizes, new_sizes


def _fold(values: torch.Tensor, kept: torch.Tensor, merged: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    a, b = values[:, ::2], values[:, 1::2]
    width = values.shape[-1]
    unmerged = a.gather(1, kept.expand(-1, -1, width))
    moving = a.gather(1, merged.expand(-1, -1, width))
    b = b.scatter_reduce(1, targets.expand(-1, -1, width), moving, reduce="sum")
    return torch.cat([unmerged, b], dim=1)


def merge_clip_tokens(tokens: torch.Tensor, target: int = TOKENS_PER_CLIP,
                      heads: int = METRIC_HEADS) -> torch.Tensor:
    """(clips, p, C) tower features -> (clips, target, C) merged tokens, every clip independently."""
    sizes = torch.ones_like(tokens[..., :1])
    for remove in merge_schedule(tokens.shape[1], target):
        tokens, sizes = bipartite_merge(tokens, sizes, remove, heads)
    return tokens
