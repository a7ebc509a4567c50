"""The run store shared by every ``certify.py`` subcommand: identity, per-sample rows, resume, lock.

Layout of an output folder::

    <output>/
      run.json          the run's identity, written once (atomically) by the first run
      run.lock          fcntl.flock'ed by the process running; holds its pid, host and start time
      rows/<writer>.tsv one file per writer ("0" in one process, the rank under a distributed
                        launcher): a first line ``#identity<TAB><the run's identity as JSON>``,
                        the header ``index<TAB><evaluator columns…>``, then one line per sample,
                        appended and fsynced as soon as the sample's batch is done
      rows/<writer>.lock fcntl.flock'ed by that writer while it runs
      …                 reports derived from the rows (``robustattr.apps.reports``)

**Identity.** A run is identified by the sha256 of the checkpoint file, the subcommand, the split
and every parameter that changes a result (the evaluator's :meth:`~robustattr.evaluation.Evaluator.params`,
an experiment config passed in place of the checkpoint's own, the device type). An output
holding another identity is refused with one line naming what differs. The sample selection
is *not* part of the identity: a rerun with more samples extends the run.

**Rows.** Values are written so that they read back exactly: floats as ``repr(float)`` (the
shortest string that round-trips; ``nan``, ``inf``), integers as digits, booleans as
``true``/``false``. Reading back gives float64, int64 and bool tensors. A torn last line (a kill
during a write) is ignored when reading and truncated when its writer reopens the file. The
same index in several files (or twice) is accepted if the rows agree (timing columns aside)
and refused otherwise.

**Lock.** ``run.lock`` is held with ``flock(LOCK_EX | LOCK_NB)`` for the whole run, so a second
concurrent run into the same output is refused (naming the pid in the lock file); the kernel
releases it when the holder exits, even on SIGKILL.

**Shards.** Distributed runs (one writer per rank) use the same files: every writer appends to
its own ``rows/<writer>.tsv`` (a *shard*) and holds ``rows/<writer>.lock``; the primary writer
alone holds ``run.lock``, writes ``run.json`` and the reports. Reading merges every writer's
file, so a rerun with another number of writers skips every sample finished by any of them.
Every shard carries the identity it was written under in its first line; a shard of another
run (e.g. copied in from another output folder) is refused with one line naming the file and
what differs, so shards written on several nodes can be collected into one folder and merged
safely.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "LOCK_FILE",
    "IDENTITY_TAG",
    "ROWS_DIR",
    "RUN_JSON",
    "STORE_FORMAT",
    "RunStore",
    "RunStoreError",
    "atomic_write",
    "format_value",
    "identity_difference",
    "is_timing_column",
    "parse_column",
    "remove_temp_files",
    "sha256_file",
]

#: Version of this layout; part of every identity so that a future layout refuses old folders.
STORE_FORMAT = 2
RUN_JSON = "run.json"
LOCK_FILE = "run.lock"
ROWS_DIR = "rows"
#: first cell of a shard's first line; the second cell is the identity as compact JSON
IDENTITY_TAG = "#identity"
_TEMP_RE = re.compile(r"^\..+\.tmp\.\d+$")
_INT_RE = re.compile(r"^-?\d+$")


class RunStoreError(ValueError):
    """The output folder cannot be used for this run (another identity, locked, corrupt rows)."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_timing_column(name: str) -> bool:
    """Columns that measure time (``seconds`` or ``<prefix>/seconds``): excluded from row comparisons."""
    return name.rsplit("/", 1)[-1] == "seconds"


def format_value(v: Any) -> str:
    """A cell that reads back exactly: ``true``/``false``, integer digits, or ``repr(float)``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def parse_column(cells: Sequence[str]) -> Tensor:
    """Inverse of :func:`format_value` for one column: bool, int64 or float64 tensor ``[N]``."""
    if cells and all(c in ("true", "false") for c in cells):
        return torch.tensor([c == "true" for c in cells], dtype=torch.bool)
    if cells and all(_INT_RE.match(c) for c in cells):
        return torch.tensor([int(c) for c in cells], dtype=torch.int64)
    try:
        return torch.tensor([float(c) for c in cells], dtype=torch.float64)
    except ValueError as err:
        raise RunStoreError(f"unreadable value in a row file: {err}") from None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically: a hidden temp file in the same folder, fsync, rename.

    A reader sees the old file or the new one, never a partial file; a kill during the write
    leaves the old file and a temp file ``.<name>.tmp.<pid>`` (removed by :func:`remove_temp_files`).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete temp files left by an interrupted :func:`atomic_write` in ``folder``; returns them."""
    gone = []
    for p in Path(folder).iterdir():
        if p.is_file() and _TEMP_RE.match(p.name):
            p.unlink()
            gone.append(p)
    return gone


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _label(key: str) -> str:
    if key.startswith("evaluator."):
        key = key[len("evaluator.") :]
    if key == "class" or key.endswith(".class"):
        key = key[: -len("class")].rstrip(".") or "evaluator"
    return key.replace("_sha256", " sha256")


