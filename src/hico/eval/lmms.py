"""A `hico` model for lmms-eval: `python -m lmms_eval --model hico --model_args pretrained=PATH --tasks TASK`.

lmms-eval finds it through the entry point `lmms_eval.models` (pyproject.toml), which returns `manifest()`.
This module imports lmms_eval and is loaded only by it. The model is a "simple" lmms-eval model, as the
official VideoChat-Flash one is: the task's text goes to hico's chat prompt (system prompt, `<image>` and the
time message are added by hico as the official chat adds them), the video is decoded and encoded by hico's
engine (`hico.VideoStore`), which answers (`Hico.generate`, stop strings included) and scores
(`Hico.likelihood`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from lmms_eval.api.instance import GenerationResult
from lmms_eval.api.model import lmms
from tqdm import tqdm

from hico.errors import HicoError, OptionError
from hico.generate import GenerationConfig
from hico.memory import VideoMemory
from hico.store import VideoStore
from hico.video.sampling import SamplingOptions

MODEL_ID = "hico"


class UnsupportedRequestError(HicoError):
    """A request type or visual the hico lmms-eval model does not answer."""


def manifest():
    """The entry point lmms-eval loads (group `lmms_eval.models`)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.HicoLmms")


def _flag(value: object) -> bool:
    """`--model_args` values arrive as strings or as what lmms-eval's parser made of them."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def generation_options(gen_kwargs: dict) -> GenerationConfig:
    """hico's generation settings from a task's `generation_kwargs` (lmms-eval's defaults where absent:
    greedy, 1024 new tokens); `until` (a string or a list) are the stop strings. Beam search is not something
    hico does."""
    if int(gen_kwargs.get("num_beams", 1) or 1) != 1:
        raise OptionError(f"generation_kwargs asks for num_beams={gen_kwargs['num_beams']}; hico decodes one "
                          "sequence (greedy or sampled): set num_beams: 1")
    temperature = float(gen_kwargs.get("temperature", 0) or 0)
    top_p = gen_kwargs.get("top_p")
    until = gen_kwargs.get("until")
    return GenerationConfig(max_new_tokens=int(gen_kwargs.get("max_new_tokens", 1024)),
                            do_sample=_flag(gen_kwargs.get("do_sample", False)) and temperature > 0,
                            temperature=temperature if temperature > 0 else 1.0,
                            top_p=float(top_p) if top_p not in (None, "None") else 1.0,
                            stop=(until,) if isinstance(until, str) else tuple(until or ()))


def video_of(visuals: object, task: str) -> str:
    """The one video path a task's `doc_to_visual` gives (a list of one path, as lmms-eval's video tasks do;
    a second element holding the official pipeline's media settings is ignored)."""
    items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
    paths = [v for v in items if isinstance(v, (str, Path))]
    if len(paths) != 1 or not isinstance(items[0], (str, Path)):
        kinds = ", ".join(type(v).__name__ for v in items) or "nothing"
        raise UnsupportedRequestError(f"task {task}: doc_to_visual gave {kinds}; hico's lmms-eval model answers "
                                      "video tasks (one video path per document)")
    return str(paths[0])


class HicoLmms(lmms):
    """hico behind lmms-eval's model interface: generate_until and loglikelihood.

    model_args: `pretrained` (checkpoint folder or Hub id), `dtype` (float32, bfloat16, float16), `device`,
    `max_num_frames` (512, the official evaluation's cap), `min_num_frames` (64), `policy` (dynamic_fps1).
    One process: it reports rank 0 of 1 (lmms-eval's default), so lmms-eval hands it every request.
    """

    def __init__(self, pretrained: str, dtype: str = "float32", device: str | None = None,
                 max_num_frames: int = 512, min_num_frames: int = 64, policy: str = "dynamic_fps1",
                 batch_size: int | str = 1, max_batch_size: int | None = None) -> None:
        super().__init__()
        import hico  # hico.api imports transformers: only a run that uses this model pays for it

        if int(batch_size) != 1:
            raise OptionError(f"batch_size={batch_size}: hico answers one request at a time; use --batch_size 1")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise OptionError(f"dtype={dtype}: use float32, bfloat16 or float16")
        self.model = hico.load(pretrained, dtype=getattr(torch, dtype), device=device or "cpu")
        self.sampling = SamplingOptions(policy=policy, max_num_frames=int(max_num_frames),
                                        min_num_frames=int(min_num_frames))
        self.store = VideoStore(self.model)  # encoded videos (and their prompt prefixes) kept in RAM by bytes

    def memory(self, video: str) -> VideoMemory:
        """The encoded video, reused while the task keeps asking about it (the store hashes the file again only
        when its size or modification time changes)."""
        return self.store.get(video, self.sampling).memory

    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    def generate_until(self, requests) -> list[str]:
        answers = []
        for request in tqdm(requests, desc="hico answering", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            video = video_of(doc_to_visual(self._doc(task, split, doc_id)), task)
            config = generation_options(dict(gen_kwargs))
            answer = self.model.generate(self.memory(video), context, config=config).text
            answers.append(answer)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer)
        return answers

    def loglikelihood(self, requests) -> list[GenerationResult]:
        """A (loss, greedy) pair per request (`score`), each wrapped in a GenerationResult: lmms-eval 0.7.3's
        evaluator passes every model output through `unwrap_generation_output`, which turns a bare pair into
        its str() (and multiple_choice scoring then fails to unpack it) but hands a GenerationResult's `text`
        on as it is."""
        scores = []
        for request in tqdm(requests, desc="hico scoring", disable=self.rank != 0):
            scores.append(GenerationResult(text=self.score(request)))
        return scores

    def score(self, request) -> tuple[float, bool]:
        """A loglikelihood request (context, continuation, doc_to_visual, doc_id, task, split): the
        continuation's negative log-likelihood per token after the chat prompt, and whether greedy decoding
        gives exactly it. lmms-eval picks a multiple-choice answer by the smallest first value: its models
        return this loss (the mean over the continuation's tokens, as llava_onevision's `outputs.loss`), not
        the log-probability its docstring names, and hico does the same so that choices and scores compare."""
        if len(request.args) != 6:
            raise UnsupportedRequestError(f"task {request.task_name}: a loglikelihood request without a video "
                                          "(acc_mutual_info's unconditional choices); hico scores continuations "
                                          "of a question about a video: drop acc_mutual_info from metric_list")
        context, continuation, doc_to_visual, doc_id, task, split = request.args
        doc = self._doc(task, split, doc_id)
        if callable(continuation):  # a loglikelihood (not multiple_choice) task passes its doc_to_target
            continuation = continuation(doc)
        if not isinstance(continuation, str):
            raise UnsupportedRequestError(f"task {task}: the continuation to score is {continuation!r}, not text")
        video = video_of(doc_to_visual(doc), task)
        scored = self.model.likelihood(self.memory(video), context, continuation)
        score = (-scored.logprob / len(scored.token_ids), scored.greedy)
        self.cache_hook.add_partial("loglikelihood", (context, continuation), score)
        return score

    def generate_until_multi_round(self, requests) -> list[str]:
        raise UnsupportedRequestError("multi-round generation is not supported by hico's lmms-eval model; use a "
                                      "generate_until task")
