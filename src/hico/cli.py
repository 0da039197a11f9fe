"""The `hico` command: the top-level parser, the options several commands share, and error handling.

Each subsystem adds its own subcommands (`register(sub)` in the modules of `SUBSYSTEMS`); errors a user can cause
print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys

from hico.dropout import DROP_KINDS, DROP_WORDS, DROPOUT_HELP, DropSchedule
from hico.embedded import embedded_path
from hico.errors import HicoError, OptionError
from hico.video.sampling import SamplingOptions

# Modules whose `register(sub)` adds subcommands, in the order `hico --help` lists them.
SUBSYSTEMS = ("hico.video.cli", "hico.chat", "hico.live_cli", "hico.synthetic.cli", "hico.niah.cli",
              "hico.train.cli", "hico.eval.cli", "hico.serve.cli")


class Parser(argparse.ArgumentParser):
    """Usage errors in one line with where to look, exit 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"hico: error: {message} (see `{self.prog} --help`)\n")


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """--num-frames/--fps/... and the reading options every command that reads a video takes."""
    group = parser.add_argument_group("sampling (default: the official ~1 fps policy, 64 to 512 frames)")
    group.add_argument("--num-frames", type=int, help="exactly N frames, uniformly spread")
    group.add_argument("--fps", type=float, help="a target frame rate instead of a count")
    group.add_argument("--max-frames", type=int, help="never more than N frames")
    group.add_argument("--min-frames", type=int, help="official policies only: at least N frames")
    group.add_argument("--start", type=float, help="start of the time range, seconds")
    group.add_argument("--end", type=float, help="end of the time range, seconds")
    group.add_argument("--policy", help="an official policy as is: dynamic_fps1, middle or fpsX")
    group.add_argument("--local-num-frames", type=int, default=8,
                       help="official policies: frame counts are multiples of this (default 8)")
    reading = parser.add_argument_group("reading")
    reading.add_argument("--no-autorotate", action="store_true",
                         help="ignore the display rotation (as the official reader does)")
    reading.add_argument("--timeout", type=float, default=30.0, help="seconds without decoder progress before giving up")
    reading.add_argument("--max-replaced", type=float, default=0.1,
                         help="largest share of undecodable samples replaced by neighbours before failing")
    reading.add_argument("--folder-fps", type=float, default=1.0, help="frame rate assumed for frame folders")
    reading.add_argument("--strategy", choices=("auto", "seek", "sequential"), default="auto",
                         help="how to reach the sampled frames (auto: from the keyframe layout)")


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The `SamplingOptions` that `add_sampling_args` options ask for."""
    if args.policy is not None:
        if args.num_frames is not None or args.fps is not None:
            raise OptionError("--policy cannot be combined with --num-frames or --fps")
        defaults = SamplingOptions()
        min_frames = args.min_frames if args.min_frames is not None else (
            defaults.min_num_frames if args.policy == "dynamic_fps1" else 1)
        return SamplingOptions(policy=args.policy, max_num_frames=args.max_frames or defaults.max_num_frames,
                               min_num_frames=min_frames, local_num_frames=args.local_num_frames,
                               start=args.start, end=args.end)
    if args.min_frames is not None:
        raise OptionError("--min-frames applies to official policies only; add --policy dynamic_fps1")
    return SamplingOptions.plain(num_frames=args.num_frames, fps=args.fps, max_frames=args.max_frames,
                                 start=args.start, end=args.end)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint folder (official VideoChat-Flash layout) or Hub id, e.g. "
                                        "OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448; default: the embedded toy model")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub id (default: main)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="bfloat16 on GPUs, float32 on CPUs; float16 can overflow in Qwen2 (reported, not hidden)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--quantize", choices=("int8",),
                        help="store the LLM's linear weights in int8 (torchao; pip install 'hico[quantize]')")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """--engine hico|vllm with --vllm-arg KEY=VALUE: the commands whose work an engine other than hico's own can
    do (eval, serve)."""
    parser.add_argument("--engine", choices=("hico", "vllm"), default="hico",
                        help="who runs the LLM: hico (default) or vLLM (pip install 'hico[vllm]'; no in-LLM dropout)")
    parser.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="an argument of vllm.LLM for --engine vllm (repeatable; VALUE read as JSON when it "
                             "parses), e.g. tensor_parallel_size=2 or max_model_len=65536")


def vllm_args(pairs: list[str]) -> dict:
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--vllm-arg {pair!r}: write KEY=VALUE, e.g. tensor_parallel_size=2")
        try:
            args[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            args[key.strip()] = value
    return args


def load_model(args: argparse.Namespace):
    """The model of `add_model_args` options (default: the embedded toy model), on the engine `--engine` names."""
    import torch  # not at the top, as hico.api (transformers, seconds): `hico --help` answers without them

    import hico

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    path = args.model or embedded_path()
    if getattr(args, "engine", "hico") == "vllm":
        if args.quantize:
            raise OptionError("--quantize is hico's own int8 path; with --engine vllm use vLLM's quantization "
                              "(--vllm-arg quantization=...)")
        if importlib.util.find_spec("vllm") is None:
            raise OptionError("--engine vllm needs vLLM: pip install 'hico[vllm]' (see README, Serving at scale)")
        from hico.vllm.engine import VllmEngine

        return VllmEngine(path, dtypes[args.dtype], args.device, revision=args.revision,
                          **vllm_args(args.vllm_arg))
    return hico.load(path, dtype=dtypes[args.dtype], device=args.device, revision=args.revision,
                     quantize=args.quantize)


def add_dropout_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--dropout WORD|TYPE with --dropout-layers/--dropout-ratios. Not given, --dropout is `default`: None reads
    as "default" (the checkpoint's inference setting); a protocol that runs without dropout passes "off"."""
    parser.add_argument("--dropout", choices=DROP_WORDS + DROP_KINDS, default=default,
                        help=DROPOUT_HELP + (f" (default: {default})" if default else ""))
    parser.add_argument("--dropout-layers", help="layer numbers after which to drop, e.g. 4,18")
    parser.add_argument("--dropout-ratios", help="kept fractions, one more than layers, e.g. 1,0.75,0.25")


def dropout_schedule(args: argparse.Namespace) -> DropSchedule | str:
    """The setting of `add_dropout_args` options (`DropSchedule.parse`): a DropSchedule, or "default" / "model"
    for the checkpoint's schedules, which the engine resolves (`Hico.schedule`)."""
    if args.dropout is None and (args.dropout_layers or args.dropout_ratios):
        raise OptionError("--dropout-layers/--dropout-ratios need --dropout TYPE (for example uniform0_attention)")
    return DropSchedule.parse(args.dropout, args.dropout_layers, args.dropout_ratios)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hico", description="Long-video understanding with hierarchical token compression.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBSYSTEMS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HicoError as exc:
        print(f"hico: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hico: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not a user error: still one line, with how to report it
        print(f"hico: internal error: {type(exc).__name__}: {exc} (please report it with the command you ran)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
