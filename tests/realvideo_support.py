"""The real-video corpus (tests/realvideo/fetch) and FFmpeg as the oracle for what its files contain."""

from __future__ import annotations

from pathlib import Path


def realvideo_files(folder: Path, kind: str = "video") -> list[Path]:
    """The corpus files of one kind ("video": has a video stream, "novideo": none) listed in the manifest."""
    with open(folder / "manifest.tsv") as manifest:
        rows = [line.rstrip("\n").split("\t") for line in manifest][1:]
    return [folder / row[0] for row in rows if row[5] == kind]
