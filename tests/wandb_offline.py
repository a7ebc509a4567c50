"""Read what an offline W&B run recorded (history keys, images, config) without a server.

Offline runs keep everything in ``<run dir>/run-<id>.wandb`` (a record log); tests and users
can check which metrics were logged before ``wandb sync``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class OfflineRun:
    """Summary of an offline run: every history key, how many rows, config keys, media keys."""

    path: Path
    history_keys: set[str] = field(default_factory=set)
    history_rows: int = 0
    config: dict[str, object] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)
    media_keys: set[str] = field(default_factory=set)
    media_counts: dict[str, int] = field(default_factory=dict)


_BLOCK = 32768
_HEADER = 7  # ":W&B" magic, 2-byte identifier, 1-byte version


def _records(path: Path) -> Iterator[bytes]:
    """Records of a ``.wandb`` file: a 7-byte header, then LevelDB-style log blocks of 32 KiB
    whose records are ``crc32 (4) | length (2, little endian) | type (1) | payload`` with
    types FULL=1, FIRST=2, MIDDLE=3, LAST=4; block tails shorter than 7 bytes are zero padding."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload
            pending = b""


def find_offline_runs(wandb_dir: str | Path) -> list[Path]:
    """All ``offline-run-*`` folders below ``wandb_dir`` (sorted)."""
    return sorted(p for p in Path(wandb_dir).rglob("offline-run-*") if p.is_dir())


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Parse ``run-*.wandb`` in ``run_dir``; media (images, tables) are detected by their ``_type``."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = list(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    out = OfflineRun(run_dir)
    for data in _records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out.history_rows += 1
            for item in rec.history.item:
                # Scalars are stored under their full key; media (images, tables) as nested
                # dicts flattened into ``nested_key`` paths ending in ``_type``.
                path = [item.key] if item.key else list(item.nested_key)
                out.history_keys.add(path[0])
                if len(path) > 1 and path[-1] == "_type":
                    media = "/".join(path[:-1])
                    out.media_keys.add(media)
                    out.media_counts[media] = out.media_counts.get(media, 0) + 1
        elif kind in ("config", "run", "summary"):
            # config updates, the config passed to wandb.init (in the run record), summary updates
            items = {"config": rec.config.update, "run": rec.run.config.update, "summary": rec.summary.update}[kind]
            target = out.summary if kind == "summary" else out.config
            for item in items:
                key = item.key or "/".join(item.nested_key)
                try:
                    target[key] = json.loads(item.value_json)
                except json.JSONDecodeError:
                    target[key] = item.value_json
    return out
