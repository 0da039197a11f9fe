"""In-LLM dropout settings: `DropSchedule` (when and how visual tokens leave the LLM) and `DropSchedule.parse`,
the one reader of a dropout setting wherever it is given (command lines, server requests, training configs).
No torch here, so that `hico --help` stays fast; the tensor functions that apply a schedule are in
`hico.compress`."""

from __future__ import annotations

from dataclasses import dataclass

from hico.errors import OptionError

DROP_KINDS = ("uniform", "attention", "uniform0_attention", "uniform1_attention")
DROP_WORDS = ("default", "off", "model")  # besides the kinds: what `DropSchedule.parse` also takes
DROPOUT_HELP = ("in-LLM visual-token dropout: default (the checkpoint's inference setting), off, model (the "
                "checkpoint's llm_compress_* schedule even where mm_llm_compress leaves it off), or a type ("
                + ", ".join(DROP_KINDS) + ") with --dropout-layers and --dropout-ratios")


@dataclass(frozen=True)
class DropSchedule:
    """When and how visual tokens leave the LLM.

    `layers` are 1-based: after decoder layer k, int(N * ratios[s + 1]) of the N original visual tokens remain
    (s = position of k in `layers`). `ratios[0]` is 1.0. `kind` picks uniform or text-guided selection per
    stage: "uniform0_attention" is uniform at stage 0 and text-guided later, "uniform1_attention" uniform at
    stages 0 and 1.
    """

    kind: str = "attention"
    layers: tuple[int, ...] = ()
    ratios: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.kind not in DROP_KINDS:
            raise OptionError(f"unknown dropout type {self.kind!r}; use one of {', '.join(DROP_KINDS)}")
        if len(self.ratios) != len(self.layers) + 1:
            raise OptionError(f"dropout needs one ratio more than layers: {len(self.layers)} layers "
                              f"{list(self.layers)} but ratios {list(self.ratios)}")
        if list(self.layers) != sorted(set(self.layers)) or any(k < 1 for k in self.layers):
            raise OptionError(f"dropout layers must be increasing layer numbers >= 1, got {list(self.layers)}")
        if self.ratios[0] != 1.0 or any(not 0 <= r <= 1 for r in self.ratios) or \
                any(b > a for a, b in zip(self.ratios, self.ratios[1:])):
            raise OptionError(f"dropout ratios must start at 1.0 and not increase, within [0, 1]: {list(self.ratios)}")

    @classmethod
    def parse(cls, value: object, layers: object = None, ratios: object = None) -> DropSchedule | str:
        """The one reading of a dropout setting, from a command line (`--dropout`, `--dropout-layers`,
        `--dropout-ratios`), a JSON request or a config file.

        Returns a DropSchedule, or "default" / "model" for the checkpoint's schedules, which the engine
        resolves (`Hico.schedule`). Not given (None) means "default": the checkpoint's inference setting
        (its `llm_compress_*` schedule when `mm_llm_compress` is on, else none), wherever it is read.
        `value` is a word ("default", "off", "model"), a kind (with `layers` and `ratios` as lists or
        comma-separated text), a {"type", "layers", "ratios"} mapping, a DropSchedule, or a bool (true =
        "model", false = "off", as training configs used to say)."""
        if isinstance(value, DropSchedule):
            return value
        if isinstance(value, bool):
            value = "model" if value else "off"
        if isinstance(value, dict):
            unknown = set(value) - {"type", "layers", "ratios"}
            if unknown or not isinstance(value.get("type"), str) or layers is not None or ratios is not None:
                raise OptionError('a dropout mapping is {"type": KIND, "layers": [...], "ratios": [...]}'
                                  + (f"; unknown keys {sorted(unknown)}" if unknown else ""))
            value, layers, ratios = value["type"], value.get("layers"), value.get("ratios")
        if value is None:
            value = "default"
        if not isinstance(value, str):
            raise OptionError(f"dropout is a word or a mapping, got {type(value).__name__} {value!r}")
        value = value.strip()
        if value in DROP_WORDS:
            if layers not in (None, "", []) or ratios not in (None, "", []):
                raise OptionError(f"dropout {value!r} takes no layers or ratios; name a type "
                                  f"({', '.join(DROP_KINDS)}) to give them")
            return DropSchedule() if value == "off" else value
        if value not in DROP_KINDS:
            raise OptionError(f"unknown dropout {value!r}; use one of {', '.join(DROP_WORDS + DROP_KINDS)}")
        return cls(value, _numbers(layers, int, "layers"), _numbers(ratios, float, "ratios") or (1.0,))

    @property
    def enabled(self) -> bool:
        return bool(self.layers)

    def describe(self) -> str:
        """The schedule as the command line spells it."""
        if not self.enabled:
            return "off"
        return (f"{self.kind} --dropout-layers {','.join(map(str, self.layers))} "
                f"--dropout-ratios {','.join(f'{r:g}' for r in self.ratios)}")

    def check_depth(self, num_layers: int) -> None:
        if self.layers and self.layers[-1] >= num_layers:
            raise OptionError(f"dropout after layer {self.layers[-1]} needs a model deeper than {num_layers} layers "
                              f"(use layer numbers below {num_layers})")

    def stage_kind(self, stage: int) -> str:
        if self.kind in ("uniform", "attention"):
            return self.kind
        uniform_stages = 1 if self.kind == "uniform0_attention" else 2
        return "uniform" if stage < uniform_stages else "attention"

    def kept(self, num_visual: int, stage: int) -> int:
        """Visual tokens left after stage `stage` (0-based) of a sequence that started with `num_visual`."""
        return int(num_visual * self.ratios[stage + 1])


def _numbers(value: object, kind: type, name: str) -> tuple:
    """Dropout layers or ratios from a list or comma-separated text."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OptionError(f"dropout {name} are a list or comma-separated text, got {value!r}")
    try:
        if kind is int and any(isinstance(x, float) and not float(x).is_integer() or isinstance(x, bool)
                               for x in items):
            raise ValueError(f"{value!r}")
        return tuple(kind(x) for x in items)
    except (TypeError, ValueError) as exc:
        what = "layer numbers (integers)" if kind is int else "kept fractions (numbers)"
        raise OptionError(f"dropout {name} must be {what}, comma-separated or a list: {exc}") from None
