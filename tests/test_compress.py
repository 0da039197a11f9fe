"""Clip-level token merging: schedule, a hand-worked example, bookkeeping invariants, batching, determinism."""

from __future__ import annotations

import pytest
import torch

from hico.compress import (bipartite_merge, merge_clip_tokens, merge_schedule, pool_clip_tokens, queries_after_drop,
                            uniform_keep)


@pytest.mark.parametrize("count, target, expected", [
    (784, 64, [392, 196, 98, 34]),  # UMT 224 clip
    (3136, 64, [1568, 784, 392, 196, 98, 34]),  # UMT 448 clip
    (1024, 64, [512, 256, 128, 64]),  # InternVideo2 clip
    (196, 64, [98, 34]),  # UMT 224 image
    (784, 64 * 1, [392, 196, 98, 34]),
    (10, 9, [1]),
])
def test_schedule_matches_official_r_lists(count: int, target: int, expected: list[int]) -> None:
    assert merge_schedule(count, target) == expected
    assert count - sum(expected) == target


def test_schedule_refuses_impossible_targets() -> None:
    with pytest.raises(ValueError, match="target"):
        merge_schedule(64, 65)
    assert merge_schedule(64, 64) == []  # already small enough: nothing to merge


def _tokens(*rows: tuple[float, float]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64)


def test_two_rounds_by_hand() -> None:
    # A (even) = t0 [3,0], t2 [0,1], t4 [1,1]; B (odd) = t1 [1,0], t3 [0,2], t5 [-1,0]; metric = direction.
    tokens = _tokens((3, 0), (1, 0), (0, 1), (0, 2), (1, 1), (-1, 0))
    sizes = torch.ones(1, 6, 1, dtype=torch.float64)
    # best scores: t0->t1 1.0, t2->t3 1.0, t4->t1 0.707; the tie keeps t0 first, so t0 merges into t1.
    tokens, sizes = bipartite_merge(tokens, sizes, remove=1, heads=1)
    assert torch.allclose(tokens, _tokens((0, 1), (1, 1), (2, 0), (0, 2), (-1, 0)))  # [t2, t4 | t1', t3, t5]
    assert sizes.flatten().tolist() == [1, 1, 2, 1, 1]
    # A = [0,1], [2,0] (size 2), [-1,0]; B = [1,1], [0,2]. Best: 1.0 (A0->B1), 0.707 (A1->B0), 0 (A2->B1).
    tokens, sizes = bipartite_merge(tokens, sizes, remove=2, heads=1)
    expected = _tokens((-1, 0), (5 / 3, 1 / 3), (0, 1.5))  # B0 = (2*[2,0] + [1,1]) / 3, B1 = ([0,1] + [0,2]) / 2
    assert torch.allclose(tokens, expected)
    assert sizes.flatten().tolist() == [1, 3, 2]


def test_sizes_account_for_every_token_and_mean_is_preserved() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(2, 784, 64, dtype=torch.float64)
    sizes = torch.ones(2, 784, 1, dtype=torch.float64)
    total = tokens.sum(dim=1)
    for remove in merge_schedule(784, 64):
        tokens, sizes = bipartite_merge(tokens, sizes, remove, heads=16)
    assert tokens.shape == (2, 64, 64)
    assert sizes.sum(dim=1).flatten().tolist() == [784, 784]
    assert torch.allclose((tokens * sizes).sum(dim=1), total)  # a size-weighted average loses no mass


def test_batched_equals_one_clip_at_a_time() -> None:
    torch.manual_seed(1)
    clips = torch.randn(5, 784, 128)
    one_by_one = torch.cat([merge_clip_tokens(clip[None]) for clip in clips])
    assert torch.equal(merge_clip_tokens(clips), one_by_one)


def test_constant_clip_stays_constant() -> None:
    clip = torch.full((1, 784, 32), 0.25)
    assert torch.allclose(merge_clip_tokens(clip), torch.full((1, 64, 32), 0.25))


def test_ties_are_broken_the_same_way_every_time() -> None:
    # four identical frames (a padded clip): every score ties
    frame = torch.randn(196, 64)
    clip = frame.repeat(4, 1)[None]
    first = merge_clip_tokens(clip)
    for _ in range(3):
        assert torch.equal(merge_clip_tokens(clip), first)


def test_pooling_averages_each_frames_2x2_cells_in_t_h_w_order() -> None:
    # 4 frames of an 8x8 grid, each token's single feature = its own (t, h, w) index, pooled 2x2 to 4x4 per frame
    t, h, w = torch.meshgrid(torch.arange(4.0), torch.arange(8.0), torch.arange(8.0), indexing="ij")
    tokens = torch.stack([t, h, w], dim=-1).reshape(1, 256, 3)
    pooled = pool_clip_tokens(tokens, frames=4)
    assert pooled.shape == (1, 64, 3)
    # token 5 = frame 0, cell (1, 1): rows 2-3, columns 2-3 -> mean row 2.5, mean column 2.5
    assert pooled[0, 5].tolist() == [0.0, 2.5, 2.5]
    # the last token = frame 3, cell (3, 3): rows 6-7, columns 6-7
    assert pooled[0, 63].tolist() == [3.0, 6.5, 6.5]
    assert torch.allclose(pooled.mean(dim=1), tokens.mean(dim=1))


def test_pooling_refuses_grids_that_do_not_split() -> None:
    with pytest.raises(ValueError, match="split evenly"):
        pool_clip_tokens(torch.zeros(1, 4 * 36, 8), frames=4)  # 6x6 grid cannot pool to 4x4


def _official_long_linspace(count: int, keep: int) -> list[int]:
    """torch's integer linspace written out: a float64 step, the second half counted back from the end,
    each value truncated (what the official `linspace(0, n - 1, keep, dtype=torch.long)` returns)."""
    if keep == 1:
        return [0]
    step, half = (count - 1) / (keep - 1), keep // 2
    return [int(step * i) if i < half else int((count - 1) - step * (keep - 1 - i)) for i in range(keep)]


@pytest.mark.parametrize("count", [7, 128, 2048, 8192, 16384, 65536, 131072, 199999, 200000])
def test_uniform_keep_is_the_official_integer_linspace_up_to_200k_tokens(count: int) -> None:
    for keep in {1, 2, count // 2, count // 4, count // 8, int(count * 0.3), count}:
        assert uniform_keep(count, keep).tolist() == _official_long_linspace(count, keep), (count, keep)


def test_float_linspace_differs_from_8192_tokens_up() -> None:
    """The float32 spelling agrees on short sequences and differs on long ones (1 index at 8,192 -> 4,096,
    4 at 16,384 -> 8,192): the difference this rule exists for."""
    for count, differing in ((2048, 0), (8192, 1), (16384, 4)):
        float_rule = torch.linspace(0, count - 1, count // 2).long()
        assert int((uniform_keep(count, count // 2) != float_rule).sum()) == differing


def test_training_queries_follow_the_shortened_labels() -> None:
    """The official queries of umt224-tiny-train (its notes.md): visual span at 14, 128 -> 64 -> 32 tokens."""
    stage0 = torch.tensor([1, 8, 12, 141, 171])  # 141: the last visual token, before a labelled newline
    stage1 = queries_after_drop(stage0, 14, 128, 64)
    assert stage1.tolist() == [1, 8, 12, 77, 107]
    assert queries_after_drop(stage1, 14, 64, 32).tolist() == [1, 8, 12, 45, 75]
    assert queries_after_drop(torch.tensor([8, 9]), 4, 5, 0).tolist() == [3, 4]  # none kept: the token before
