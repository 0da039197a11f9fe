"""The synthetic NIAH needle set: record formats, chains, captions that hide the answer, files and determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from hico.errors import OptionError
from hico.niah.synthetic import NeedleSetOptions, plan_needle_set, write_needle_set

OPTIONS = NeedleSetOptions(single=12, multi=4, hops=(2, 3, 5), size=64, seed=3)
TAIL = r"\nOnly give the best option\. Best option: \($"
OPTION_BLOCK = r"Options: \(A\) (.+)\n\(B\) (.+)\n\(C\) (.+)\n\(D\) (.+)"
SINGLE_RE = re.compile(r"^Find the frame of (.+)\. (Which .+\?|What .+\?)\n" + OPTION_BLOCK + TAIL)
MULTI_HEAD = r"^Find the frame of (.+)\. Locate the final frame based on the instructions in the image, and "
MULTI1_RE = re.compile(MULTI_HEAD + r"choose the captions that best describe the frame: \n" + OPTION_BLOCK + TAIL)
MULTI2_RE = re.compile(
    MULTI_HEAD + r"answer the following question based on the final frame: (.+\?)\n" + OPTION_BLOCK + TAIL
)
HOP_RE = re.compile(r"^multi/niah_(\d+)_(\d+)_(p\d+)\.png$")



@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[dict]]:
    folder = tmp_path_factory.mktemp("needles")
    single, multi = write_needle_set(folder, OPTIONS)
    return folder, json.loads(single.read_text()), json.loads(multi.read_text())


def picked(options: tuple[str, ...], letter: str) -> str:
    return options["ABCD".index(letter)]


def hides(caption: str, asked: str, value: str) -> bool:
    return re.search(rf"\b{value}\b", caption, 0 if asked == "symbol" else re.IGNORECASE) is None


def test_single_hop_records(written: tuple[Path, list[dict], list[dict]]) -> None:
    _, records, _ = written
    plan = plan_needle_set(OPTIONS)
    assert records == [item.record for item in plan.single]
    for i, (record, item) in enumerate(zip(records, plan.single, strict=True)):
        assert set(record) == {"question", "answer", "image", "id"} and record["id"] == i
        assert re.fullmatch(r"single/p\d+\.png", record["image"])
        match = SINGLE_RE.match(record["question"])
        assert match, record["question"]
        caption, options = match[1], match.groups()[2:]
        value = item.needle.spec.value(item.needle.asked)
        assert caption == item.needle.caption and len(set(options)) == 4
        assert picked(options, record["answer"]) == value and hides(caption, item.needle.asked, value)


def test_multi_hop_chains(written: tuple[Path, list[dict], list[dict]]) -> None:
    folder, _, records = written
    plan = plan_needle_set(OPTIONS)
    assert records == [item.record for item in plan.multi]
    for index, (record, item) in enumerate(zip(records, plan.multi, strict=True)):
        images, chain = record["images"], item.chain
        assert len(chain) in OPTIONS.hops and sorted(images) == sorted(n.path for n in chain)
        hops = [HOP_RE.match(path) for path in images]
        assert sorted(int(m[2]) for m in hops if m) == list(range(1, len(chain)))
        assert {int(m[1]) for m in hops if m} == {index}
        plain = [path for path, m in zip(images, hops, strict=True) if not m]
        assert plain == [chain[-1].path] and re.fullmatch(r"multi/p\d+\.png", plain[0])
        assert len({n.spec for n in chain}) == len(chain)
        for k, needle in enumerate(chain[:-1], start=1):
            assert HOP_RE.match(needle.path)[2] == str(k)
            assert needle.instruction == f"Find the frame of {chain[k].caption}"
            band = Image.open(folder / needle.path).convert("RGB").crop((0, 60, 64, 64)).getcolors(4096)
            assert max(band)[1] == (255, 255, 255)
        first, final = chain[0], chain[-1]
        m1, m2 = MULTI1_RE.match(record["question1"]), MULTI2_RE.match(record["question2"])
        assert m1 and m2 and m1[1] == m2[1] == first.caption
        assert len(set(m1.groups()[1:])) == 4 and picked(m1.groups()[1:], record["answer1"]) == final.caption
        value = final.spec.value(final.asked)
        assert len(set(m2.groups()[2:])) == 4 and picked(m2.groups()[2:], record["answer2"]) == value
        assert hides(final.caption, final.asked, value)


def test_captions_are_distinct_and_unambiguous() -> None:
    plan = plan_needle_set(NeedleSetOptions(single=40, multi=10, size=64, seed=1))
    needles = [item.needle for item in plan.single] + [n for item in plan.multi for n in item.chain]
    assert len({n.caption for n in needles}) == len(needles) == len({n.path for n in needles})
    for a in needles:
        assert [b for b in needles if a.spec.fits(b.spec, a.asked)] == [a]


def test_files_are_pngs_of_the_right_size(written: tuple[Path, list[dict], list[dict]]) -> None:
    folder, single, multi = written
    paths = [r["image"] for r in single] + [p for r in multi for p in r["images"]]
    assert len(set(paths)) == len(paths) == len(list(folder.glob("*/*.png")))
    for path in paths:
        with Image.open(folder / path) as image:
            assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGB")


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    options = NeedleSetOptions(single=3, multi=2, hops=(3,), size=48, seed=7)
    runs = [write_needle_set(tmp_path / name, options) for name in ("a", "b")]
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    other = write_needle_set(tmp_path / "c", NeedleSetOptions(single=3, multi=2, hops=(3,), size=48, seed=8))
    assert [p.read_bytes() for p in other] != [p.read_bytes() for p in runs[0]]


@pytest.mark.parametrize(
    "kwargs",
    [{"single": -1}, {"multi": -2}, {"single": 0, "multi": 0}, {"hops": (1, 5)}, {"hops": ()}, {"size": 31}],
)
def test_bad_options_raise(kwargs: dict) -> None:
    with pytest.raises(OptionError):
        NeedleSetOptions(**kwargs)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    existing = tmp_path / "niah-synthetic-multihop.json"
    existing.write_text("mine")
    with pytest.raises(OptionError, match="already exists"):
        write_needle_set(tmp_path, NeedleSetOptions(single=1, multi=0, size=32))
    assert existing.read_text() == "mine" and not (tmp_path / "niah-synthetic-singlehop.json").exists()


def test_attributes_limit_what_is_asked() -> None:
    needle_set = plan_needle_set(NeedleSetOptions(single=30, multi=3, hops=(2, 3), size=64, seed=5,
                                                  attributes=("colour", "shape")))
    asked = {item.needle.asked for item in needle_set.single} | {n.asked for m in needle_set.multi for n in m.chain}
    assert asked == {"colour", "shape"}
    with pytest.raises(OptionError, match="attributes are among"):
        NeedleSetOptions(attributes=("size",))