def _show(key: str, v: Any) -> str:
    if v is _ABSENT:
        return "(absent)"
    if isinstance(v, str):
        if re.fullmatch(r"[0-9a-f]{64}", v):
            return v[:8] + "…"
        return v.rsplit(".", 1)[-1] if key.endswith("class") else v
    return json.dumps(v, separators=(",", ":"))


_ABSENT = object()


def identity_difference(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``"<name> <stored> ≠ <requested>"`` for every leaf that differs (checkpoint sha first)."""
    a, b = _flatten(stored), _flatten(requested)
    keys = list(b) + [k for k in a if k not in b]
    keys.sort(key=lambda k: k != "checkpoint_sha256")  # stable: the checkpoint first, then in order
    return [
        f"{_label(k)} {_show(k, a.get(k, _ABSENT))} ≠ {_show(k, b.get(k, _ABSENT))}"
        for k in keys
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


class _FileLock:
    """``flock(LOCK_EX | LOCK_NB)`` on a file that records its holder (pid, host, start time)."""

    def __init__(self, path: Path, output: Path) -> None:
        self.path, self.output, self.fd = path, output, -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise RunStoreError(
                f"{self.output} is in use by another run ({holder}); wait for it to finish or use another --output"
            ) from None
        os.ftruncate(fd, 0)
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": stamp}).encode())
        os.fsync(fd)
        self.fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (ValueError, KeyError, OSError):
            return "pid unknown"

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


class RunStore:
    """One run's output folder (see the module docstring); use as a context manager.

    Example:
        >>> import tempfile, torch
        >>> out = tempfile.mkdtemp()
        >>> with RunStore(out, {"checkpoint_sha256": "0" * 64}, ["y", "p"]) as store:
        ...     store.append([7, 3], {"y": torch.tensor([1, 2]), "p": torch.tensor([0.5, float("nan")])})
        ...     sorted(store.done()), store.load([3, 7])["p"].tolist()
        ([3, 7], [nan, 0.5])

    Args:
        path: the output folder (created if missing).
        identity: JSON-serialisable identity of the run; compared with ``run.json`` and with
            the first line of every shard.
        columns: the evaluator's per-sample columns (the header after ``index``).
        writer: this writer's name: its rows go to ``rows/<writer>.tsv``; ``None``: a reader
            that opens no row file (e.g. to rebuild the reports).
        primary: the primary writer holds ``run.lock`` and writes ``run.json`` (one per run).
        create: write ``run.json`` into a folder that has none (else such a folder is refused).

    Raises:
        RunStoreError: another identity in ``path`` or in one of its shards, a non-empty
            folder without ``run.json``, a concurrent run holding the lock, or row files with
            other columns.
    """

    def __init__(
        self,
        path: str | Path,
        identity: Mapping[str, Any],
        columns: Sequence[str],
        writer: str | None = "0",
        primary: bool = True,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.identity = json.loads(json.dumps({"store_format": STORE_FORMAT, **identity}))
        self.columns = list(columns)
        bad = [c for c in self.columns if not c or any(ch in c for ch in "\t\n\r") or c == "index"]
        if bad or len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns must be distinct, non-empty, without tabs/newlines and not 'index'; got {bad or self.columns}")
        if writer is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", writer):
            raise ValueError(f"writer must be a plain file name, got {writer!r}")
        self.writer, self.primary, self.create = writer, primary, create
        self.header = ["index", *self.columns]
        self._locks: list[_FileLock] = []
        self._fh: Any = None

    # -- opening -----------------------------------------------------------------------------

    def __enter__(self) -> RunStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> RunStore:
        """Lock, check (or write) the identity, and open this writer's row file for appending."""
        if self.path.exists() and not self.path.is_dir():
            raise RunStoreError(f"output {self.path} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            if self.primary:
                self._lock(self.path / LOCK_FILE)
                remove_temp_files(self.path)
                self._check_identity()
            elif not (self.path / RUN_JSON).is_file():
                raise RunStoreError(f"{self.path} holds no {RUN_JSON}: the primary writer creates it first")
            else:
                self._check_identity()
            (self.path / ROWS_DIR).mkdir(exist_ok=True)
            if self.writer is not None:
                self._lock(self.path / ROWS_DIR / f"{self.writer}.lock")
                self._open_rows()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the row file and release the locks (also done by the kernel if the process dies)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for lock in reversed(self._locks):
            lock.release()
        self._locks = []

    def _lock(self, path: Path) -> None:
        lock = _FileLock(path, self.path)
        lock.acquire()
        self._locks.append(lock)

    def _check_identity(self) -> None:
        run_json = self.path / RUN_JSON
        if run_json.is_file():
            try:
                stored = json.loads(run_json.read_text(encoding="utf-8"))
            except ValueError:
                raise RunStoreError(f"{run_json} is not valid JSON; use a new --output") from None
            if stored != self.identity:
                diff = "; ".join(identity_difference(stored, self.identity))
                raise RunStoreError(f"{self.path} holds another run (stored ≠ this run): {diff} — use a new --output")
            return
        rows = self.path / ROWS_DIR
        other = [p.name for p in self.path.iterdir() if p.name not in (LOCK_FILE, ROWS_DIR)]
        if rows.is_dir():
            other += [f"{ROWS_DIR}/{p.name}" for p in rows.iterdir() if p.suffix == ".tsv" and p.stat().st_size]
        if other:
            raise RunStoreError(
                f"{self.path} is not empty ({', '.join(sorted(other)[:3])}…) and holds no {RUN_JSON}: "
                "it is not a run of this version; use a new --output"
            )
        if not self.create:
            raise RunStoreError(f"{self.path} holds no run ({RUN_JSON} is missing): nothing to merge")
        atomic_write(run_json, json.dumps(self.identity, indent=2) + "\n")

    def preamble(self) -> bytes:
        """The first two lines of every shard of this run: ``#identity<TAB>{json}`` and the header."""
        ident = json.dumps(self.identity, separators=(",", ":"), ensure_ascii=True)
        return f"{IDENTITY_TAG}\t{ident}\n{chr(9).join(self.header)}\n".encode()

    def shard_path(self, writer: str) -> Path:
        """``rows/<writer>.tsv``: the shard of writer ``writer``."""
        return self.path / ROWS_DIR / f"{writer}.tsv"

    def _open_rows(self) -> None:
        assert self.writer is not None
        path = self.shard_path(self.writer)
        fh = open(path, "a+b")  # noqa: SIM115 - kept open for the whole run
        try:
            fh.seek(0)
            data = fh.read()
            end = data.rfind(b"\n") + 1
            if end:
                _check_shard_identity(path, data[: data.index(b"\n")], self.identity)
            if data[:end].count(b"\n") < 2:  # a new file, or killed while writing its first lines
                fh.truncate(0)
                fh.write(self.preamble())
                fh.flush()
                os.fsync(fh.fileno())
            else:
                if end < len(data):  # a torn last line: the writer was killed mid-write
                    fh.truncate(end)
                    fh.flush()
                    os.fsync(fh.fileno())
                _read_rows(path, self.header, self.identity, data[:end])  # header and rows must be readable
        except BaseException:
            fh.close()
            raise
        self._fh = fh

    def writer_active(self, writer: str) -> bool:
        """True while a live process holds ``rows/<writer>.lock`` (released by the kernel when it dies).

        A writer that finished closes its store and releases the lock too: the caller tells the
        two apart by whether the writer's rows are complete.
        """
        path = self.path / ROWS_DIR / f"{writer}.lock"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    # -- rows --------------------------------------------------------------------------------

    def append(self, index: Sequence[int] | Tensor, results: Mapping[str, Tensor]) -> None:
        """Append one row per sample of a finished batch and fsync.

        Args:
            index: dataset indices ``[b]``.
            results: ``{column: Tensor[b]}`` exactly for this store's columns.

        Raises:
            ValueError: missing or unexpected columns, or a column that is not ``[b]``.
        """
        if self._fh is None:
            raise RuntimeError("the run store is not open for writing (closed, or opened with writer=None)")
        idx = index.tolist() if isinstance(index, Tensor) else [int(i) for i in index]
        missing = [c for c in self.columns if c not in results]
        extra = [c for c in results if c not in self.columns]
        if missing or extra:
            raise ValueError(
                f"the evaluator returned other columns than its columns() declares: missing {missing}, unexpected {extra}"
            )
        values: dict[str, list[Any]] = {}
        for c in self.columns:
            v = results[c]
            if v.dim() != 1 or v.shape[0] != len(idx):
                raise ValueError(f"column {c!r} must have shape [{len(idx)}], got {tuple(v.shape)}")
            values[c] = v.detach().cpu().tolist()  # once per batch and column
        lines = "".join(
            "\t".join([str(i), *(format_value(values[c][b]) for c in self.columns)]) + "\n" for b, i in enumerate(idx)
        )
        self._fh.write(lines.encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def row_files(self) -> list[Path]:
        """Every writer's row file, sorted by name."""
        rows = self.path / ROWS_DIR
        return sorted(rows.glob("*.tsv")) if rows.is_dir() else []

    def rows(self) -> dict[int, list[str]]:
        """All complete rows of all writers: ``{index: [cell per column]}`` (duplicates checked)."""
        timing = [k for k, c in enumerate(self.columns) if is_timing_column(c)]
        seen: dict[int, tuple[list[str], Path]] = {}
        for path in self.row_files():
            for i, cells in _read_rows(path, self.header, self.identity, path.read_bytes()):
                if i not in seen:
                    seen[i] = (cells, path)
                    continue
                prev, where = seen[i]
                diff = [k for k in range(len(cells)) if k not in timing and cells[k] != prev[k]]
                if diff:
                    k = diff[0]
                    raise RunStoreError(
                        f"{where} and {path} hold different results for index {i} "
                        f"(column {self.columns[k]}: {prev[k]} ≠ {cells[k]}); the output is inconsistent"
                    )
        return {i: cells for i, (cells, _) in seen.items()}

    def done(self) -> set[int]:
        """Indices with a complete row in any writer's file."""
        return set(self.rows())

    def load(self, selection: Iterable[int]) -> dict[str, Tensor]:
        """``{column: Tensor[N]}`` for the samples of ``selection``, in that order.

        Floats come back as float64, integers as int64, booleans as bool.

        Raises:
            RunStoreError: a selected sample has no row.
        """
        sel = [int(i) for i in selection]
        rows = self.rows()
        missing = [i for i in sel if i not in rows]
        if missing:
            raise RunStoreError(f"{len(missing)} selected samples have no row in {self.path} (e.g. {missing[:5]})")
        return {c: parse_column([rows[i][k] for i in sel]) for k, c in enumerate(self.columns)}


def _check_shard_identity(path: Path, first_line: bytes, identity: Mapping[str, Any]) -> None:
    """Refuse a shard whose first line is not this run's identity (one line naming what differs)."""
    tag, _, text = first_line.decode("utf-8", errors="replace").partition("\t")
    where = f"{path.parent.name}/{path.name} in {path.parent.parent}"
    if tag != IDENTITY_TAG:
        raise RunStoreError(
            f"{where} carries no run identity in its first line (written by another version or program); "
            f"move it out of {ROWS_DIR}/ or use a new --output"
        )
    try:
        stored = json.loads(text)
    except ValueError:
        raise RunStoreError(f"{where}: unreadable identity line; move it out of {ROWS_DIR}/ or use a new --output") from None
    if stored != identity:
        diff = "; ".join(identity_difference(stored, identity)) if isinstance(stored, Mapping) else "not an identity"
        raise RunStoreError(
            f"{where} is a shard of another run (shard ≠ this run): {diff} — move it out of {ROWS_DIR}/ or use a new --output"
        )


def _read_rows(path: Path, header: list[str], identity: Mapping[str, Any], data: bytes) -> list[tuple[int, list[str]]]:
    """Complete rows of one shard (a torn last line is ignored); checks identity, header and field counts."""
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode("utf-8").split("\n")[:-1]
    if not lines:
        return []
    _check_shard_identity(path, lines[0].encode("utf-8"), identity)
    if len(lines) < 2:
        return []
    if lines[1].split("\t") != header:
        raise RunStoreError(
            f"{path} has other columns than this run ({lines[1].split(chr(9))[1:6]}… vs {header[1:6]}…); use a new --output"
        )
    out = []
    for n, line in enumerate(lines[2:], start=3):
        cells = line.split("\t")
        if len(cells) != len(header) or not _INT_RE.match(cells[0]):
            raise RunStoreError(f"{path}, line {n}: malformed row ({len(cells)} fields, expected {len(header)})")
        out.append((int(cells[0]), cells[1:]))
    return out
