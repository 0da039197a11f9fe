"""Reading an option letter from a response: the official parsers, quirks kept, and the strict one.

`first_letter` is the `mcq_acc` parser that MVBench, MLVU and LVBench share in the official code: a response
of the form "X. text" gives X; otherwise punctuation is stripped (VQA-style) and the first standalone letter
a-e, any case, wins ("A person walks in; the answer is C" reads as A; "CD" reads as nothing).

`stated_letter` (strict mode) takes the letter the answer states: a bare letter, "(X)"/"X."/"X)" at the
start, "answer/option is X", or the one option letter the response names; an option's text alone counts
too. Anything else, and an empty answer, is no answer (scored wrong, never guessed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from hico.eval.task import Item, Settings, Task, check_mode, read_json_records

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")
_OPTION_FORM = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_STANDALONE = re.compile(r"\b([A-E])\b", re.IGNORECASE)
# The official code passes re.UNICODE (32) where re.sub takes its count: at most 32 periods are removed.
PERIOD_LIMIT = 32


def _strip_punctuation(text: str) -> str:
    out = text
    for mark in PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or _COMMA_NUMBER.search(text):
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=PERIOD_LIMIT)


def first_letter(response: str) -> str:
    """The official `mcq_acc` reading: an upper-case letter A-E, or the normalised text when none is found."""
    form = _OPTION_FORM.match(response)
    if form:
        return form.group(1).upper()
    text = response.replace("\n", " ").replace("\t", " ").strip()
    text = _strip_punctuation(text).strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = _STANDALONE.search(text)
    return letter.group(1).upper() if letter else text


def stated_letter(response: str, options: Sequence[str]) -> str | None:
    """The option letter a response states (strict mode), or None."""
    letters = "ABCDEFGHIJ"[: len(options)]
    text = response.strip()
    if not text or not letters:
        return None
    bare = re.fullmatch(r"\(?([A-Za-z])\)?[.:)]?", text)
    if bare and bare.group(1).upper() in letters:
        return bare.group(1).upper()
    lead = re.match(r"^(?:\(([A-Z])\)|([A-Z])[.):](?:\s|$))", text)
    if lead and (lead.group(1) or lead.group(2)) in letters:
        return lead.group(1) or lead.group(2)
    said = re.findall(r"(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*\(?([A-Z])\)?(?![A-Za-z])", text,
                      flags=re.IGNORECASE)
    said = [s.upper() for s in said if s.upper() in letters]
    if said:
        return said[-1]
    named = {m for m in re.findall(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z'])", text) if m in letters}
    if len(named) == 1:
        return named.pop()
    plain = _normalise(text)
    matches = [letters[i] for i, option in enumerate(options) if plain and plain == _normalise(option)]
    return matches[0] if len(matches) == 1 else None


def _normalise(text: str) -> str:
    text = re.sub(r"^\(?[A-Z]\)?[.:)]?\s+", "", text.strip())
    return re.sub(r"[\s.,;:!?]+", " ", text).strip().lower()


def letter_accuracy(results: Sequence[dict], mode: str) -> float | int:
    """Percent correct. Official: empty answers are left out of the denominator, and a set with no
    non-empty answer gives integer 0 (as the official aggregation returns). Strict: every item counts."""
    if mode == "official":
        answered = [r for r in results if r["answered"]]
        return 100 * sum(r["correct"] for r in answered) / len(answered) if answered else 0
    return 100 * sum(r["correct"] for r in results) / len(results) if results else 0


class ChoiceTask(Task):
    """A multiple-choice sub-task read from one JSON file, scored by `mcq_acc` (MVBench, MLVU, LVBench).

    `build(record, index)` makes the Item of one record; `metric` names the official result key.
    """

    def __init__(self, name: str, benchmark: str, file: str, metric: str, settings: Settings,
                 build: Callable[[dict, int], Item]) -> None:
        self.name, self.benchmark, self.file, self.metric = name, benchmark, file, metric
        self.settings = settings
        self.build = build

    def files(self) -> tuple[str, ...]:
        return (self.file,)

    def load(self, annotation_root: str | Path, **options) -> list[Item]:
        return [self.build(record, index) for index, record in enumerate(read_json_records(annotation_root,
                                                                                           self.file))]

    def score(self, item: Item, response: str, mode: str = "official", **options) -> dict:
        check_mode(mode)
        response = response.strip()
        gt = item.answer_letter
        pred = first_letter(response) if mode == "official" else stated_letter(response, item.options)
        correct = gt is not None and pred == gt
        result = {"task": item.task, "category": item.category, "correct": correct, "pred": pred or "",
                  "gt": gt, "answered": response != ""}
        if mode == "official":
            result["official"] = {self.metric: {"pred_answer": response, "gt_answer": gt, "score": int(correct)}}
        return result

    def aggregate(self, results: list[dict], mode: str = "official") -> dict:
        check_mode(mode)
        return {"overall": letter_accuracy(results, mode), "count": len(results),
                "answered": sum(r["answered"] for r in results), "scale": "percent", "per_category": {}}


def answer_letter(candidates: Sequence[str], answer: str) -> str | None:
    """The letter of the right option, or None when the answer is not among the candidates."""
    return "ABCDEFGHIJ"[list(candidates).index(answer)] if answer in candidates else None


def option_lines(candidates: Sequence[str]) -> str:
    """"(A) text\n" per option, as MVBench and MLVU list them."""
    return "".join(f"({'ABCDEFGHIJ'[i]}) {c}\n" for i, c in enumerate(candidates))
