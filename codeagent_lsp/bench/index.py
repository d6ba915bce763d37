"""`codeagent-lsp bench index PATH`: how fast the CodeGraph indexes a tree, against ctags.

In one run, on one tree: the files are read once untimed (so neither contender pays for a cold
disk cache), the tree is indexed from scratch into a throw-away database, universal-ctags
indexes it twice: `ctags -R` over the same tree (the comparison the CodeGraph issue set its 2x
target against; ctags walks everything, also the dependency folders the indexer leaves out) and
`ctags -L` over exactly the files the indexer kept (like for like), then one-file re-indexes
(an open document whose text changed: parse, extract, store) and `related()` are timed at
cursors drawn with a fixed seed. ctags runs in one process on one core; the indexer reads and
stores in one and parses in `workers` more (0: all in one), so CPU seconds are reported beside
wall seconds for both.
"""

from __future__ import annotations

import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from codeagent_lsp.bench.related import quantile, sample_cursors, time_related
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.settings import CodegraphSettings

Say = Callable[[str], None]

CTAGS_INSTALL = "install universal-ctags (Debian/Ubuntu: apt-get install universal-ctags)"
CTAGS_TIMEOUT_S = 3600
_TOTALS = re.compile(r"(\d+) files?, (\d+) lines?")


def run_index_bench(
    path: Path,
    samples: int,
    seed: int,
    ctags: str = "ctags",
    workers: int | None = None,
    progress: Say | None = None,
) -> dict[str, object]:
    """Index `path` (a folder) from scratch, with `workers` extraction processes (None: the
    indexer's default), and time it against `ctags` (a program name or path). Returns the
    figures; `ctags_seconds` and `ratio` are None, and `ctags_error` says
    why, when ctags is missing or fails. Raises NotADirectoryError for a path that is not a
    folder."""
    say = progress or (lambda _m: None)
    root = path.expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {path}")
    with tempfile.TemporaryDirectory(prefix="codeagent-bench-index-") as scratch:
        index = WorkspaceIndex([(root.name, root)], CodegraphSettings(cacheDir=scratch))
        if workers is not None:
            index.indexer.workers = workers
        try:
            result = _measure(index, root, samples, seed, ctags, Path(scratch), say)
        finally:
            index.close()
        db = index.store.path  # None only if scratch could not hold a database
        result["database_bytes"] = _database_bytes(db) if db is not None else None
    return result


def _measure(
    index: WorkspaceIndex,
    root: Path,
    samples: int,
    seed: int,
    ctags: str,
    scratch: Path,
    say: Say,
) -> dict[str, object]:
    say(f"reading {root} once (page cache) ...")
    lines = _read_all(index)
    say(f"indexing with {index.indexer.workers} extraction workers ...")
    cpu = _cpu_seconds()
    summary = index.index_all(progress=_percent(say))
    cpu = _cpu_seconds() - cpu
    files = [root / record.path for record in index.store.files()]
    indexed_lines = sum(lines.get(file, 0) for file in files)
    say(f"indexed {summary.files} files, {indexed_lines} lines in {summary.seconds:.1f} s")
    ctags_run = _time_ctags(ctags, root, files, scratch, say)
    started = time.perf_counter()
    index.graph.graph()
    graph_ms = (time.perf_counter() - started) * 1000
    say(f"timing related() and re-indexes at {samples} files ...")
    cursors = sample_cursors(index, root, samples, random.Random(seed))
    cold, warm, _ = time_related(index, cursors, budget=1024)
    reindex = _time_reindex(index, cursors)
    seconds = summary.seconds
    ctags_seconds = ctags_run.get("ctags_seconds")
    return {
        "path": str(root),
        "files": summary.files,
        "lines": indexed_lines,
        "symbols": summary.symbols,
        "references": summary.references,
        "seconds": round(seconds, 4),
        "lines_per_s": round(indexed_lines / seconds) if seconds else None,
        "cpu_seconds": round(cpu, 2),
        "workers": index.indexer.workers,
        **ctags_run,
        "ratio": _ratio(seconds, ctags_seconds),
        "ratio_same_files": _ratio(seconds, ctags_run.get("ctags_list_seconds")),
        "samples": len(cursors),
        "reindex_p50_ms": round(statistics.median(reindex), 2) if reindex else None,
        "reindex_p95_ms": round(quantile(reindex, 0.95), 2) if reindex else None,
        "related_p50_ms": round(statistics.median(cold + warm), 2) if cursors else None,
        "graph_build_ms": round(graph_ms, 1),
        "cpus": os.cpu_count(),
    }


