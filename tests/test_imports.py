"""The module tree: every module under src/hico imports on its own, with no other hico module loaded before it (so
no import cycle hides behind an import order); the decode worker starts without torch; README's layout names
every module, and only those."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import hico

PACKAGE = Path(hico.__file__).parent
README = Path(__file__).resolve().parents[1] / "README.md"
# Modules that need an optional dependency: imported where it is installed, left out where it is not.
OPTIONAL = {"hico.eval.lmms": "lmms_eval", "hico.serve": "fastapi", "hico.vllm.processor": "vllm",
            "hico.vllm.model": "vllm", "hico.vllm.engine": "vllm"}
# Third-party packages the parent imports before forking, so that each child pays only for hico's own modules.
# None of them imports hico: each child still starts with no hico module loaded.
PRELOADED = ("numpy", "PIL.Image", "av", "torch", "safetensors.torch", "tokenizers", "yaml", "tqdm",
             "huggingface_hub", "transformers", "transformers.trainer", "transformers.models.qwen2.modeling_qwen2",
             "accelerate", "pyarrow.parquet", "fastapi", "uvicorn", "prometheus_client")
# Imports every module named on stdin, each in a forked child of a process that holds no hico module (the
# parent imports only third-party packages), two at a time; prints {module: traceback or ""} as JSON.
IMPORTER = r"""
import importlib, json, os, sys, traceback
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
assert not any(m == "hico" or m.startswith("hico.") for m in sys.modules), "the parent imported hico"
results, running = {}, {}

def reap():
    pid, status = os.wait()
    name, reader = running.pop(pid)
    with os.fdopen(reader) as pipe:
        message = pipe.read()
    results[name] = message if status else ""

for name in sys.stdin.read().split():
    if len(running) == 2:
        reap()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            os.write(writer, traceback.format_exc().encode())
            os._exit(1)
    os.close(writer)
    running[pid] = (name, reader)
while running:
    reap()
print(json.dumps(results))
"""


def module_names() -> list[str]:
    """Every module under src/hico by its dotted name (packages by their own name, `__main__` scripts too)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("hico", *path.relative_to(PACKAGE).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _missing_dependency(name: str) -> str | None:
    for prefix, dependency in OPTIONAL.items():
        if (name == prefix or name.startswith(prefix + ".")) and importlib.util.find_spec(dependency) is None:
            return dependency
    return None


def test_every_module_imports_on_its_own() -> None:
    scripts = [n for n in module_names() if n.endswith(".__main__")]  # running them is what importing does
    wanted = [n for n in module_names() if n not in scripts and _missing_dependency(n) is None]
    assert len(wanted) > 60 and "hico.train.lora" in wanted and "hico.video.worker" in wanted
    result = subprocess.run([sys.executable, "-c", IMPORTER, *PRELOADED], input="\n".join(wanted),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert sorted(outcome) == sorted(wanted)
    failed = {name: message for name, message in outcome.items() if message}
    assert not failed, "\n".join(f"{name}:\n{message}" for name, message in failed.items())
    for script in scripts:  # compiled, not run
        compile((PACKAGE.parent / (script.replace(".", "/") + ".py")).read_text(), script, "exec")


def test_the_decode_worker_starts_without_torch() -> None:
    """`python -m hico.video.worker` runs for every video: it must not pay for (or load) torch or transformers."""
    probe = ("import sys, hico.video.worker, hico.clips; "
             "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def readme_map() -> list[str]:
    """The files README's layout names, as paths under src/hico: `name.py` lines, nested under the `pkg/` line
    above them by indentation; a package's own line stands for its `__init__.py`."""
    text = README.read_text(encoding="utf-8")
    fence = text.index("```", text.index("\n## Layout"))
    lines = text[fence:text.index("```", fence + 3)].splitlines()
    assert lines[1] == "src/hico/"
    named, package = [], None
    for line in lines[2:]:
        indent, words = len(line) - len(line.lstrip(" ")), line.split()
        if indent == 0:  # configs/, tests/, bench/: outside the package
            break
        assert len(words) >= 2, f"README's layout gives {words[0]} no role"
        if indent == 2:
            package = words[0][:-1] if words[0].endswith("/") else None
            named.append(f"{package}/__init__.py" if package else words[0])
        else:
            assert indent == 4 and package, f"README's layout: {line!r} is not under a package"
            named.append(f"{package}/{words[0]}")
    return named


def test_readme_layout_names_every_module_once_and_nothing_else() -> None:
    """The map cannot drift from the tree: each module under src/hico is named once, each name exists."""
    named = readme_map()
    assert len(named) == len(set(named)), f"named twice: {sorted(n for n in set(named) if named.count(n) > 1)}"
    tree = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    assert set(named) - tree == set(), f"README's layout names what does not exist: {sorted(set(named) - tree)}"
    assert tree - set(named) == set(), f"README's layout misses {sorted(tree - set(named))}"


def test_the_command_line_answers_help_without_torch() -> None:
    """`hico --help` and usage errors build every subcommand's parser: none may load torch or transformers
    (seconds), which only commands that run a model need."""
    probe = ("import sys, hico.cli; hico.cli.build_parser(); "
             "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
