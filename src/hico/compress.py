"""HiCo compression as pure tensor functions.

Clip-level: repeated ToMe bipartite soft matching merges each clip's tokens down to a target count (64 per
4-frame clip, 16 per frame on average), as the official `tome16_mlp_hd64` projector does before its MLP.
Video-level: inside the LLM, visual tokens are dropped after chosen layers, evenly (uniform) or by the
attention the prompt pays them (text-guided); the model applies these functions between its layers.
"""

from __future__ import annotations

import torch

from hico.clips import TOKENS_PER_CLIP
from hico.dropout import DROP_KINDS, DROP_WORDS, DROPOUT_HELP, DropSchedule  # noqa: F401  (re-exported)

METRIC_HEADS = 16  # the matching metric averages the features over 16 "heads" (64 dims for a 1024-wide tower)


def merge_schedule(num_tokens: int, target: int) -> list[int]:
    """Tokens removed per round: halve while the remainder does not fit, then remove exactly the rest.

    784 -> 64 gives [392, 196, 98, 34]; 3136 -> 64 gives [1568, 784, 392, 196, 98, 34].
    """
    if not 0 < target <= num_tokens:
        raise ValueError(f"cannot merge {num_tokens} tokens down to {target}: the target must be in [1, {num_tokens}]")
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


def pool_clip_tokens(tokens: torch.Tensor, frames: int, target: int = TOKENS_PER_CLIP) -> torch.Tensor:
    """(clips, frames * g * g, C) tower features -> (clips, target, C) by average pooling each frame's g x g grid
    to s x s cells (frames * s * s = target), in (t, h, w) order: the plain-pooling baseline that clip-level
    merging is compared with (hico's `avgpool16_mlp` projector type, not an official one)."""
    clips, count, width = tokens.shape
    side = round((target / frames) ** 0.5)
    grid = round((count / frames) ** 0.5)
    if frames * side * side != target or frames * grid * grid != count or grid % side:
        raise ValueError(f"cannot average-pool {frames} frames of {count // max(frames, 1)} tokens to {target} "
                         f"tokens: each frame's grid ({grid}) must split evenly into a square of {target // frames}")
    cells = tokens.reshape(clips * frames, grid, grid, width).permute(0, 3, 1, 2)
    pooled = torch.nn.functional.avg_pool2d(cells, grid // side)
    return pooled.permute(0, 2, 3, 1).reshape(clips, target, width)


# Video-level compression: progressive dropout of visual tokens between LLM layers.

def uniform_keep(current: int, keep: int) -> torch.Tensor:
    """Indices of `keep` of `current` tokens, evenly spread, as the official `linspace(..., dtype=torch.long)`.

    An integer linspace steps in float64 and counts the second half back from the end; a float32 linspace
    cast to long (the obvious spelling) differs from it from about 8,192 tokens up, which changes the tokens
    the later text-guided stages keep on long videos.
    """
    return torch.linspace(0, current - 1, keep, dtype=torch.long)


def queries_after_drop(queries: torch.Tensor, start: int, current: int, keep: int) -> torch.Tensor:
    """Query positions in the sequence shortened from `current` to `keep` visual tokens at `start`.

    Training-mode queries are the tokens just before a labelled one; the official code finds them again in
    the shortened labels, which amounts to: queries before the visual span stay, queries after it move left
    by the dropped count, and the query on the last visual token (before a labelled newline) moves to the
    last kept visual token (the token before the span when none is kept).
    """
    end = start + current
    return torch.where(queries < start, queries,
                       torch.where(queries >= end, queries - (current - keep),
                                   torch.full_like(queries, start + keep - 1)))


def text_guided_scores(queries: torch.Tensor, keys: torch.Tensor, visual: slice) -> torch.Tensor:
    """How much the query tokens attend to each visual token.

    queries (heads, q, d) and keys (heads, L, d) are already rotated (RoPE) and scaled by 1/sqrt(d) is applied
    here; each query attends causally to the keys up to its own position, which for the queries given here
    (the last prompt token, or tokens before answers) covers the visual span. Softmax in float32 over all
    keys, averaged over heads and queries, restricted to `visual`. Memory is O(q * L): no L x L matrix.
    """
    scale = queries.shape[-1] ** -0.5
    logits = (queries.float() @ keys.float().transpose(-1, -2)) * scale  # (heads, q, L)
    return logits.softmax(dim=-1).mean(dim=(0, 1))[visual]


def attention_keep(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` best-scored visual tokens, in their original order."""
    return scores.topk(keep).indices.sort().values
