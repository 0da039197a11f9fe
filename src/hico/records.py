"""Run records: what eval, NIAH and training write as they go, and read back to resume.

- `append_record(path, record)`: one JSON line, written whole (`hico.atomic.append_line`): a kill leaves at
  most a cut-off last line, which `read_records` drops and trims.
- `read_records(path)`: the complete records; `done_keys(records, key)` what a rerun skips.
- `Peak`: the peak memory of a stretch of work (the kernel's VmHWM, reset at the start, and CUDA's peak
  allocation), in MiB.
- `Place` / `place()`: this process's rank and the world size under torchrun or `accelerate launch`;
  `is_main_process()` for the one process that reports and writes shared files.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from hico.atomic import append_line, read_jsonl

BARRIER_TIMEOUT = timedelta(hours=12)  # rank 0 waits this long for the slowest rank


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as a whole JSON line (never interleaved with another writer's, never half there)."""
    append_line(path, json.dumps(record))


def read_records(path: str | Path) -> list[dict]:
    """The complete records of a results file (none if it does not exist); a last line cut off by an
    interrupted run is dropped and trimmed from the file; a damaged complete line is an error naming it."""
    return read_jsonl(path)


def done_keys(records: Iterable[dict], key: str) -> set:
    """The values of `key` in `records`: what a rerun skips."""
    return {record[key] for record in records if key in record}


# ---------------------------------------------------------------- peak memory

def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Peak:
    """The peak memory of the work since `reset()` (or since the process started, where the kernel cannot
    reset its mark): RSS in MiB, and on CUDA the peak allocation."""

    def reset(self) -> Peak:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        if _cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    @staticmethod
    def rss_mb() -> float:
        kib = _vm_hwm_kib()
        if kib is None:
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the process's peak
        return round(kib / 1024, 1)

    @staticmethod
    def cuda_mb() -> float | None:
        if not _cuda():
            return None
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)

    def fields(self) -> dict:
        """{"peak_rss_mb": ..., "peak_cuda_mb": ...} (the CUDA field only where CUDA was used)."""
        out = {"peak_rss_mb": self.rss_mb()}
        cuda = self.cuda_mb()
        if cuda is not None:
            out["peak_cuda_mb"] = cuda
        return out


def _cuda() -> bool:
    import sys

    torch = sys.modules.get("torch")  # never import torch for this: a CPU-only run did not use CUDA
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


# ---------------------------------------------------------------- processes

@dataclass(frozen=True)
class Place:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def place(*, init: bool = True) -> Place:
    """This process's rank and the world size under torchrun / accelerate launch (both set RANK and
    WORLD_SIZE); with `init`, the process group (gloo) is set up when it is not yet."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Place()
    if not init:
        return Place(int(os.environ.get("RANK", "0")), size)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    return Place(dist.get_rank(), dist.get_world_size())


def is_main_process() -> bool:
    """World process zero (RANK unset or 0): the one process that reports and writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0
