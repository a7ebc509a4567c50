"""MkDocs hooks: the parts of the site generated at build time.

A page that contains one of these marker lines gets it replaced by generated Markdown:

- ``<!-- generated: configs -->``: the configuration reference, one section per config group
  under ``configs/`` with every file, its leading comment and every option (dotted key, value,
  inline comment), read from the YAML files themselves;
- ``<!-- generated: benchmarks -->``: one section per ``benchmarks/results/*.json`` with its
  settings and a table per list/mapping of measurements; no figure is copied by hand.

The docstrings mark cross-references with Sphinx roles (``:class:`X```), which the Markdown
renderer leaves as literal ``:class:`` text before the code span; :func:`on_page_content`
drops the role so the rendered page shows just the name.

The functions are plain (no MkDocs import) so tests can call them too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.MULTILINE)
SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):(?=<code)")

# What each config group is for (a group without an entry still gets its files listed).
GROUPS: dict[str, str] = {
    "experiment": "One file per experiment, composing the groups below by relative paths and "
    "holding only its deltas. Run as `python train.py fit --config configs/experiment/<name>.yaml`.",
    "data": "LightningDataModules (the model's `num_classes`, `in_channels`, `input_size` and "
    "`mean`/`std` are linked from the data).",
    "model": "Backbones (`model.backbone`).",
    "loss": "Robust objectives (`model.loss`) at three budgets: `digits/` (CPU-sized), "
    "`mnist/` (ℓ∞ ε = 0.3) and `cifar/` (ε = 8/255).",
    "optimizer": "Optimizers and learning-rate schedules (`model.optimizer`, `model.lr_scheduler`).",
    "callbacks": "Evaluation callbacks (`trainer.callbacks`); add one to any experiment with "
    "`--trainer.callbacks+ configs/callbacks/<name>.yaml`.",
    "trainer": "Trainer snippets for any experiment (`--config configs/trainer/<name>.yaml`).",
}


# ---------------------------------------------------------------- configuration reference


def _split_comment(line: str) -> tuple[str, str]:
    """``key: value  # comment`` -> (``key: value``, ``comment``); ``#`` inside quotes is kept."""
    quote = ""
    for i, ch in enumerate(line):
        if ch in "'\"":
            quote = "" if quote == ch else (quote or ch)
        elif ch == "#" and not quote and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def config_options(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Leading comment (lines kept) and ``(dotted key, value, comment)`` rows of a YAML config file.

    Keys follow indentation (two spaces per level in this repository's configs); list items
    (``- ...``) are shown as values of their parent key.
    """
    header: list[str] = []
    rows: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []
    started = False
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if raw.lstrip().startswith("#"):
            if not started:
                header.append(raw.lstrip()[1:].rstrip().removeprefix(" "))
            continue
        started = True
        body, comment = _split_comment(raw)
        indent = len(body) - len(body.lstrip())
        stripped = body.strip()
        if stripped.startswith("- ") or ":" not in stripped:
            if rows:  # list item or continuation: append to the previous key's value
                key, value, com = rows[-1]
                rows[-1] = (key, f"{value} {stripped}".strip(), com or comment)
            continue
        key, _, value = stripped.partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key.strip()])
        value = value.strip()
        if not value:
            stack.append((indent, key.strip()))
        rows.append((dotted, value, comment))
    return "\n".join(header), rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_configs(root: Path = CONFIGS) -> str:
    """Markdown reference of every config group and option under ``root``."""
    out: list[str] = []
    groups = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (p.name != "experiment", p.name))
    for group in groups:
        out += [f"## `configs/{group.name}/`", "", GROUPS.get(group.name, ""), ""]
        for path in sorted(group.rglob("*.yaml")):
            rel = path.relative_to(root.parent).as_posix()
            header, rows = config_options(path.read_text(encoding="utf-8"))
            out += [f"### `{path.relative_to(group).as_posix()}`", "", f"`{rel}`", ""]
            if header:
                out += ["```text", header, "```", ""]
            if rows:
                out += ["| option | value | comment |", "|---|---|---|"]
                out += [f"| `{k}` | `{_cell(v)}` | {_cell(c)} |" if v else f"| `{k}` | | {_cell(c)} |" for k, v, c in rows]
                out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- benchmark tables


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value) and len(value) <= 4:
            return "×".join(map(str, value))
        if len(value) > 6:
            return f"({len(value)} values)"
        return ", ".join(_fmt(v) for v in value)
    return _cell(str(value))


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list) or (isinstance(value, list) and not any(isinstance(v, dict | list) for v in value))


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _records(value: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """``value`` as table rows if it is a list of mappings or a mapping of mappings."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(str(i), _flat(v)) for i, v in enumerate(value)]
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return [(str(k), _flat(v)) for k, v in value.items()]
    return None


def _table(name: str, rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    columns: list[str] = []
    for _, rec in rows:
        columns += [c for c, v in rec.items() if c not in columns and _is_scalar(v)]
    if len(columns) > 12 and len(rows) <= 8:  # wide and short: one column per record instead
        head = ["quantity", *(key for key, _ in rows)]
        out = ["| " + " | ".join(f"`{h}`" for h in head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join([f"`{c}`"] + [_fmt(rec.get(c)) for _, rec in rows]) + " |" for c in columns]
        return out + [""]
    head = [name, *columns]
    out = ["| " + " | ".join(f"`{h}`" for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join([_cell(key)] + [_fmt(rec.get(c)) for c in columns]) + " |" for key, rec in rows]
    return out + [""]


def _render_mapping(data: dict[str, Any], level: int) -> list[str]:
    out: list[str] = []
    scalars = {k: v for k, v in data.items() if _is_scalar(v)}
    if scalars:
        out += ["| setting | value |", "|---|---|"]
        out += [f"| `{k}` | {_fmt(v)} |" for k, v in scalars.items()]
        out.append("")
    for key, value in data.items():
        if key in scalars:
            continue
        rows = _records(value)
        # a mapping of cases that each hold their own tables ({case: {objectives: {...}}}) recurses
        nested = rows is not None and isinstance(value, dict) and all(any(_records(w) for w in v.values()) for v in value.values())
        if rows is not None and not nested:
            out += [f"{'#' * level} `{key}`", ""] + _table("row", rows)
        elif isinstance(value, dict):
            out += [f"{'#' * level} `{key}`", ""] + _render_mapping(value, min(level + 1, 6))
        else:
            out += [f"{'#' * level} `{key}`", "", f"`{_fmt(value)}`", ""]
    return out


def render_benchmarks(results: Path = RESULTS) -> str:
    """One section per ``results/*.json``: settings and measurement tables, as stored."""
    out: list[str] = []
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        script = "study.py run configs/study/digits.yaml" if path.stem == "study_digits" else f"benchmarks/{path.stem}.py"
        out += [f"## `{path.stem}`", "", f"Written by `python {script}` to `benchmarks/results/{path.name}`.", ""]
        out += _render_mapping(data if isinstance(data, dict) else {"results": data}, 3)
    return "\n".join(out)


def render_study(results: Path = RESULTS) -> str:
    """The digits study's tables as ``study.py report`` wrote them (``study_digits.md``), headings
    demoted below the page's own sections."""
    text = (results / "study_digits.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("# ")]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines)


GENERATORS = {"configs": render_configs, "benchmarks": render_benchmarks, "study": render_study}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: replace each ``<!-- generated: NAME -->`` line by ``GENERATORS[NAME]()``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated section {name!r}; choose one of {sorted(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs hook: drop Sphinx roles (``:class:``, ``:func:``, …) left before rendered code spans."""
    return SPHINX_ROLE.sub("", html)
