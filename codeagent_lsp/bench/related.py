"""`codeagent-lsp bench related`: how fast the CodeGraph answers `related()` for a cursor.

The repository is indexed (or its cached index brought up to date), then cursor positions are
sampled with a fixed seed from its files and `related()` is timed for each, cold (first request
in a file: the neighbourhood PageRank runs) and warm (the same file again, as while typing).
The baseline is the naive ranking: the same personalized PageRank over the whole graph instead
of the file's neighbourhood, on a few of the same files, measured in the same run.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from codeagent_lsp.codegraph.graph import personalized_pagerank
from codeagent_lsp.codegraph.workspace import WorkspaceIndex
from codeagent_lsp.settings import CodegraphSettings


def run_related_bench(
    repo: Path,
    samples: int,
    seed: int,
    budget: int,
    baseline_samples: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    say = progress or (lambda _m: None)
    root = repo.expanduser().resolve()
    index = WorkspaceIndex([(root.name, root)], CodegraphSettings())
    try:
        say(f"indexing {root} ...")
        summary = index.index_all()
        say(f"{summary.files} files, {summary.symbols} symbols in {summary.seconds:.1f} s")
        cursors = sample_cursors(index, root, samples, random.Random(seed))
        started = time.perf_counter()
        index.graph.graph()
        build_ms = (time.perf_counter() - started) * 1000
        cold, warm, sizes = time_related(index, cursors, budget)
        baseline = _time_global_pagerank(index, cursors[:baseline_samples])
    finally:
        index.close()
    p50 = statistics.median(cold + warm)
    base = statistics.median(baseline) if baseline else 0.0
    return {
        "repo": str(root),
        "files": summary.files,
        "symbols": summary.symbols,
        "samples": len(cursors),
        "graph_build_ms": round(build_ms, 1),
        "p50_ms": round(p50, 2),
        "p95_ms": round(quantile(cold + warm, 0.95), 2),
        "cold_p50_ms": round(statistics.median(cold), 2),
        "warm_p50_ms": round(statistics.median(warm), 2),
        "snippets_p50": statistics.median(sizes),
        "baseline_p50_ms": round(base, 2),
        "ratio_p50": round(p50 / base, 4) if base else None,
    }


def sample_cursors(
    index: WorkspaceIndex, root: Path, samples: int, rng: random.Random
) -> list[tuple[Path, str, int]]:
    """Up to `samples` (absolute path, text, 0-based line) cursors, one per indexed file,
    drawn with `rng`."""
    files = sorted(index.store.files(), key=lambda f: f.path)
    cursors = []
    for record in rng.sample(files, min(samples, len(files))):
        path = root / record.path
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        cursors.append((path, text, rng.randrange(len(lines))))
    return cursors


def time_related(
    index: WorkspaceIndex, cursors: list[tuple[Path, str, int]], budget: int
) -> tuple[list[float], list[float], list[int]]:
    """related() at each cursor twice: (cold ms, warm ms, snippets returned), per cursor."""
    cold: list[float] = []
    warm: list[float] = []
    sizes: list[int] = []
    for path, text, line in cursors:
        for times in (cold, warm):
            started = time.perf_counter()
            snippets = index.related(path, text, line, budget, lambda s: len(s) // 4 + 1)
            times.append((time.perf_counter() - started) * 1000)
        sizes.append(len(snippets))
    return cold, warm, sizes


def _time_global_pagerank(
    index: WorkspaceIndex, cursors: list[tuple[Path, str, int]]
) -> list[float]:
    graph = index.graph.graph()
    nodes = list(graph.nodes)
    times = []
    for path, _, _ in cursors:
        located = index.locate(path)
        record = index.store.file_info(*located) if located else None
        if record is None or ("file", record.id) not in graph:
            continue
        started = time.perf_counter()
        personalized_pagerank(graph, nodes, ("file", record.id))
        times.append((time.perf_counter() - started) * 1000)
    return times


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (0 <= q <= 1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
