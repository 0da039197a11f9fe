"""HicoModel on tiny random weights: against stock transformers, cache consistency, dropout semantics."""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb, eager_attention_forward

from hico.compress import DropSchedule
from hico.errors import NonFiniteError
from hico.model import IMAGE_TOKEN_INDEX
from hico.synthetic.checkpoints import random_model, tiny_official_config

VISUAL = 48  # visual tokens in the test prompts (3 clips)


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_official_config(layers=6), seed=3)


def _prompt(model, seed: int = 0, before: int = 5, after: int = 9):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (before + 1 + after,), generator=generator)
    ids[before] = IMAGE_TOKEN_INDEX
    visual = torch.randn(VISUAL, model.config.hidden_size, generator=generator)
    return model.embed(ids, visual)


@torch.no_grad()
def test_no_dropout_equals_stock_qwen2(model) -> None:
    embeds, span = _prompt(model)
    ours = model.prefill(embeds, span, all_logits=True).logits
    stock = model.llm(inputs_embeds=embeds).logits
    assert torch.allclose(ours, stock, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_incremental_decoding_matches_full_prefill(model) -> None:
    embeds, span = _prompt(model)
    new = torch.tensor([[11, 42, 7]])
    full = model.llm(inputs_embeds=torch.cat([embeds, model.llm.model.embed_tokens(new)], dim=1)).logits
    state = model.prefill(embeds, span)
    one = [model.decode(new[:, i:i + 1], state.cache)[0, -1] for i in range(3)]
    assert torch.allclose(torch.stack(one[:-1]), full[0, -3:-1], atol=1e-5)
    # several tokens at once after a cache (a continued conversation) use a bottom-right causal mask
    state = model.prefill(embeds, span)
    many = model.decode(new, state.cache)[0]
    assert torch.allclose(many, full[0, -3:], atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("kind, layers, ratios", [
    ("uniform", (2,), (1.0, 0.5)),
    ("uniform", (1, 4), (1.0, 0.75, 0.25)),
])
def test_uniform_drop_then_decode_equals_prefill_with_the_token(model, kind, layers, ratios) -> None:
    schedule = DropSchedule(kind, layers, ratios)
    embeds, span = _prompt(model)
    token = torch.tensor([[17]])
    extended = torch.cat([embeds, model.llm.model.embed_tokens(token)], dim=1)
    reference = model.prefill(extended, span, schedule).logits[0, -1]
    state = model.prefill(embeds, span, schedule)
    assert torch.allclose(model.decode(token, state.cache)[0, -1], reference, atol=1e-5)


@torch.no_grad()
def test_drop_keeps_int_n_ratio_tokens_and_shortens_later_caches(model) -> None:
    schedule = DropSchedule("uniform0_attention", (2, 4), (1.0, 0.75, 0.3))
    embeds, span = _prompt(model)
    state = model.prefill(embeds, span, schedule)
    length = embeds.shape[1]
    dropped_after_2 = VISUAL - int(VISUAL * 0.75)
    dropped_after_4 = VISUAL - int(VISUAL * 0.3)
    lengths = [state.cache.get_seq_length(i) for i in range(6)]
    assert lengths == [length] * 2 + [length - dropped_after_2] * 2 + [length - dropped_after_4] * 2
    assert len(state.kept) == int(VISUAL * 0.3)
    assert state.kept.tolist() == sorted(state.kept.tolist())


@torch.no_grad()
def test_first_uniform_stage_keeps_linspace_indices(model) -> None:
    embeds, span = _prompt(model)
    state = model.prefill(embeds, span, DropSchedule("uniform", (3,), (1.0, 0.25)))
    # int(48 * 0.25) = 12 indices of linspace(0, 47, 12): 0, 4.27, 8.55, ... truncated
    assert state.kept.tolist() == [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 47]


@torch.no_grad()
def test_text_guided_drop_matches_eager_attention_of_the_next_layer(model) -> None:
    """Reference: transformers' own RoPE and eager attention, with the full L x L causal matrix."""
    embeds, span = _prompt(model, seed=5)
    drop_after = 3
    keep = int(VISUAL * 0.5)
    state = model.prefill(embeds, span, DropSchedule("attention", (drop_after,), (1.0, 0.5)))
    hidden = model.llm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[drop_after]
    layer = model.llm.model.layers[drop_after]
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden)
    length, d = hidden.shape[1], attn.head_dim
    q = attn.q_proj(normed).view(1, length, -1, d).transpose(1, 2)
    k = attn.k_proj(normed).view(1, length, -1, d).transpose(1, 2)
    v = attn.v_proj(normed).view(1, length, -1, d).transpose(1, 2)
    positions = torch.arange(length)[None]
    cos, sin = model.llm.model.rotary_emb(hidden, positions)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
    _, weights = eager_attention_forward(attn, q, k, v, causal, scaling=d ** -0.5)
    scores = weights[0, :, -1].mean(0)[span.start:span.start + VISUAL]
    expected = scores.topk(keep).indices.sort().values
    assert state.kept.tolist() == expected.tolist()


@torch.no_grad()
def test_training_queries_score_with_each_query_seeing_only_its_past(model) -> None:
    """Training guides drops with several tokens (those before answers): average of their causal attention."""
    embeds, span = _prompt(model, seed=6)
    length = embeds.shape[1]
    rows = torch.tensor([length - 7, length - 3, length - 1])
    layer = model.llm.model.layers[2]
    hidden = model.llm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[2]  # input of layer 2
    positions = torch.arange(length)[None]
    ours = model.visual_scores(layer, hidden, positions, span.start, VISUAL, rows)
    last_only = model.visual_scores(layer, hidden, positions, span.start, VISUAL, None)
    singles = [model.visual_scores(layer, hidden[:, : r + 1], positions[:, : r + 1], span.start, VISUAL, None)
               for r in rows.tolist()]
    assert torch.allclose(ours, torch.stack(singles).mean(0), atol=1e-6)  # each row = that prefix's last token
    assert torch.allclose(last_only, singles[-1], atol=1e-6)
    state = model.prefill(embeds, span, DropSchedule("attention", (2,), (1.0, 0.5)), query_positions=rows)
    assert state.kept.tolist() == ours.topk(VISUAL // 2).indices.sort().values.tolist()


@torch.no_grad()
def test_dropout_changes_the_answer_only_through_visual_tokens(model) -> None:
    embeds, _ = _prompt(model)
    text_only = model.prefill(embeds, None, DropSchedule("uniform", (2,), (1.0, 0.5))).logits
    assert torch.allclose(text_only, model.prefill(embeds, None).logits)


def test_dropout_layer_must_exist(model) -> None:
    from hico.errors import OptionError

    embeds, span = _prompt(model)
    with pytest.raises(OptionError, match="deeper than 6 layers"):
        model.prefill(embeds, span, DropSchedule("uniform", (6,), (1.0, 0.5)))


@pytest.mark.parametrize("kwargs, words", [
    (dict(kind="random"), "unknown dropout type"),
    (dict(layers=(4, 2), ratios=(1.0, 0.5, 0.25)), "increasing"),
    (dict(layers=(2,), ratios=(1.0,)), "one ratio more than layers"),
    (dict(layers=(2,), ratios=(0.5, 0.25)), "start at 1.0"),
    (dict(layers=(2, 3), ratios=(1.0, 0.25, 0.5)), "not increase"),
])
def test_schedule_validation(kwargs, words) -> None:
    from hico.errors import OptionError

    with pytest.raises(OptionError, match=words):
        DropSchedule(**kwargs)


@torch.no_grad()
def test_encode_clips_shapes_and_order_follow_merge(model) -> None:
    from hico.compress import merge_clip_tokens

    clips = torch.randn(2, 4, 3, 64, 64)
    tokens = model.encode_clips(clips)
    assert tokens.shape == (2, 64, model.config.hidden_size)
    expected = model.projector(merge_clip_tokens(model.vision(clips), 64))
    assert torch.equal(tokens, expected)


@torch.no_grad()
def test_pooling_projector_type_pools_instead_of_merging() -> None:
    from hico.compress import pool_clip_tokens

    pooled = random_model(tiny_official_config() | {"mm_projector_type": "avgpool16_mlp"}, seed=3)
    clips = torch.randn(2, 4, 3, 64, 64)
    expected = pooled.projector(pool_clip_tokens(pooled.vision(clips), 4))
    assert torch.equal(pooled.encode_clips(clips), expected)
    image = torch.randn(1, 1, 3, 64, 64)  # a single image: its 8x8 grid is already 64 tokens
    assert torch.equal(pooled.encode_clips(image), pooled.projector(pooled.vision(image)))


@torch.no_grad()
def test_training_queries_before_the_visual_span_never_give_nan_scores(model, monkeypatch) -> None:
    """Queries in the system/user turns (before the video) stay where they are after a drop; a query shifted
    to a negative position would mask every key and turn the scores into NaN."""
    import hico.model

    embeds, span = _prompt(model, seed=7)
    length = embeds.shape[1]
    rows = torch.tensor([1, 3, span.start + VISUAL - 1, length - 4])
    seen = []

    def recording_keep(scores, keep):
        seen.append(scores.clone())
        return hico.compress.attention_keep(scores, keep)

    monkeypatch.setattr(hico.model, "attention_keep", recording_keep)
    model.prefill(embeds, span, DropSchedule("uniform0_attention", (1, 2, 4), (1.0, 0.5, 0.25, 0.125)),
                  query_positions=rows)
    assert len(seen) == 2
    for scores in seen:
        assert torch.isfinite(scores).all() and (scores > 0).all()


def _with_nan(name: str, seed: int = 3):
    broken = random_model(tiny_official_config(layers=6), seed=seed)
    with torch.no_grad():
        broken.get_parameter(name)[0, 0] = float("nan")
    return broken


@torch.no_grad()
def test_nan_weights_are_reported_with_the_layer_and_the_official_key() -> None:
    broken = _with_nan("llm.model.layers.2.mlp.down_proj.weight")
    embeds, span = _prompt(broken)
    with pytest.raises(NonFiniteError) as caught:
        broken.prefill(embeds, span)
    assert caught.value.where == "LLM layer 2 (model.layers.2)" and caught.value.dtype == "float32"
    assert "model.layers.2.mlp.down_proj.weight holds NaN" in str(caught.value)
    assert "download the checkpoint again" in str(caught.value)


@torch.no_grad()
def test_nan_in_the_tower_or_the_head_is_caught_where_it_starts() -> None:
    broken = _with_nan("vision.blocks.1.mlp.fc1.weight")
    with pytest.raises(NonFiniteError, match="after the vision tower .*encoder.blocks.1.mlp.fc1.weight holds NaN"):
        broken.encode_clips(torch.randn(1, 4, 3, 64, 64))
    healthy = random_model(tiny_official_config(layers=6), seed=3)
    embeds, span = _prompt(healthy)
    state = healthy.prefill(embeds, span)
    healthy.llm.lm_head.weight[5, 0] = float("nan")  # damage that only decoding reaches
    with pytest.raises(NonFiniteError, match=r"after the LM head \(lm_head\) .* lm_head.weight holds NaN"):
        healthy.decode(torch.tensor([[7]]), state.cache)


@torch.no_grad()
def test_float16_overflow_is_reported_as_such() -> None:
    """A layer whose output is finite in float32 but beyond float16's 65,504: the float16 run must fail."""
    big = random_model(tiny_official_config(layers=6), seed=3)
    big.llm.model.layers[1].mlp.down_proj.weight.mul_(2e5)
    embeds, span = _prompt(big)
    full = big.prefill(embeds, span, all_logits=True)
    hidden = big.llm(inputs_embeds=embeds, output_hidden_states=True).hidden_states
    assert torch.isfinite(full.logits).all() and hidden[2].abs().max() > 65504 > hidden[1].abs().max()
    half = big.to(torch.float16)
    half.reset_buffers()
    with pytest.raises(NonFiniteError) as caught:
        half.prefill(*_prompt(half))
    assert caught.value.where == "LLM layer 1 (model.layers.1)" and caught.value.dtype == "float16"
    assert "float16 overflow" in str(caught.value) and "bfloat16 or float32" in str(caught.value)


# Video prefix reuse and chunked prefill: both must equal the plain prefill (float32, 1e-5 relative).

SCHEDULES = [
    DropSchedule(),
    DropSchedule("uniform", (1, 4), (1.0, 0.75, 0.25)),
    DropSchedule("attention", (3,), (1.0, 0.5)),
    DropSchedule("uniform0_attention", (2, 4), (1.0, 0.75, 0.3)),
    DropSchedule("uniform1_attention", (1, 2, 4), (1.0, 0.75, 0.5, 0.25)),
]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _greedy(model, state, steps: int = 4) -> list[int]:
    ids, logits = [], state.logits[0, -1]
    for _ in range(steps):
        ids.append(int(logits.argmax()))
        logits = model.decode(torch.tensor([[ids[-1]]]), state.cache)[0, -1]
    return ids


@torch.no_grad()
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{s.kind}{list(s.layers)}")
def test_question_after_a_kept_prefix_equals_the_full_prefill(model, schedule) -> None:
    video, span = _prompt(model, seed=7)
    end = span.start + span.count
    prefix = model.prefill_prefix(video[:, :end], span, schedule)
    kept_kv = [(k.clone(), v.clone()) for k, v in prefix.kv]
    for seed in (7, 8):  # two questions about the same video: the prefix must not change
        embeds = torch.cat([video[:, :end], _prompt(model, seed=seed)[0][:, end:]], dim=1)
        full = model.prefill(embeds, span, schedule)
        reused = model.prefill_after(prefix, embeds[:, end:], schedule)
        assert _relative(reused.logits, full.logits) < 1e-5
        assert torch.equal(reused.kept, full.kept)
        assert [reused.cache.get_seq_length(i) for i in range(6)] == [full.cache.get_seq_length(i) for i in range(6)]
        assert _greedy(model, reused) == _greedy(model, full)
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(prefix.kv, kept_kv))


def test_prefix_keeps_only_the_layers_no_question_changes(model) -> None:
    embeds, span = _prompt(model)
    end = span.start + span.count
    uniform = model.prefill_prefix(embeds[:, :end], span, SCHEDULES[1])
    assert uniform.layer == 6 and uniform.hidden is None and len(uniform.kv) == 6
    assert uniform.kv[5][0].shape[2] == span.start + int(VISUAL * 0.25)
    guided = model.prefill_prefix(embeds[:, :end], span, SCHEDULES[3])  # uniform after 2, text-guided after 4
    assert guided.layer == 4 and len(guided.kv) == 4 and guided.current == int(VISUAL * 0.75)
    assert guided.hidden.shape[1] == span.start + int(VISUAL * 0.75)
    with pytest.raises(ValueError, match="end with its visual tokens"):
        model.prefill_prefix(embeds, span)


@torch.no_grad()
@pytest.mark.parametrize("schedule", [SCHEDULES[0], SCHEDULES[1], SCHEDULES[3]],
                         ids=lambda s: f"{s.kind}{list(s.layers)}")
def test_chunked_prefill_equals_the_unchunked_one(model, schedule) -> None:
    embeds, span = _prompt(model, seed=9)
    whole = model.prefill(embeds, span, schedule, all_logits=True)
    for chunk in (9, 16):  # chunks cut the text, the visual span and the drop boundaries at various places
        chunked = model.prefill(embeds, span, schedule, all_logits=True, chunk=chunk)
        assert _relative(chunked.logits, whole.logits) < 1e-5
        assert torch.equal(chunked.kept, whole.kept)
        last = model.prefill(embeds, span, schedule, chunk=chunk)
        assert _relative(last.logits[0, -1], whole.logits[0, -1]) < 1e-5
        for index, layer in enumerate(last.cache.layers):  # chunks were written into one reserved storage
            assert layer.keys.shape == whole.cache.layers[index].keys.shape
            assert layer.keys.data_ptr() == layer.stores[0].data_ptr()
        token = torch.tensor([[5]])  # decoding grows the cache past its reservation
        reference = model.decode(token, model.prefill(embeds, span, schedule).cache)
        assert _relative(model.decode(token, last.cache), reference) < 1e-5


@torch.no_grad()
def test_continuation_attention_is_causal_from_the_bottom_right(model, monkeypatch) -> None:
    import hico.model as model_module

    monkeypatch.setattr(model_module, "MASK_ELEMENTS", 64)  # many small query blocks
    monkeypatch.setattr(model_module, "MIN_QUERY_BLOCK", 3)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 7, 8, generator=generator)
    k, v = torch.randn(2, 1, 2, 19, 8, generator=generator)
    attn = model.llm.model.layers[0].self_attn
    ours, _ = model_module.continuation_attention(attn, q, k, v, None, scaling=8 ** -0.5)
    # reference: the full softmax with query i (at position 12 + i) seeing keys 0 .. 12 + i
    keys = k.repeat_interleave(2, dim=1)
    values = v.repeat_interleave(2, dim=1)
    scores = q @ keys.transpose(-1, -2) * 8 ** -0.5
    future = torch.arange(19)[None, :] > 12 + torch.arange(7)[:, None]
    expected = scores.masked_fill(future, float("-inf")).softmax(-1) @ values
    assert torch.allclose(ours, expected.transpose(1, 2), atol=1e-6)
