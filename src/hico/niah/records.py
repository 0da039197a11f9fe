"""Needle records as the official NIAH annotation files hold them, validated, with their images resolved.

Single-hop: `{"question", "answer", "image", "id"}`. Multi-hop: `{"images": [...], "question1", "answer1",
"question2", "answer2"}`; its images go into the video in list order. Image paths are relative to an image
root (by default the folder of the JSON file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hico.errors import OptionError

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Needle:
    kind: str  # "single" or "multi"
    id: str
    images: tuple[str, ...]  # absolute paths, in insertion order
    questions: tuple[str, ...]  # one (single-hop) or two (multi-hop: caption, then content)
    answers: tuple[str, ...]


def load_needles(path: str | Path, image_root: str | Path | None = None) -> list[Needle]:
    """Read an official-format JSON (or JSONL) needle file; every problem names the record and the field."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{path}: no such needle file; pass an official NIAH annotation JSON "
                          "(or make one with `hico niah needles`)")
    root = Path(image_root) if image_root is not None else path.parent
    records = _read_records(path)
    if not records:
        raise OptionError(f"{path}: holds no needle records")
    needles = [_needle(record, n, path, root) for n, record in enumerate(records)]
    missing = [image for needle in needles for image in needle.images if not Path(image).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise OptionError(f"{path}: {len(missing)} needle images are missing under {root} ({shown}); "
                          "pass the folder that holds single/ and multi/ with --image-root")
    return needles


def _read_records(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OptionError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list):
        raise OptionError(f"{path}: expected a list of needle records, found {type(records).__name__}")
    return records


def _needle(record: object, n: int, path: Path, root: Path) -> Needle:
    where = f"{path}: record {n}"
    if not isinstance(record, dict):
        raise OptionError(f"{where} is not an object")
    if "images" in record:
        fields = ("images", "question1", "answer1", "question2", "answer2")
        _require(record, fields, where)
        images = record["images"]
        if not isinstance(images, list) or len(images) < 2:
            raise OptionError(f"{where}: 'images' must list at least 2 image paths")
        questions = (record["question1"], record["question2"])
        answers = (record["answer1"], record["answer2"])
        kind, ident = "multi", str(record.get("id", n))
    else:
        _require(record, ("question", "answer", "image"), where)
        images, questions, answers = [record["image"]], (record["question"],), (record["answer"],)
        kind, ident = "single", str(record.get("id", n))
    for question in questions:
        if not isinstance(question, str) or not question.strip():
            raise OptionError(f"{where}: a question is empty")
    for answer in answers:
        if not isinstance(answer, str) or answer.strip().upper() not in LETTERS:
            raise OptionError(f"{where}: answer {answer!r} is not one of the option letters A-D")
    return Needle(kind, ident, tuple(str((root / image).resolve()) for image in images), tuple(questions),
                  tuple(a.strip() for a in answers))


def _require(record: dict, fields: tuple[str, ...], where: str) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise OptionError(f"{where} lacks {', '.join(missing)} (single-hop records need question, answer, image; "
                          "multi-hop records need images, question1, answer1, question2, answer2)")
