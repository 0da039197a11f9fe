"""Compare hico with a fixture made by the official code: `python -m hico.conformance FIXTURE_DIR`.

A fixture folder holds config.json, model.safetensors and reference.safetensors (see
../shared/conformance/README.md). Every reference tensor present is recomputed by hico and compared:
relative error (max |hico - ref| / max |ref|) <= 1e-4 for float tensors, identical ids for generations.
Training fixtures (`labels`, `loss_full`, `grad_norms_full`, `loss_drop`) are recomputed through the loss
`hico train` optimises (`TrainingModel`), with the gradients of one backward pass.

`--dtype bfloat16|float16` runs the model in half precision against the same float32 reference, with the
tolerances of LOW_PRECISION_TOLERANCE. There each stage starts from the reference's input to it (the LLM
from the reference `projector_out`), because ToMe matching is discontinuous: a rounding-sized change of the
tower features flips near-tied matches, and a merged token then differs completely (measured on umt224-tiny:
`projector_out` 1.0 relative in bfloat16, while the MLP alone is within 5e-3). `projector_out` is therefore
not compared in half precision, nor are the gradient norms (on umt224-tiny-train in bfloat16 the projector and
tower norms move by 9.5% for that reason, lm_head's by 0.2%); generated ids run end to end from the pixels
and must be identical; training tensors are computed in mixed precision (float32 weights under autocast).
Exit status 0 only if all pass.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from hico.api import load
from hico.errors import HicoError
from hico.generate import GenerationOptions, generate
from hico.train.engine import TrainingModel
from hico.video.preprocess import preprocess

TOLERANCE = 1e-4
# Relative error allowed per tensor in half precision (measured on umt224-tiny, CPU: bfloat16 1.0e-2 for the
# tower features, 1.4e-2 for the logits; float16 1.1e-3 and 1.6e-3): about 2-3x the measured error.
LOW_PRECISION_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}
GENERATED_TOKENS = 8
INPUTS = ("frames_uint8", "input_ids", "labels")
GRADIENT_GROUPS = ("projector", "vision", "llm.model.embed_tokens.weight", "llm.lm_head.weight")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def compare(name: str, ours: torch.Tensor, reference: torch.Tensor, tolerance: float = TOLERANCE) -> Check:
    if reference.dtype in (torch.int64, torch.int32) or name.startswith("generated"):
        ours_ids, ref_ids = ours.flatten().long().tolist(), reference.flatten().long().tolist()
        same = ours_ids == ref_ids
        return Check(name, same, f"ids {ours_ids}" if same else f"ids {ours_ids} vs reference {ref_ids}")
    if ours.numel() != reference.numel():
        return Check(name, False, f"shape {tuple(ours.shape)} vs reference {tuple(reference.shape)}")
    ours, reference = ours.detach().cpu().reshape(reference.shape).double(), reference.double()
    error = (ours - reference).abs().max().item()
    relative = error / max(reference.abs().max().item(), 1e-12)
    return Check(name, relative <= tolerance, f"max abs {error:.3e}, relative {relative:.3e}")


def run(folder: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> list[Check]:
    """Recompute every reference tensor of a fixture folder with hico, the model in `dtype` on `device`."""
    folder = Path(folder)
    reference_path = folder / "reference.safetensors"
    if not reference_path.exists():
        raise HicoError(f"{folder}: no reference.safetensors; pass a conformance fixture folder")
    reference = {k: v for k, v in load_file(str(reference_path)).items()}
    model = load(folder, dtype=dtype, device=device).model
    config = model.config
    exact = dtype == torch.float32
    checks, ours, skipped = [], {}, {}
    clips = None
    with torch.inference_mode():
        if "frames_uint8" in reference:
            ours["pixel_values"] = preprocess(list(reference["frames_uint8"].to(torch.uint8).numpy()),
                                              config.vision.image_size)
        pixels = reference.get("pixel_values", ours.get("pixel_values"))
        if pixels is not None:
            clips = pixels.float().reshape(-1, config.local_num_frames, *pixels.shape[1:])
            ours["vision_features"] = model.vision(clips.to(device=device, dtype=dtype))
            ours["projector_out"] = model.encode_clips(clips)
            if not exact:
                skipped["projector_out"] = "not compared in half precision (ToMe matching flips on rounding)"
        inference = {"logits_full", "generated_full", "last_logits_drop", "generated_drop"} & set(reference)
        if inference and "input_ids" in reference and "projector_out" in ours:
            input_ids = reference["input_ids"].flatten().long()
            visual = ours["projector_out"] if exact else reference.get("projector_out", ours["projector_out"])
            visual = visual.to(device)
            embeds, span = model.embed(input_ids, visual)
            full = model.prefill(embeds, span, all_logits=True)
            ours["logits_full"] = full.logits[0]
            schedule = config.dropout_schedule
            if schedule.enabled:
                ours["last_logits_drop"] = model.prefill(embeds, span, schedule).logits[0, -1]
            # generation: end to end in float32; in half precision from the reference projector output too, since
            # ToMe matches flip on rounding (see projector_out above) and the dropout then keeps other tokens
            embeds, span = model.embed(input_ids, ours["projector_out"] if exact else visual)
            ours["generated_full"] = _greedy(model, model.prefill(embeds, span), reference.get("generated_full"))
            if schedule.enabled:
                ours["generated_drop"] = _greedy(model, model.prefill(embeds, span, schedule),
                                                 reference.get("generated_drop"))
    if "labels" in reference and clips is not None:
        # hico train's half precision is mixed precision (float32 weights under autocast), as the official
        # DeepSpeed bf16 runs keep float32 master weights: the training tensors are computed that way
        trained = model if exact else load(folder, dtype=torch.float32, device=device).model
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=not exact):
            ours.update(training_tensors(trained, reference["input_ids"].flatten().long(),
                                         reference["labels"].flatten().long(), clips))
        if not exact:
            skipped["grad_norms_full"] = ("not compared in half precision (the projector and tower gradients "
                                          "flow through ToMe matches that flip on rounding)")
    tolerance = TOLERANCE if exact else LOW_PRECISION_TOLERANCE[dtype]
    for name, tensor in reference.items():
        if name in INPUTS:
            continue
        if name in skipped:
            checks.append(Check(name, True, skipped[name]))
        elif name not in ours:
            checks.append(Check(name, False, "hico does not compute this tensor (unknown name or missing input)"))
        else:
            checks.append(compare(name, ours[name], tensor, tolerance))
    return checks


def training_tensors(model, input_ids: torch.Tensor, labels: torch.Tensor,
                     clips: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official training loss (mean cross-entropy over the labelled tokens), the gradient norms of one
    backward pass (GRADIENT_GROUPS), and the loss with the config's in-LLM dropout, through `TrainingModel`,
    the module `hico train` optimises."""
    model.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    loss = TrainingModel(model)([input_ids], [labels], [clips])["loss"]
    loss.backward()
    parameters = dict(model.named_parameters())
    norms = []
    for group in GRADIENT_GROUPS:
        grads = [p.grad for name, p in parameters.items() if name == group or name.startswith(group + ".")]
        norms.append(sum(float(g.double().pow(2).sum()) for g in grads if g is not None) ** 0.5)
    model.zero_grad(set_to_none=True)
    out = {"loss_full": loss.detach(), "grad_norms_full": torch.tensor(norms)}
    schedule = model.config.dropout_schedule
    if schedule.enabled:
        with torch.no_grad():
            out["loss_drop"] = TrainingModel(model, schedule)([input_ids], [labels], [clips])["loss"]
    return out


def _greedy(model, prefill, reference: torch.Tensor | None) -> torch.Tensor:
    count = reference.numel() if reference is not None else GENERATED_TOKENS
    step = lambda token: model.decode(torch.tensor([[token]]), prefill.cache)[0, -1]  # noqa: E731
    ids = generate(step, prefill.logits[0, -1], GenerationOptions(max_new_tokens=count))
    return torch.tensor(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hico.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("fixture", nargs="+", help="fixture folder(s)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="model precision; half precision uses the looser LOW_PRECISION_TOLERANCE")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    failed = 0
    for folder in args.fixture:
        try:
            checks = run(folder, dtype, args.device)
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
