"""The documentation: runnable snippets run, the site builds strictly, the API reference is complete.

A code block is *runnable* when the line right before its opening fence is ``<!-- runnable -->``
(invisible on GitHub and in the site). Runnable ```` ```python ```` blocks of one page run in
order in one namespace (like a notebook); runnable ```` ```bash ```` blocks of all pages run as
one bash script (``set -euo pipefail``) in a scratch folder holding ``train.py``, ``certify.py``
and ``configs/``, each distinct command once (the README and Getting started share theirs).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from robustattr import registry

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- runnable -->"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Subpackages with a page in docs/reference/api/ whose __all__ must all be rendered.
API_PACKAGES = ["models", "data", "attributions", "attacks", "losses", "metrics", "certify",
                "bounds", "evaluation", "lightning", "utils", "registry", "config"]
# Pages other branches add (the README links to them; they arrive when those branches merge).
PENDING_PAGES: set[str] = set()


def runnable_blocks(path: Path) -> list[tuple[str, str, int]]:
    """``(language, code, line number)`` of every block marked runnable in ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[i + 1] if i + 1 < len(lines) else ""
        match = re.fullmatch(r"```(python|bash)", fence.strip())
        if match is None:
            raise ValueError(f"{path}:{i + 1}: {MARKER} must be followed by ```python or ```bash, got {fence!r}")
        end = lines.index("```", i + 2)
        blocks.append((match.group(1), "\n".join(lines[i + 2 : end]), i + 3))
    return blocks


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


PYTHON_PAGES = [p for p in PAGES if any(lang == "python" for lang, _, _ in runnable_blocks(p))]


def test_markers_are_well_formed_and_the_entry_pages_have_snippets() -> None:
    marked = {_rel(p): runnable_blocks(p) for p in PAGES}  # raises on a misplaced marker
    for page in ("README.md", "docs/getting-started.md"):
        assert {lang for lang, _, _ in marked[page]} == {"python", "bash"}, page


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_rel)
def test_python_snippets_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for lang, code, line in runnable_blocks(page):
        if lang == "python":
            exec(compile(code, f"{_rel(page)}:{line}", "exec"), namespace)  # noqa: S102


def _statements(code: str) -> list[str]:
    """Shell statements of a block: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [s.strip() for s in joined.splitlines() if s.strip() and not s.strip().startswith("#")]


@pytest.mark.slow
def test_shell_snippets_run(tmp_path: Path) -> None:
    statements: list[str] = []
    for page in PAGES:
        for lang, code, _ in runnable_blocks(page):
            if lang == "bash":
                statements += [s for s in _statements(code) if s not in statements]
    assert any("--model.loss.help robustattr.losses.TRADESLoss" in s for s in statements)
    assert any(s.startswith("python certify.py smoothing") for s in statements)
    for name in ("train.py", "certify.py", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # keeps the venv
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    script = "set -euo pipefail\n" + "\n".join(statements) + "\n"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--model.loss.beta" in proc.stdout  # the help of TRADESLoss was printed
    assert (tmp_path / "outputs" / "first-certificate" / "summary.json").is_file()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``mkdocs build --strict`` into a scratch folder, once per session."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def test_site_builds_strictly(site: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = site
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    for page in ("index.html", "getting-started/index.html", "benchmarks/index.html",
                 "guides/configuration/index.html", "reference/api/losses/index.html"):
        assert (out / page).is_file(), page


def _inventory(out: Path) -> set[str]:
    """Object names in the Sphinx inventory (``objects.inv``) mkdocstrings writes."""
    data = (out / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four plain-text header lines, then zlib
        header_end = data.index(b"\n", header_end) + 1
    body = zlib.decompress(data[header_end:]).decode("utf-8")
    return {line.split(" ", 1)[0] for line in body.splitlines() if line}


def test_every_export_and_registered_unit_is_in_the_api_reference(site: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = site
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = _inventory(out)
    missing = []
    for pkg in API_PACKAGES:
        module = importlib.import_module(f"robustattr.{pkg}")
        exported = list(module.__all__)
        assert exported, pkg
        missing += [f"robustattr.{pkg}.{n}" for n in exported if f"robustattr.{pkg}.{n}" not in names]
    for kind, package in registry.KINDS.items():
        for unit_name in registry.available(kind):
            cls = registry.get(kind, unit_name)
            where = {f"{cls.__module__}.{cls.__qualname__}", f"{package}.{cls.__name__}"}
            if not where & names:
                missing.append(f"{kind} {unit_name!r} ({cls.__module__}.{cls.__qualname__})")
    assert not missing, f"not in the API reference: {missing}"


def test_generated_benchmark_tables_cover_every_result(site: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = site
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (out / "benchmarks" / "index.html").read_text(encoding="utf-8")
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        assert f"benchmarks/results/{result.name}" in html, result.name
    config_html = (out / "guides" / "configuration" / "index.html").read_text(encoding="utf-8")
    for config in sorted((ROOT / "configs").rglob("*.yaml")):
        assert _rel(config) in config_html, _rel(config)


def test_readme_is_short_and_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", text):
        if target not in PENDING_PAGES:
            assert (ROOT / target).is_file(), target


def test_no_references_to_documents_outside_the_repository() -> None:
    pattern = re.compile(r"SPEC|seeds? 00\d|seed-00\d")
    roots = [ROOT / "robustattr", ROOT / "configs", ROOT / "docs"]
    files = [ROOT / "README.md"] + [p for r in roots for p in r.rglob("*") if p.suffix in {".py", ".md", ".yaml"}]
    hits = [f"{_rel(p)}:{i}" for p in files for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert not hits, hits
