"""Atomic writes: a reader never sees a half-written file; results files never yield a half line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hico.atomic import append_line, atomic_folder, atomic_path, read_jsonl, remove_stale_temporaries, temporary_name, \
    write_text_atomic
from hico.errors import HicoError


def test_temporary_names_are_unique_and_beside_the_target(tmp_path) -> None:
    names = {temporary_name(tmp_path / "model.safetensors") for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and n.name.startswith(".model.safetensors.") for n in names)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "config.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["config.json"]


def test_written_files_get_an_ordinary_files_mode(tmp_path) -> None:
    """safetensors writes 0o600: a checkpoint another account (a serving container) could not read."""
    import torch
    from safetensors.torch import save_file

    with atomic_path(tmp_path / "model.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    assert os.stat(tmp_path / "model.safetensors").st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_a_killed_writer_leaves_the_old_file(tmp_path) -> None:
    """SIGKILL in the middle of a write (a real process): the target still holds the complete old text."""
    target = tmp_path / "report.md"
    write_text_atomic(target, "complete old report\n")
    script = textwrap.dedent(f"""
        import os, signal
        from hico.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half a rep")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    assert target.read_text() == "complete old report\n"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "report.md"]
    assert len(leftovers) == 1 and leftovers[0].read_text() == "half a rep"  # the dead writer's temporary
    assert remove_stale_temporaries(tmp_path) == 1 and os.listdir(tmp_path) == ["report.md"]


def test_a_live_writers_temporary_is_not_removed(tmp_path) -> None:
    with atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"1")
        assert remove_stale_temporaries(tmp_path) == 0 and tmp.exists()
    assert (tmp_path / "x.bin").read_bytes() == b"1"


def test_read_jsonl_drops_and_trims_a_half_last_line(tmp_path) -> None:
    path = tmp_path / "results.jsonl"
    append_line(path, json.dumps({"case": 1}))
    append_line(path, json.dumps({"case": 2}))
    with open(path, "ab") as handle:
        handle.write(b'{"case": 3, "predic')  # what a kill in the middle of a write leaves
    assert read_jsonl(path) == [{"case": 1}, {"case": 2}]
    assert path.read_bytes() == b'{"case": 1}\n{"case": 2}\n'  # trimmed, so the next append starts a line
    append_line(path, json.dumps({"case": 3}))
    assert [r["case"] for r in read_jsonl(path)] == [1, 2, 3]


def test_read_jsonl_half_multibyte_character_and_foreign_lines(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": "\xc3\xa9"}\n{"b": "\xc3')  # cut inside a UTF-8 character
    assert read_jsonl(path) == [{"a": "é"}]
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(HicoError, match="line 2 is not JSON"):
        read_jsonl(path)
    path.write_text('[1, 2]\n')
    with pytest.raises(HicoError, match="line 1 is not a JSON object"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_concurrent_appenders_never_interleave_within_a_line(tmp_path) -> None:
    path = tmp_path / "shared.jsonl"
    script = textwrap.dedent(f"""
        import json, sys
        from hico.atomic import append_line
        for i in range(200):
            append_line({str(path)!r}, json.dumps({{"writer": sys.argv[1], "i": i, "pad": "x" * 3000}}))
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    records = read_jsonl(path)
    assert len(records) == 400
    for name in ("a", "b"):
        assert [r["i"] for r in records if r["writer"] == name] == list(range(200))


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path) -> None:
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "frames") as staging:
        (staging / "frame_1.png").write_bytes(b"1")
        raise RuntimeError("the third frame failed")
    assert os.listdir(tmp_path) == []  # no partial output
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as staging:  # an empty folder the user made is fine
        (staging / "frame_1.png").write_bytes(b"1")
    assert os.listdir(tmp_path / "empty") == ["frame_1.png"]
    with pytest.raises(OSError), atomic_folder(tmp_path / "empty") as staging:  # a full one is never replaced
        (staging / "other.png").write_bytes(b"2")
    assert os.listdir(tmp_path / "empty") == ["frame_1.png"] and sorted(os.listdir(tmp_path)) == ["empty"]
