"""A first index parsed in worker processes stores exactly what one process stores."""

from __future__ import annotations

import multiprocessing
import shutil
import sysconfig
from pathlib import Path

import pytest

from codeagent_lsp.codegraph.indexer import POOL_MIN_FILES, Indexer
from codeagent_lsp.codegraph.languages import language_for
from codeagent_lsp.codegraph.store import WINDOW_LINES, GraphStore, open_store
from tests.conftest import PROJECTS

STDLIB = Path(sysconfig.get_paths()["stdlib"])

FACTS = {
    "symbols": "SELECT f.path, s.name, s.qualified_name, s.kind, s.signature, s.doc, s.scope,"
    " s.start_line, s.start_col, s.end_line, s.end_col, s.name_line, s.name_col FROM symbols s"
    " JOIN files f ON f.id = s.file_id",
    "refs": "SELECT f.path, r.name, r.kind, r.scope, r.line, r.col, r.end_col FROM refs r"
    " JOIN files f ON f.id = r.file_id",
    "imports": "SELECT f.path, i.module, i.names, i.alias, i.line, g.path FROM imports i"
    " JOIN files f ON f.id = i.file_id LEFT JOIN files g ON g.id = i.resolved_file_id",
    "windows": "SELECT f.path, w.start_line, w.end_line, w.text FROM windows w"
    " JOIN files f ON f.id = w.file_id",
    "files": "SELECT path, language, sha256, size, has_errors FROM files",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every fixture language plus real code (standard-library packages), above the size
    at which index_all starts workers."""
    root = tmp_path_factory.mktemp("tree") / "tree"
    shutil.copytree(PROJECTS, root)
    for package in ("email", "json", "http", "urllib"):
        shutil.copytree(STDLIB / package, root / package, ignore=shutil.ignore_patterns("*.pyc"))
    assert sum(1 for p in root.rglob("*") if language_for(p.name)) > POOL_MIN_FILES
    return root


def _index(tree: Path, db: Path, workers: int) -> tuple[GraphStore, list[int]]:
    """Index with `workers`; returns the store and how many worker processes were alive at
    each progress report."""
    store = open_store(db)
    alive: list[int] = []
    indexer = Indexer(store, [("tree", tree)], workers=workers)
    summary = indexer.index_all(progress=lambda *_: alive.append(len(_workers())))
    assert summary.parsed == summary.files > POOL_MIN_FILES and not summary.cancelled
    assert not _workers()  # the pool is gone with the pass
    return store, alive


def _workers() -> list[multiprocessing.process.BaseProcess]:
    return multiprocessing.active_children()


def _facts(store: GraphStore) -> dict[str, list[tuple[object, ...]]]:
    return {table: sorted(store.db.execute(sql).fetchall()) for table, sql in FACTS.items()}


def test_workers_store_what_one_process_stores(tree: Path, tmp_path: Path):
    alone, alive_alone = _index(tree, tmp_path / "alone.db", workers=0)
    pooled, alive_pooled = _index(tree, tmp_path / "pooled.db", workers=2)
    assert max(alive_alone) == 0 and max(alive_pooled) == 2  # the workers did the parsing
    expected, got = _facts(alone), _facts(pooled)
    for table in FACTS:
        assert got[table] == expected[table], table
    assert len(expected["symbols"]) > 500 and len(expected["refs"]) > 5000
    for query in ("parse header", "Circle"):
        found = [(s.path, s.definition.qualified_name) for s in pooled.search_symbols(query)]
        assert found and found == [
            (s.path, s.definition.qualified_name) for s in alone.search_symbols(query)
        ]
    query = "def decode(self, s, _w=WHITESPACE.match)"
    row = (tree / "json" / "decoder.py").read_text().split("\n").index(f"    {query}:")
    hits = [(h.path, h.start_line) for h in pooled.search_windows(query, 5, None)]
    assert ("json/decoder.py", row - row % WINDOW_LINES) in hits  # the window with that line
    assert hits == [(h.path, h.start_line) for h in alone.search_windows(query, 5, None)]
    alone.close()
    pooled.close()


def test_a_cancelled_pass_stops_its_workers(tree: Path, tmp_path: Path):
    store = open_store(tmp_path / "graph.db")
    reports: list[int] = []
    indexer = Indexer(store, [("tree", tree)], workers=1)
    summary = indexer.index_all(
        progress=lambda done, *_: reports.append(done), cancelled=lambda: bool(reports)
    )
    assert summary.cancelled and reports and summary.files < POOL_MIN_FILES
    assert not _workers()
    store.close()
