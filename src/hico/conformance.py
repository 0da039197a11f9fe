"""Compare hico with a fixture made by the official code: `python -m hico.conformance FIXTURE_DIR`.

A fixture folder holds config.json, model.safetensors and reference.safetensors (see
../shared/conformance/README.md). Every reference tensor present is recomputed by hico and compared:
relative error (max |hico - ref| / max |ref|) <= 1e-4 for float tensors, identical ids for generations.
Exit status 0 only if all pass.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from hico.errors import HicoError

TOLERANCE = 1e-4
GENERATED_TOKENS = 8


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def compare(name: str, ours: torch.Tensor, reference: torch.Tensor) -> Check:
    if reference.dtype in (torch.int64, torch.int32) or name.startswith("generated"):
        ours_ids, ref_ids = ours.flatten().long().tolist(), reference.flatten().long().tolist()
        same = ours_ids == ref_ids
        return Check(name, same, f"ids {ours_ids}" if same else f"ids {ours_ids} vs reference {ref_ids}")
    if ours.numel() != reference.numel():
        return Check(name, False, f"shape {tuple(ours.shape)} vs reference {tuple(reference.shape)}")
    ours, reference = ours.reshape(reference.shape).double(), reference.double()
    error = (ours - reference).abs().max().item()
    relative = error / max(reference.abs().max().item(), 1e-12)
    return Check(name, relative <= TOLERANCE, f"max abs {error:.3e}, relative {relative:.3e}")


def run(folder: str | Path) -> list[Check]:
    """Recompute every reference tensor of a fixture folder with hico."""
    from safetensors.torch import load_file

    from hico.api import load
    from hico.video.preprocess import preprocess

    folder = Path(folder)
    reference_path = folder / "reference.safetensors"
    if not reference_path.exists():
        raise HicoError(f"{folder}: no reference.safetensors; pass a conformance fixture folder")
    reference = {k: v for k, v in load_file(str(reference_path)).items()}
    model = load(folder, dtype=torch.float32, device="cpu").model
    config = model.config
    checks, ours = [], {}
    with torch.inference_mode():
        if "frames_uint8" in reference:
            ours["pixel_values"] = preprocess(list(reference["frames_uint8"].to(torch.uint8).numpy()),
                                              config.vision.image_size)
        pixels = reference.get("pixel_values", ours.get("pixel_values"))
        if pixels is not None:
            clips = pixels.float().reshape(-1, config.local_num_frames, *pixels.shape[1:])
            ours["vision_features"] = model.vision(clips)
            ours["projector_out"] = model.encode_clips(clips)
        if "input_ids" in reference and "projector_out" in ours:
            input_ids = reference["input_ids"].flatten().long()
            visual = ours["projector_out"]
            embeds, span = model.embed(input_ids, visual)
            full = model.prefill(embeds, span, all_logits=True)
            ours["logits_full"] = full.logits[0]
            ours["generated_full"] = _greedy(model, full, reference.get("generated_full"))
            schedule = config.dropout_schedule
            if schedule.enabled:
                drop = model.prefill(embeds, span, schedule)
                ours["last_logits_drop"] = drop.logits[0, -1]
                ours["generated_drop"] = _greedy(model, drop, reference.get("generated_drop"))
    for name, tensor in reference.items():
        if name in ("frames_uint8", "input_ids"):
            continue
        if name not in ours:
            checks.append(Check(name, False, "hico does not compute this tensor (unknown name or missing input)"))
            continue
        checks.append(compare(name, ours[name], tensor))
    return checks


def _greedy(model, prefill, reference: torch.Tensor | None) -> torch.Tensor:
    from hico.generate import GenerationOptions, generate

    count = reference.numel() if reference is not None else GENERATED_TOKENS
    step = lambda token: model.decode(torch.tensor([[token]]), prefill.cache)[0, -1]  # noqa: E731
    ids = generate(step, prefill.logits[0, -1], GenerationOptions(max_new_tokens=count))
    return torch.tensor(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hico.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("fixture", nargs="+", help="fixture folder(s)")
    args = parser.parse_args(argv)
    failed = 0
    for folder in args.fixture:
        try:
            checks = run(folder)
        except HicoError as exc:
            print(f"hico.conformance: error: {exc}", file=sys.stderr)
            return 2
        print(f"{folder}")
        for check in checks:
            print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name:<18} {check.detail}")
        failed += sum(not c.passed for c in checks)
        if not checks:
            print("  FAIL  (no reference tensors found)")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
