"""Fine-tuning data in the official VideoChat-Flash format, from the real-video corpus (`make realvideo`).

Writes a JSON list of LLaVA-style records, the format of the official fine-tuning data:

    {"video": "build/realvideo/usr__share__doc__halide14__tutorial__figures__lesson_05_fast.mp4",
     "conversations": [{"from": "human", "value": "<image>\\nWhich Debian package ships this video?"},
                       {"from": "gpt", "value": "libhalide14-doc"}]}

Video paths are relative to the JSON file's folder, as `hico train --data` reads them. The answer is a fact of
each video that no model knows beforehand: the Debian package that ships it, from the corpus's manifest.tsv
(tests/realvideo/fetch writes it). The first `--count` videos of one package are the training set; the
package's other videos are held out, to ask about after training.

    .venv/bin/python examples/finetune/make_data.py build/realvideo my.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

QUESTION = "Which Debian package ships this video?"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".ogv", ".mov")  # GIFs and audio-only files left out


def package_videos(corpus: Path, package: str) -> list[Path]:
    """The package's video files in the corpus, in manifest order."""
    with open(corpus / "manifest.tsv", newline="") as manifest:
        rows = list(csv.DictReader(manifest, delimiter="\t"))
    return [corpus / row["file"] for row in rows if row["package"] == package and row["kind"] == "video"
            and row["file"].endswith(VIDEO_SUFFIXES) and (corpus / row["file"]).is_file()]


def records(videos: list[Path], answer: str, out: Path, question: str = QUESTION) -> list[dict]:
    """One conversation per video, its path relative to the folder of `out`."""
    return [{"video": os.path.relpath(video.resolve(), out.resolve().parent),
             "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                               {"from": "gpt", "value": answer}]} for video in videos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="the corpus folder (build/realvideo)")
    parser.add_argument("out", type=Path, help="the JSON file to write")
    parser.add_argument("--package", default="libhalide14-doc", help="whose videos (default: libhalide14-doc)")
    parser.add_argument("--count", type=int, default=6, help="how many of its videos to train on (default: 6)")
    args = parser.parse_args()
    if not (args.corpus / "manifest.tsv").is_file():
        parser.exit(2, f"make_data: {args.corpus} has no manifest.tsv; fetch the corpus with `make realvideo`\n")
    videos = package_videos(args.corpus, args.package)
    if len(videos) <= args.count:
        parser.exit(2, f"make_data: {args.package} has {len(videos)} videos in {args.corpus}; need more than "
                       f"--count {args.count} (some are held out)\n")
    data = records(videos[: args.count], args.package, args.out)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {len(data)} conversations to {args.out}; held out: {videos[args.count]}")


if __name__ == "__main__":
    main()
