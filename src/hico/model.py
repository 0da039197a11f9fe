"""HicoModel: vision tower (UMT or InternVideo2) -> clip-level merging -> MLP projector -> transformers' own Qwen2, with
progressive visual-token dropout applied between the stock decoder layers.

After a drop, the shortened sequence gets contiguous positions 0..L'-1, so every layer's KV cache holds its
own number of tokens. While decoding, each layer places the new token at its own cache length, which is
where the official code puts it (it shifts the position down by the tokens dropped before that layer).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, Qwen2ForCausalLM

from hico.checkpoint import HicoConfig, hico_to_official
from hico.compress import (DropSchedule, attention_keep, merge_clip_tokens, pool_clip_tokens, queries_after_drop,
                           text_guided_scores, uniform_keep)
from hico.errors import NonFiniteError
from hico.vision.internvideo2 import InternVideo2Config, InternVideo2Encoder
from hico.vision.umt import UMTEncoder

IMAGE_TOKEN_INDEX = -200  # the <image> placeholder id in official prompts


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


class Projector(nn.Module):
    """The MLP of `tome16_mlp_hd64` (keys `mlp.0`, `mlp.2`); merging happens before it in `compress`."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens)


@dataclass(frozen=True)
class VisualSpan:
    """Where the visual tokens sit in the prefill sequence: `count` tokens from `start`."""

    start: int
    count: int


@dataclass
class Prefill:
    logits: torch.Tensor | None  # (1, L', vocab) when all positions were asked, else (1, 1, vocab); None if head=False
    cache: DynamicCache
    kept: torch.Tensor | None  # indices (into the original visual tokens) that survived every drop
    hidden: torch.Tensor | None = None  # the final normed hidden states instead of logits, when head=False


class HicoModel(nn.Module):
    check_finite = True  # prefill, decode and encode_clips raise NonFiniteError on NaN/inf outputs

    def __init__(self, config: HicoConfig) -> None:
        super().__init__()
        self.config = config
        tower = InternVideo2Encoder if isinstance(config.vision, InternVideo2Config) else UMTEncoder
        self.vision = tower(config.vision)
        self.projector = Projector(config.mm_hidden_size, config.hidden_size)
        self.llm = Qwen2ForCausalLM(config.qwen2_config())

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
        if self.config.clip_compression == "pool":
            return pool_clip_tokens(features, frames, self.config.tokens_per_clip)
        return merge_clip_tokens(features, self.config.tokens_per_clip)

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
                all_logits: bool = False, query_positions: torch.Tensor | None = None, head: bool = True) -> Prefill:
        """Run the prompt through the LLM, dropping visual tokens after the schedule's layers.

        `query_positions` are the tokens whose attention guides text-guided drops (default: the last one,
        the end of the prompt); training passes the tokens before the answers, and `head=False` so that it
        applies the LM head to the answer positions only (a vocabulary-wide row per token is costly).
        """
        llm = self.llm.model
        cache = DynamicCache(config=self.llm.config)
        hidden = embeds
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        drops = {k: s for s, k in enumerate(schedule.layers)} if span is not None else {}
        if drops:
            schedule.check_depth(len(self._layers()))
        kept = torch.arange(span.count, device=hidden.device) if span is not None else None
        current = span.count if span is not None else 0
        queries = query_positions
        for index, layer in enumerate(self._layers()):
            if index in drops:
                stage = drops[index]
                keep = schedule.kept(span.count, stage)
                if schedule.stage_kind(stage) == "uniform":
                    chosen = uniform_keep(current, keep).to(hidden.device)
                else:
                    chosen = attention_keep(self._visual_scores(layer, hidden, positions, span.start, current,
                                                                queries), keep)
                hidden = torch.cat([hidden[:, :span.start], hidden[:, span.start + chosen],
                                    hidden[:, span.start + current:]], dim=1)
                if queries is not None:
                    queries = queries_after_drop(queries, span.start, current, keep)
                kept, current = kept[chosen], keep
                positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
            cos_sin = llm.rotary_emb(hidden, positions)
            hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=cos_sin,
                           cache=cache, use_cache=True)
        hidden = llm.norm(hidden if all_logits else hidden[:, -1:])
        if not head:
            return Prefill(None, cache, kept, hidden)
        return Prefill(self.llm.lm_head(hidden), cache, kept)

    def _visual_scores(self, layer, hidden: torch.Tensor, positions: torch.Tensor, start: int, count: int,
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
        """(1, t) new tokens after the cached ones -> (1, t, vocab) logits; each layer uses its own positions."""
        llm = self.llm.model
        hidden = llm.embed_tokens(token_ids.to(self.device))
        steps = token_ids.shape[1]
        for index, layer in enumerate(self._layers()):
            past = cache.get_seq_length(index)
            positions = torch.arange(past, past + steps, device=hidden.device)[None]
            mask = None if steps == 1 else _continuation_mask(past, steps, hidden.device)
            hidden = layer(hidden, attention_mask=mask, position_ids=positions,
                           position_embeddings=llm.rotary_emb(hidden, positions), cache=cache, use_cache=True)
        return self.llm.lm_head(llm.norm(hidden))


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
        prefix = next(n for n, m in self.model.named_modules() if m is module)
        vision_prefix = self.model.config.vision_prefix
        damaged = [hico_to_official(f"{prefix}.{n}", vision_prefix) for n, p in module.named_parameters()
                   if not bool(torch.isfinite(p).all())]
        if damaged:
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            return (f"the checkpoint's weight {damaged[0]}{more} holds NaN or inf, so the weights are damaged; "
                    "download the checkpoint again")
        if self.model.dtype == torch.float16:
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
