"""The conformance tool: every fixture under ../shared/conformance, plus a self-made one that must pass
and a perturbed one that must fail (the tool's own mechanics)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hico.conformance import main, run
from hico.model import IMAGE_TOKEN_INDEX
from hico.synthetic.checkpoints import tiny_official_config, write_random_checkpoint

SHARED = Path(os.environ.get("HICO_SHARED", Path(__file__).resolve().parents[2] / "shared"))
# every fixture, those under pending/ (the InternVideo2 tower, the training loss) included
FIXTURES = sorted(p.parent for p in (SHARED / "conformance").glob("**/reference.safetensors"))
UMT_FIXTURES = [p for p in FIXTURES if p.name.startswith("umt")]


@pytest.mark.skipif(not FIXTURES, reason=f"fixture missing: no model fixture folder under {SHARED / 'conformance'}")
@pytest.mark.parametrize("folder", FIXTURES, ids=lambda p: p.name)
def test_official_fixture(folder: Path) -> None:
    checks = run(folder)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    assert checks and not failed, failed


@pytest.mark.skipif(not UMT_FIXTURES, reason=f"fixture missing: no UMT fixture under {SHARED / 'conformance'}")
@pytest.mark.parametrize("folder", UMT_FIXTURES, ids=lambda p: p.name)
def test_bfloat16_agrees_with_the_float32_reference(folder: Path) -> None:
    """Within LOW_PRECISION_TOLERANCE (3e-2 relative) and with the same greedy ids, end to end."""
    checks = {c.name: c for c in run(folder, torch.bfloat16)}
    failed = [f"{c.name}: {c.detail}" for c in checks.values() if not c.passed]
    assert not failed, failed
    compared = {"vision_features", "logits_full", "generated_full", "generated_drop"} if "logits_full" in checks \
        else {"loss_full", "loss_drop"}
    assert compared <= set(checks) and all("relative" in checks[n].detail or "ids" in checks[n].detail
                                           for n in compared)


@pytest.fixture(scope="module")
def own_fixture(tmp_path_factory) -> Path:
    """Reference tensors written by hico itself with an independent path (stock Qwen2 for the logits)."""
    folder = tmp_path_factory.mktemp("fixture") / "tiny"
    config = tiny_official_config(dropout={"llm_compress_type": "uniform0_attention",
                                           "llm_compress_layer_list": [1, 3], "llm_image_token_ratio_list": [1, 0.75, 0.25],
                                           "mm_llm_compress": True})
    model = write_random_checkpoint(folder, config, seed=4, tokenizer=False)
    frames = torch.randint(0, 256, (8, 40, 56, 3), dtype=torch.uint8)
    from hico.video.preprocess import preprocess

    pixels = preprocess(list(frames.numpy()), 64)
    with torch.no_grad():
        clips = pixels.reshape(2, 4, 3, 64, 64)
        features = model.vision(clips)
        projected = model.encode_clips(clips)
        ids = torch.tensor([1, 5, 6, IMAGE_TOKEN_INDEX, 7, 8, 9, 2])
        embeds, _ = model.embed(ids, projected)
        logits = model.llm(inputs_embeds=embeds).logits
    save_file({"frames_uint8": frames, "pixel_values": pixels, "vision_features": features,
               "projector_out": projected, "input_ids": ids, "logits_full": logits},
              str(folder / "reference.safetensors"))
    return folder


def test_own_fixture_passes(own_fixture: Path, capsys) -> None:
    assert main([str(own_fixture)]) == 0
    out = capsys.readouterr().out
    for name in ("pixel_values", "vision_features", "projector_out", "logits_full"):
        assert f"PASS  {name}" in out


def test_perturbed_reference_fails(own_fixture: Path, tmp_path: Path, capsys) -> None:
    for item in own_fixture.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    reference = load_file(str(tmp_path / "reference.safetensors"))
    reference["projector_out"] = reference["projector_out"] * (1 + 1e-3)
    reference["generated_full"] = torch.tensor([1, 2, 3])
    save_file(reference, str(tmp_path / "reference.safetensors"))
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  projector_out" in out and "FAIL  generated_full" in out and "PASS  vision_features" in out