def _read_all(index: WorkspaceIndex) -> dict[Path, int]:
    """Read every file the indexer may index; returns lines per file (by its root path)."""
    lines = {}
    for candidate in index.indexer.scan():
        try:
            data = candidate.target.read_bytes()
        except OSError:
            continue  # the indexer will skip it too, and say why
        ends = data.count(b"\n")
        lines[candidate.root / candidate.rel] = ends + (
            1 if data and not data.endswith(b"\n") else 0
        )
    return lines


def _percent(say: Say) -> Callable[[int, int, str], None]:
    """An index progress callback that says every tenth of the way."""
    said = [-1]

    def report(done: int, total: int, _path: str) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth != said[0]:
            said[0] = tenth
            say(f"  {done}/{total} files")

    return report


def _ratio(seconds: float, ctags_seconds: object) -> float | None:
    return round(seconds / ctags_seconds, 2) if isinstance(ctags_seconds, float) else None


_CTAGS_KEYS = ("seconds", "cpu_seconds", "files", "lines")


def _time_ctags(
    ctags: str, root: Path, files: list[Path], scratch: Path, say: Say
) -> dict[str, object]:
    """universal-ctags over `root` (`-R`, keys `ctags_*`) and over exactly `files` (`-L`, keys
    `ctags_list_*`): wall and CPU seconds, and the files and lines ctags counted. All None, with
    `ctags_error` saying why, when ctags is missing, is not universal-ctags or fails."""
    missing: dict[str, object] = {
        f"ctags_{kind}{key}": None for kind in ("", "list_") for key in _CTAGS_KEYS
    }
    missing["ctags_version"] = None
    program = shutil.which(ctags)
    if program is None:
        error = f"ctags not found ({ctags!r}): {CTAGS_INSTALL}"
        say(error)
        return {**missing, "ctags_error": error}
    version = subprocess.run(
        [program, "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    if "Universal Ctags" not in version.stdout:
        error = f"{program} is not universal-ctags: {CTAGS_INSTALL}"
        say(error)
        return {**missing, "ctags_error": error}
    listing = scratch / "ctags-files.txt"
    listing.write_text("".join(f"{file}\n" for file in files), encoding="utf-8")
    figures: dict[str, object] = {"ctags_version": version.stdout.splitlines()[0]}
    for kind, what, args in (
        ("", f"-R over {root}", ["-R", str(root)]),
        ("list_", f"-L on the same {len(files)} files", ["-L", str(listing)]),
    ):
        say(f"timing {Path(program).name} {what} ...")
        run = _run_ctags([program, "-f", str(scratch / "tags"), "--totals=yes", *args])
        if isinstance(run, str):
            say(run)
            return {**missing, "ctags_error": run}
        figures.update(
            {f"ctags_{kind}{key}": value for key, value in zip(_CTAGS_KEYS, run, strict=True)}
        )
    return {**figures, "ctags_error": None}


def _run_ctags(command: list[str]) -> tuple[float, float, int | None, int | None] | str:
    """One ctags run: (wall s, CPU s, files, lines), or why it failed."""
    cpu = _cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=CTAGS_TIMEOUT_S)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    if done.returncode != 0:
        return f"ctags failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    totals = _TOTALS.search(done.stdout + done.stderr)
    return (
        round(seconds, 4),
        round(cpu, 2),
        int(totals.group(1)) if totals else None,
        int(totals.group(2)) if totals else None,
    )


def _time_reindex(index: WorkspaceIndex, cursors: list[tuple[Path, str, int]]) -> list[float]:
    """ms per one-file re-index: each sampled file's text, one line longer, as an editor's."""
    times = []
    for path, text, _ in cursors:
        started = time.perf_counter()
        index.document_changed(path, text + "\n")
        times.append((time.perf_counter() - started) * 1000)
    return times


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process and its finished children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _database_bytes(db: Path) -> int:
    """The database and what SQLite keeps beside it (WAL, shared memory)."""
    companions = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return sum(file.stat().st_size for file in companions if file.exists())
