"""Checkpoint layout: config parsing, the official key names both ways, load/save, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hico
from hico.checkpoint import CheckpointError, HicoConfig, hico_to_official, official_to_hico, save_state_dict
from hico.compress import DropSchedule
from hico.errors import OptionError
from hico.synthetic.checkpoints import random_model, tiny_official_config, write_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    write_random_checkpoint(folder, seed=1)
    return folder


def test_released_tower_sizes_follow_the_tower_name() -> None:
    raw = tiny_official_config()
    del raw["vision_config"]
    raw["mm_vision_tower"] = "umt-hd-large"
    raw["mm_hidden_size"] = 1024
    config = HicoConfig.from_official(raw)
    assert (config.vision.image_size, config.vision.num_layers, config.vision.hidden_size) == (448, 23, 1024)
    assert config.vision.interpolate_positions
    raw["mm_vision_tower"] = "umt-large"
    assert HicoConfig.from_official(raw).vision.image_size == 224


def test_llm_config_keeps_rope_base_and_sizes() -> None:
    raw = tiny_official_config()
    raw["rope_theta"] = 1234567.0
    qwen = HicoConfig.from_official(raw).qwen2_config()
    assert qwen.rope_parameters["rope_theta"] == 1234567.0
    assert (qwen.hidden_size, qwen.num_hidden_layers, qwen.num_key_value_heads) == (64, 4, 2)
    assert qwen.rms_norm_eps == 1e-6 and qwen.tie_word_embeddings is False


def test_building_the_model_leaves_the_official_config_as_it_was() -> None:
    """Qwen2Config writes rope_theta into the rope_scaling dict it is given; a checkpoint saved from a config
    read in had that key in its config.json, which the released config does not (found by test_finetune)."""
    raw = dict(tiny_official_config(), rope_theta=1e6,
               rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512})
    before = json.loads(json.dumps(raw))
    HicoConfig.from_official(raw).qwen2_config()
    assert raw == before


@pytest.mark.parametrize("enabled", [False, True])
def test_dropout_settings_resolve_as_the_engine_resolves_them(tmp_path: Path, enabled: bool) -> None:
    """`HicoConfig.schedule` (what training uses, without an engine) gives what `Hico.schedule` gives."""
    raw = tiny_official_config(dropout={"mm_llm_compress": enabled, "llm_compress_type": "uniform0_attention",
                                        "llm_compress_layer_list": [1, 2],
                                        "llm_image_token_ratio_list": [1, 0.5, 0.25]})
    write_random_checkpoint(tmp_path / "tiny", raw, tokenizer=False)
    config, engine = HicoConfig.from_official(raw), hico.load(tmp_path / "tiny")
    configured = DropSchedule("uniform0_attention", (1, 2), (1.0, 0.5, 0.25))
    default = configured if enabled else DropSchedule()  # mm_llm_compress decides what inference uses
    cases = [(None, default), ("default", default), ("model", configured), (True, configured),
             ("off", DropSchedule()), (False, DropSchedule()),
             (DropSchedule("uniform", (3,), (1.0, 0.5)), DropSchedule("uniform", (3,), (1.0, 0.5))),
             ({"type": "attention", "layers": [1], "ratios": [1, 0.5]}, DropSchedule("attention", (1,), (1.0, 0.5)))]
    for setting, expected in cases:
        assert config.schedule(setting) == expected == engine.schedule(setting), setting
    for resolve in (config.schedule, engine.schedule):
        with pytest.raises(OptionError, match="deeper than 4 layers"):
            resolve({"type": "uniform", "layers": [4], "ratios": [1, 0.5]})
        with pytest.raises(OptionError, match="unknown dropout 'sideways'"):
            resolve("sideways")


def test_dropout_model_needs_a_configured_schedule(checkpoint: Path) -> None:
    for resolve in (HicoConfig.from_folder(checkpoint).schedule, hico.load(checkpoint).schedule):
        assert resolve("default") == DropSchedule()
        with pytest.raises(OptionError, match="sets no in-LLM dropout"):
            resolve("model")


def test_official_key_names() -> None:
    model = random_model(tiny_official_config())
    official = {hico_to_official(k) for k in model.state_dict()}
    for key in ("model.vision_tower.vision_tower.encoder.patch_embed.proj.weight",
                "model.vision_tower.vision_tower.encoder.blocks.0.attn.q_bias",
                "model.vision_tower.vision_tower.encoder.blocks.1.attn.v_bias",
                "model.vision_tower.vision_tower.encoder.blocks.1.mlp.fc2.bias",
                "model.vision_tower.vision_tower.encoder.vision_layernorm.weight",
                "model.mm_projector.mlp.0.weight", "model.mm_projector.mlp.2.bias",
                "model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.bias",
                "model.layers.3.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                "model.norm.weight", "lm_head.weight"):
        assert key in official
    assert not any("pos_embed" in k or "positions" in k for k in official)  # computed, never stored
    assert all(official_to_hico(hico_to_official(k)) == k for k in model.state_dict())


def test_load_gives_the_saved_model(checkpoint: Path) -> None:
    loaded = hico.load(checkpoint)
    original = random_model(json.loads((checkpoint / "config.json").read_text()), seed=1)
    clips = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_clips(clips), original.encode_clips(clips))
        ids = torch.tensor([5, 6, 7])
        assert torch.equal(loaded.model.llm(ids[None]).logits, original.llm(ids[None]).logits)
    assert loaded.tokenizer is not None and loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") == 2


def test_load_in_bfloat16_keeps_position_tables_float32(checkpoint: Path) -> None:
    loaded = hico.load(checkpoint, dtype=torch.bfloat16)
    assert loaded.model.dtype == torch.bfloat16
    assert loaded.model.vision.video_positions.dtype == torch.float32
    assert loaded.model.llm.model.rotary_emb.inv_freq.dtype == torch.float32


def test_save_then_load_keeps_every_key(checkpoint: Path) -> None:
    keys = set(load_file(str(checkpoint / "model.safetensors")))
    model = random_model(tiny_official_config())
    assert keys == {hico_to_official(k) for k in model.state_dict()}


def test_tied_embeddings_save_once_and_load_tied(tmp_path: Path) -> None:
    """Qwen2.5-2B ties its LM head to the embeddings: one tensor under two names, which safetensors refuses to
    write twice. The checkpoint holds the embedding only (as the released one does), and loads tied."""
    config = {**tiny_official_config(), "tie_word_embeddings": True}
    model = random_model(config, seed=4)
    model.llm.lm_head.weight = model.llm.model.embed_tokens.weight
    save_state_dict(model.state_dict(), tmp_path / "tied", config)
    keys = set(load_file(str(tmp_path / "tied" / "model.safetensors")))
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    loaded = hico.load(tmp_path / "tied")
    assert loaded.model.llm.lm_head.weight is loaded.model.llm.model.embed_tokens.weight
    assert torch.equal(loaded.model.llm.model.embed_tokens.weight, model.llm.model.embed_tokens.weight)


def _copy(checkpoint: Path, target: Path, mutate) -> Path:
    target.mkdir()
    for item in checkpoint.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    state = load_file(str(target / "model.safetensors"))
    mutate(state)
    save_file(state, str(target / "model.safetensors"))
    return target


def test_missing_unexpected_and_misshapen_keys_are_listed(checkpoint: Path, tmp_path: Path) -> None:
    def mutate(state):
        del state["model.norm.weight"]
        state["model.extra.weight"] = torch.zeros(2)
        state["model.mm_projector.mlp.0.bias"] = torch.zeros(3)

    broken = _copy(checkpoint, tmp_path / "broken", mutate)
    with pytest.raises(CheckpointError) as caught:
        hico.load(broken)
    message = str(caught.value)
    assert "missing: model.norm.weight" in message
    assert "unexpected: model.extra.weight" in message
    assert "model.mm_projector.mlp.0.bias: checkpoint (3,), model (64,)" in message


def test_released_internvideo2_sizes_and_key_names() -> None:
    raw = tiny_official_config(tower="internvideo2")
    del raw["vision_config"]
    raw["mm_hidden_size"] = 1408
    config = HicoConfig.from_official(raw)
    vision = config.vision
    assert (vision.hidden_size, vision.num_layers, vision.num_heads, vision.patch_size, vision.image_size,
            vision.mlp_hidden_size, vision.tokens_per_frame) == (1408, 39, 16, 14, 224, 6144, 256)
    key = "model.vision_tower.vision_tower.blocks.38.attn.q_norm.weight"
    assert official_to_hico(key) == "vision.blocks.38.attn.q_norm.weight"
    assert hico_to_official("vision.blocks.38.attn.q_norm.weight", config.vision_prefix) == key


def test_internvideo2_checkpoint_saves_and_loads_under_its_own_key_names(tmp_path: Path) -> None:
    raw = tiny_official_config(tower="internvideo2")
    raw["vision_config"] = {"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 14, "img_size": 56,
                            "num_frames": 4, "mlp_hidden_dim": 279}
    model = write_random_checkpoint(tmp_path / "iv2", raw, tokenizer=False)
    keys = set(load_file(str(tmp_path / "iv2" / "model.safetensors")))
    tower = {k for k in keys if k.startswith("model.vision_tower.")}
    assert {"model.vision_tower.vision_tower.cls_token", "model.vision_tower.vision_tower.pos_embed",
            "model.vision_tower.vision_tower.img_pos_embed", "model.vision_tower.vision_tower.blocks.1.ls2.weight",
            "model.vision_tower.vision_tower.blocks.0.attn.k_norm.weight"} <= tower
    assert not any(".encoder." in k or "bias" in k and ".qkv." in k for k in tower) and len(tower) == 5 + 2 * 13
    loaded = hico.load(tmp_path / "iv2").model
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("change, words", [
    ({"mm_projector_type": "mlp2x_gelu"}, "projector 'mlp2x_gelu' is not supported"),
    ({"mm_vision_tower": "clip-vit"}, "unknown vision tower"),
    ({"mm_llm_compress": True, "llm_compress_layer_list": [2], "llm_image_token_ratio_list": [1.0]},
     "mm_llm_compress is on but"),
    ({"mm_llm_compress": True, "llm_compress_layer_list": [4], "llm_image_token_ratio_list": [1.0, 0.5]},
     "deeper than 4 layers"),
])
def test_bad_configs_are_named(change: dict, words: str) -> None:
    raw = tiny_official_config()
    raw.update(change)
    with pytest.raises(CheckpointError, match=words):
        HicoConfig.from_official(raw)


def test_missing_folder_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        hico.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(tiny_official_config()))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        hico.load(tmp_path)
    with pytest.raises(CheckpointError, match="not a folder"):
        hico.load(tmp_path / "config.json")


def test_sharded_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    state = load_file(str(checkpoint / "model.safetensors"))
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for item in checkpoint.iterdir():
        if item.name != "model.safetensors":
            (tmp_path / item.name).write_bytes(item.read_bytes())
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / shard))
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = hico.load(tmp_path)
    reference = hico.load(checkpoint)
    assert torch.equal(loaded.model.projector.mlp[0].weight, reference.model.projector.mlp[0].weight)


def _damage(data: bytes, kind: str) -> bytes:
    if kind == "truncated":
        return data[: len(data) * 2 // 3]  # the header promises more data than the file holds
    if kind == "random bytes":
        return bytes(torch.randint(0, 256, (len(data),), generator=torch.Generator().manual_seed(0)).tolist())
    return data[:8] + b"{not json" + data[8 + len(b"{not json"):]  # the header length stays valid


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "wrong header"])
def test_damaged_weight_file_is_named_with_advice(checkpoint: Path, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "damaged"
    target.mkdir()
    for item in checkpoint.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    weights = target / "model.safetensors"
    weights.write_bytes(_damage(weights.read_bytes(), kind))
    damaged = weights.read_bytes()
    with pytest.raises(CheckpointError) as caught:
        hico.load(target)
    message = str(caught.value)
    assert str(weights) in message and "damaged weight file" in message and "download it again" in message
    assert weights.read_bytes() == damaged  # reading never rewrites the user's file


def test_damaged_shard_of_an_index_is_named(checkpoint: Path, tmp_path: Path) -> None:
    target = tmp_path / "sharded"
    target.mkdir()
    for item in checkpoint.iterdir():
        if item.name != "model.safetensors":
            (target / item.name).write_bytes(item.read_bytes())
    state = load_file(str(checkpoint / "model.safetensors"))
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(target / shard))
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    assert hico.load(target).model is not None
    second = target / "model-00002-of-00002.safetensors"
    second.write_bytes(second.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{second}: damaged weight file"):
        hico.load(target)
    (target / "model.safetensors.index.json").write_text("{\"weight_map\": ")
    with pytest.raises(CheckpointError, match="model.safetensors.index.json: not a safetensors index"):
        hico.load(target)


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(cache: Path, repo: str, checkpoint: Path, ref: str = "main") -> Path:
    """The documented Hub cache layout: blobs/ by hash, snapshots/<commit>/ of links to them, refs/<ref>."""
    import hashlib

    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for item in checkpoint.iterdir():
        data = item.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / item.name).symlink_to(Path("../..") / "blobs" / blob.name)
    (storage / "refs").mkdir()
    (storage / "refs" / ref).write_text(COMMIT)
    return snapshot


@pytest.fixture
def no_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hub_id_loads_from_the_cache_offline(checkpoint: Path, tmp_path: Path, monkeypatch, no_network,
                                             variable: str) -> None:
    cache = tmp_path / "hub" if variable == "HF_HUB_CACHE" else tmp_path / "home" / "hub"
    snapshot = _hub_cache(cache, "OpenGVLab/Tiny-Flash", checkpoint)
    monkeypatch.setenv(variable, str(cache if variable == "HF_HUB_CACHE" else tmp_path / "home"))
    loaded = hico.load("OpenGVLab/Tiny-Flash")
    assert loaded.name == "OpenGVLab/Tiny-Flash" and loaded.tokenizer is not None
    direct = hico.load(checkpoint)
    assert all(torch.equal(direct.model.state_dict()[k], v) for k, v in loaded.model.state_dict().items())
    assert hico.load("OpenGVLab/Tiny-Flash", revision=COMMIT).model_id == loaded.model_id
    assert snapshot.is_dir()


def test_uncached_hub_id_offline_is_one_line_saying_how_to_fetch(tmp_path: Path, monkeypatch, no_network) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError) as caught:
        hico.load("OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448", revision="v1.0")
    message = str(caught.value)
    assert "\n" not in message and "HF_HUB_OFFLINE is set" in message and str(tmp_path / "empty") in message
    assert "`hf download OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448 --revision v1.0`" in message


def test_folders_win_over_hub_ids_and_take_no_revision(checkpoint: Path, tmp_path: Path, monkeypatch,
                                                       no_network) -> None:
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "tiny").symlink_to(checkpoint)
    monkeypatch.chdir(tmp_path)
    assert hico.load("owner/tiny").name == checkpoint.name  # an existing relative folder, not a Hub id
    with pytest.raises(CheckpointError, match="--revision applies to Hub ids"):
        hico.load(checkpoint, revision="main")


def test_cli_model_and_revision_options_reach_the_hub_lookup(tmp_path: Path, monkeypatch, no_network,
                                                             capsys) -> None:
    from hico.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    code = main(["chat", str(tmp_path / "v.mp4"), "What happens?", "--model", "OpenGVLab/Not-Cached",
                 "--revision", "v2"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert error.startswith("hico: error: OpenGVLab/Not-Cached at revision v2 is not in the Hub cache")


def test_only_the_files_hico_reads_are_downloaded() -> None:
    """HUB_FILES through huggingface_hub's own filter, on the file list of a released repo."""
    from huggingface_hub.utils import filter_repo_objects

    from hico.checkpoint import HUB_FILES

    shards = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    wanted = ["config.json", "model.safetensors.index.json", *shards, "tokenizer.json", "tokenizer_config.json",
              "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json"]
    unwanted = [".gitattributes", "README.md", "generation_config.json", "modeling_videochat_flash.py",
                "vision_tower_builder.py", "mm_utils.py", "pytorch_model.bin", "UMT-L_f4_vision.pt"]
    assert sorted(filter_repo_objects(wanted + unwanted, allow_patterns=HUB_FILES)) == sorted(wanted)
