"""GraphStore on real SQLite files: schema, FTS5 search, import resolution, edges, and recovery
from every database trouble a cache in ~/.cache meets (old schema, corruption, deletion, locks,
read-only locations) without an exception reaching the caller."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings

from codeagent_lsp.codegraph import store as store_module
from codeagent_lsp.codegraph.extract import extract
from codeagent_lsp.codegraph.model import Definition, FileFacts, Import, Reference, Span
from codeagent_lsp.codegraph.schema import SCHEMA_VERSION
from codeagent_lsp.codegraph.store import (
    GraphStore,
    default_db_path,
    open_store,
)
from tests.edits import apply, splices


def span(line: int, col: int = 0, end_col: int = 1) -> Span:
    return Span(line, col, line, end_col)


def definition(name: str, line: int = 0, *, kind: str = "function", doc: str = "", scope: str = ""):
    signature = f"def {name}()"
    return Definition(
        name, kind, Span(line, 0, line + 1, 0), span(line, 4, 4 + len(name)), signature, doc, scope
    )


def facts(
    language: str = "python",
    defs: tuple[Definition, ...] = (),
    refs: tuple[str, ...] = (),
    imports: tuple[Import, ...] = (),
) -> FileFacts:
    references = [Reference(name, "call", span(10 + i)) for i, name in enumerate(refs)]
    return FileFacts(language, list(defs), references, list(imports))


def put(store: GraphStore, path: str, file_facts: FileFacts, text: str = "", repo: str = "r"):
    return store.replace_file(
        repo, path, file_facts.language, f"sha-{path}", 1.0, len(text), file_facts, text
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "graph.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[GraphStore]:
    graph = open_store(db_path)
    yield graph
    graph.close()


# --- opening, versions, recovery ----------------------------------------------------------------


def test_creates_directories_then_reopens(db_path: Path) -> None:
    first = open_store(db_path)
    assert first.status.state == "created" and db_path.exists()
    put(first, "a.py", facts(defs=(definition("area"),)))
    first.close()
    second = open_store(db_path)
    assert second.status.state == "opened"
    assert [s.definition.name for s in second.definitions("area")] == ["area"]
    second.close()


def test_schema_version_mismatch_rebuilds(db_path: Path) -> None:
    first = open_store(db_path)
    put(first, "a.py", facts(defs=(definition("area"),)))
    first.db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    first.close()
    second = open_store(db_path)
    assert second.status.state == "rebuilt"
    assert f"!= {SCHEMA_VERSION}" in second.status.reason
    assert second.stats().files == 0
    assert second.definitions("area") == []
    second.close()


def test_foreign_sqlite_database_is_rebuilt(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    graph = open_store(db_path)
    assert graph.status.state == "rebuilt"
    assert "other" not in graph.db.table_names()
    graph.close()


def test_garbage_file_is_moved_aside_and_rebuilt(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database at all\n" * 200)
    graph = open_store(db_path)
    assert graph.status.state == "rebuilt"
    moved = graph.status.moved_aside
    assert moved is not None and moved.exists() and moved.read_bytes().startswith(b"this is not")
    put(graph, "a.py", facts(defs=(definition("area"),)))
    assert graph.stats().symbols == 1
    graph.close()
    assert open_store(db_path).status.state == "opened"


def test_malformed_pages_found_later_rebuild_instead_of_raising(db_path: Path) -> None:
    graph = open_store(db_path)
    for i in range(200):
        put(graph, f"m{i}.py", facts(defs=(definition(f"name{i}", doc="x" * 200),)), "x\n" * 50)
    graph.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    graph.close()
    data = bytearray(db_path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, 3 * page):  # keep the header page intact
        data[offset : offset + page] = b"\xff" * page
    db_path.write_bytes(bytes(data))
    damaged = open_store(db_path)
    # Wherever SQLite notices (open or first query), the caller gets answers, not exceptions.
    damaged.search_symbols("name1")
    damaged.definitions("name5")
    put(damaged, "fresh.py", facts(defs=(definition("fresh"),)))
    assert [s.path for s in damaged.definitions("fresh")] == ["fresh.py"]
    assert damaged.status.state == "rebuilt"
    damaged.close()


def test_database_deleted_while_open_is_recreated_on_next_write(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph = open_store(db_path)
    put(graph, "a.py", facts(defs=(definition("area"),)))
    for file in db_path.parent.iterdir():
        file.unlink()
    put(graph, "b.py", facts(defs=(definition("perimeter"),)))
    assert db_path.exists()
    assert graph.status.state == "rebuilt" and "deleted" in graph.status.reason
    assert graph.generation == 1  # tells the indexer a full index is due
    assert [s.definition.name for s in graph.symbols_in("r", "b.py")] == ["perimeter"]
    graph.close()
    reopened = open_store(db_path)
    assert reopened.status.state == "opened"
    assert [s.definition.name for s in reopened.symbols_in("r", "b.py")] == ["perimeter"]
    reopened.close()


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """chmod stops everyone but root; as root (containers, CI) the immutable flag does."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)]).returncode != 0:
        pytest.skip("running as root without a working chattr: cannot make a folder read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_read_only_directory_falls_back_to_memory(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder):
        graph = open_store(folder / "graph.db")
        assert graph.status.state == "memory" and not graph.status.persistent
        put(graph, "a.py", facts(defs=(definition("area"),)))
        assert [s.definition.name for s in graph.definitions("area")] == ["area"]
        graph.close()
        assert not (folder / "graph.db").exists()


def test_existing_database_in_read_only_directory_falls_back_to_memory(db_path: Path) -> None:
    open_store(db_path).close()
    for extra in db_path.parent.glob("graph.db-*"):
        extra.unlink()
    with read_only(db_path.parent):
        graph = open_store(db_path)
        assert graph.status.state == "memory"
        put(graph, "a.py", facts(defs=(definition("area"),)))
        assert graph.stats().files == 1
        graph.close()


def test_uncreatable_location_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    graph = open_store(blocker / "sub" / "graph.db")
    assert graph.status.state == "memory" and "cannot create" in graph.status.reason
    graph.close()


def test_locked_database_falls_back_to_memory(db_path: Path) -> None:
    open_store(db_path).close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        graph = GraphStore.open(db_path, lock_timeout=0.05)
        assert graph.status.state == "memory" and "locked" in graph.status.reason
        put(graph, "a.py", facts(defs=(definition("area"),)))
        assert graph.stats().symbols == 1
        graph.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_in_memory_store_on_request() -> None:
    graph = open_store(None)
    assert graph.status.state == "memory" and graph.status.reason == "requested"
    graph.close()


def test_default_db_path_is_under_xdg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = default_db_path(tmp_path / "proj")
    assert first.is_relative_to(tmp_path / "xdg" / "codeagent-lsp")
    assert first.name.startswith("proj-") and first.suffix == ".db"
    assert default_db_path(tmp_path / "proj") == first
    assert default_db_path(tmp_path / "other" / "proj") != first
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_db_path(tmp_path / "proj").is_relative_to(Path.home() / ".cache")


# --- contents -----------------------------------------------------------------------------------


def test_replace_file_keeps_its_id_and_drops_old_facts(store: GraphStore) -> None:
    first = put(store, "a.py", facts(defs=(definition("old_name"),), refs=("print",)), "old\n")
    second = put(store, "a.py", facts(defs=(definition("new_name"),)), "new\n")
    assert first == second
    assert store.definitions("old_name") == [] and store.search_symbols("old") == []
    assert store.references("print") == []
    assert store.search_windows("old") == []
    assert [s.definition.name for s in store.symbols_in("r", "a.py")] == ["new_name"]
    assert store.file_hash("r", "a.py") == "sha-a.py"
    assert store.file_hash("r", "missing.py") is None


def test_symbols_round_trip(store: GraphStore) -> None:
    method = definition("area", 3, kind="method", doc="The area.", scope="Shape")
    put(store, "shapes.py", facts(defs=(definition("Shape", kind="class"), method)))
    (stored,) = store.definitions("Shape.area")
    assert stored.definition == method
    assert (stored.repo, stored.path, stored.language) == ("r", "shapes.py", "python")
    assert [s.definition.name for s in store.definitions("area")] == ["area"]
    assert [s.definition.name for s in store.symbols_in("r", "shapes.py")] == ["Shape", "area"]


def test_remove_file_and_tree(store: GraphStore) -> None:
    put(store, "pkg/a.py", facts(defs=(definition("a"),)))
    put(store, "pkg/sub/b.py", facts(defs=(definition("b"),)))
    put(store, "pkgx.py", facts(defs=(definition("c"),)))
    assert store.remove_file("r", "pkg/a.py") and not store.remove_file("r", "pkg/a.py")
    assert store.remove_tree("r", "pkg") == 1
    assert [f.path for f in store.files()] == ["pkgx.py"]
    assert store.stats().symbols == 1 and store.search_symbols("b") == []


def test_search_symbols_by_prefix_words_and_doc(store: GraphStore) -> None:
    put(
        store,
        "config.py",
        facts(
            defs=(
                definition("parseConfigFile", doc="Read the settings from disk."),
                definition("parse_args"),
                definition("Parser", kind="class"),
            )
        ),
    )
    names = lambda query: [s.definition.name for s in store.search_symbols(query)]  # noqa: E731
    assert names("parseConf") == ["parseConfigFile"]
    assert names("config") == ["parseConfigFile"]  # a camelCase word, not only the start
    assert names("settings") == ["parseConfigFile"]  # a doc word
    assert set(names("pars")) == {"parseConfigFile", "parse_args", "Parser"}
    assert names("Parser")[0] == "Parser"  # the exact name first
    assert names("args") == ["parse_args"]
    assert names("") == [] and names("zzz") == [] and names('"*') == []
    assert len(store.search_symbols("pars", limit=2)) == 2
    assert all(s.score != 0 for s in store.search_symbols("pars"))


def test_search_windows_ranks_the_similar_file_first(store: GraphStore) -> None:
    query = "def tokenize_expression(source):\n    tokens = lexer.scan(source)\n"
    texts = {
        "query.py": query,
        "similar.py": "def tokenize_statement(source):\n    return lexer.scan(source, tokens)\n",
        "other.py": "def render_html(page):\n    return template.format(page)\n",
        "weak.py": "source = open('x').read()\n",
    }
    for path, text in texts.items():
        put(store, path, facts(), text)
    hits = store.search_windows(query, limit=5, exclude=("r", "query.py"))
    assert hits[0].path == "similar.py"
    assert "query.py" not in [h.path for h in hits]
    assert hits[0].start_line == 0 and hits[0].text.startswith("def tokenize_statement")
    assert hits[0].score > hits[1].score
    assert store.search_windows("", limit=5) == []
    assert store.search_windows("!!!", limit=5) == []


def test_windows_cover_the_file_in_slices(store: GraphStore) -> None:
    text = "".join(f"line_{i} = {i}\n" for i in range(45))
    put(store, "long.py", facts(), text)
    hits = store.search_windows("line_44", limit=3)
    assert (hits[0].start_line, hits[0].end_line) == (40, 44)
    assert store.stats().windows == 3


@pytest.mark.parametrize(
    ("lines", "kept"),
    [
        (None, []),  # the whole file is left out
        (range(0, 45), []),
        (range(19, 20), [20, 40]),  # the last line of the first window
        (range(20, 21), [0, 40]),  # the first line of the second
        (range(5, 25), [40]),  # two windows
        (range(45, 90), [0, 20, 40]),  # after the file's end
        (range(0, 0), [0, 20, 40]),  # no line at all
    ],
)
def test_a_file_can_leave_out_only_the_windows_on_some_of_its_lines(
    store: GraphStore, lines: range | None, kept: list[int]
) -> None:
    put(store, "long.py", facts(), "".join(f"shared_word = {i}\n" for i in range(45)))
    put(store, "other.py", facts(), "shared_word = 0\n")
    hits = store.search_windows("shared_word", 10, ("r", "long.py"), lines)
    assert sorted(h.start_line for h in hits if h.path == "long.py") == kept
    assert [h.path for h in hits].count("other.py") == 1


# --- imports and edges --------------------------------------------------------------------------


def resolved(store: GraphStore, repo: str, path: str) -> list[str | None]:
    return [target.path if target else None for _, target in store.imports_of(repo, path)]


def test_resolve_python_imports(store: GraphStore) -> None:
    for path in (
        "app/__init__.py",
        "app/util.py",
        "app/models/__init__.py",
        "app/models/user.py",
        "src/lib/core.py",
    ):
        put(store, path, facts())
    put(
        store,
        "app/main.py",
        facts(
            imports=(
                Import("app.util"),
                Import("."),
                Import(".", ("util",)),
                Import(".models", ("user",)),
                Import("..outside"),
                Import("os.path"),
                Import("lib.core"),
                Import("app.models"),
            )
        ),
    )
    assert store.resolve_imports() == 6
    assert resolved(store, "r", "app/main.py") == [
        "app/util.py",
        "app/__init__.py",
        "app/util.py",
        "app/models/user.py",
        None,
        None,
        "src/lib/core.py",
        "app/models/__init__.py",
    ]


def test_resolve_js_ts_imports(store: GraphStore) -> None:
    for path in ("web/util.ts", "web/components/index.tsx", "web/lib/math.js", "web/a.mjs"):
        put(store, path, facts("typescript"))
    put(
        store,
        "web/main.ts",
        facts(
            "typescript",
            imports=(
                Import("./util"),
                Import("./components"),
                Import("./lib/math.js"),
                Import("./util.js"),
                Import("react"),
                Import("../../escape"),
                Import("./a.mjs"),
            ),
        ),
    )
    store.resolve_imports()
    assert resolved(store, "r", "web/main.ts") == [
        "web/util.ts",
        "web/components/index.tsx",
        "web/lib/math.js",
        "web/util.ts",
        None,
        None,
        "web/a.mjs",
    ]


def test_resolve_go_imports_by_go_mod_and_by_suffix(store: GraphStore) -> None:
    put(store, "svc/internal/geo/geo.go", facts("go"))
    put(store, "svc/internal/geo/area.go", facts("go"))
    put(store, "svc/internal/geo/geo_test.go", facts("go"))
    put(store, "lib/strutil/s.go", facts("go"), repo="other")
    put(store, "svc/log/log.go", facts("go"))
    store.set_go_modules({"example.com/svc": ("r", "svc")})
    put(
        store,
        "svc/main.go",
        facts(
            "go",
            imports=(
                Import("example.com/svc/internal/geo"),
                Import("github.com/x/lib/strutil"),
                Import("fmt"),
                Import("github.com/y/log"),
            ),
        ),
    )
    store.resolve_imports()
    assert resolved(store, "r", "svc/main.go") == [
        "svc/internal/geo/area.go",
        "lib/strutil/s.go",
        None,
        None,
    ]
    # A Go import is an edge to every non-test file of the package.
    main = store.file_info("r", "svc/main.go")
    targets = {f.id: f.path for f in store.files()}
    import_edges = [e for e in store.edges("import") if e.src_id == main.id]
    assert sorted(targets[e.dst_id] for e in import_edges) == [
        "lib/strutil/s.go",
        "svc/internal/geo/area.go",
        "svc/internal/geo/geo.go",
    ]
    assert sum(e.weight for e in import_edges) == pytest.approx(2.0)


def test_resolve_rust_imports(store: GraphStore) -> None:
    for path in (
        "crate/src/lib.rs",
        "crate/src/geometry.rs",
        "crate/src/geometry/shapes.rs",
        "crate/src/net/mod.rs",
        "crate/src/net/tcp.rs",
    ):
        put(store, path, facts("rust"))
    put(
        store,
        "crate/src/net/http.rs",
        facts(
            "rust",
            imports=(
                Import("crate::geometry::shapes::Circle"),
                Import("crate::geometry"),
                Import("super::tcp::connect"),
                Import("self::inner"),
                Import("serde::Serialize"),
                Import("crate::net::{tcp, udp}"),
                # As extract writes `use a::{b, c}` and `use super::tcp`:
                Import("crate::geometry", ("shapes", "Circle")),
                Import("super", ("tcp",)),
            ),
        ),
    )
    store.resolve_imports()
    assert resolved(store, "r", "crate/src/net/http.rs") == [
        "crate/src/geometry/shapes.rs",
        "crate/src/geometry.rs",
        "crate/src/net/tcp.rs",
        None,
        None,
        "crate/src/net/mod.rs",
        "crate/src/geometry/shapes.rs",
        "crate/src/net/tcp.rs",
    ]


def test_resolve_java_and_c_imports(store: GraphStore) -> None:
    put(store, "src/main/java/com/acme/util/Strings.java", facts("java"))
    put(store, "src/main/java/com/acme/util/Lists.java", facts("java"))
    put(
        store,
        "src/main/java/com/acme/App.java",
        facts(
            "java",
            imports=(
                Import("com.acme.util.Strings"),
                Import("com.acme.util.*"),
                Import("com.acme.util.Strings.join"),
                Import("java.util.List"),
                # As extract writes them:
                Import("com.acme.util", ("Strings",)),
                Import("com.acme.util", ("*",)),
                Import("com.acme.util.Strings", ("join",)),
                Import("java", ("util",)),
            ),
        ),
    )
    put(store, "c/include/geo.h", facts("c"))
    put(store, "c/src/local.h", facts("c"))
    put(
        store,
        "c/src/main.c",
        facts(
            "c",
            imports=(
                Import("local.h"),
                Import("geo.h"),
                Import("stdio.h"),
            ),
        ),
    )
    store.resolve_imports()
    assert (
        resolved(store, "r", "src/main/java/com/acme/App.java")
        == [
            "src/main/java/com/acme/util/Strings.java",
            "src/main/java/com/acme/util/Lists.java",
            "src/main/java/com/acme/util/Strings.java",
            None,
        ]
        * 2
    )
    assert resolved(store, "r", "c/src/main.c") == ["c/src/local.h", "c/include/geo.h", None]


def test_removing_a_target_unresolves_and_readding_resolves(store: GraphStore) -> None:
    put(store, "util.py", facts())
    put(store, "main.py", facts(imports=(Import("util"),)))
    store.resolve_imports()
    assert resolved(store, "r", "main.py") == ["util.py"]
    store.remove_file("r", "util.py")
    assert resolved(store, "r", "main.py") == [None]
    put(store, "util.py", facts())
    store.resolve_imports()
    assert resolved(store, "r", "main.py") == ["util.py"]


def test_reference_edges(store: GraphStore) -> None:
    put(store, "shapes.py", facts(defs=(definition("area"), definition("helper"))))
    put(store, "other.py", facts(defs=(definition("area"),)))
    put(
        store,
        "main.py",
        facts(
            refs=("area", "area", "helper", "local", "print"),
            defs=(definition("local"),),
            imports=(Import("shapes"),),
        ),
    )
    put(store, "loose.py", facts(refs=("area",)))
    ids = {f.path: f.id for f in store.files()}
    symbol_file = {s.id: s.path for p in ids for s in store.symbols_in("r", p)}
    references = {
        (e.src_id, symbol_file[e.dst_id], e.weight) for e in store.edges("reference")
    }  # edges() resolves first: they were dirty
    assert references == {
        (ids["main.py"], "shapes.py", 2.0),  # the imported file's `area` wins
        (ids["main.py"], "shapes.py", 1.0),  # helper
        (ids["loose.py"], "shapes.py", 0.5),  # no import: both candidates, half each
        (ids["loose.py"], "other.py", 0.5),
    }
    assert [(e.src_id, e.dst_id) for e in store.edges("import")] == [
        (ids["main.py"], ids["shapes.py"])
    ]
    assert store.stats().edges == 5


def test_too_common_names_make_no_edges(store: GraphStore, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_module, "MAX_REFERENCE_CANDIDATES", 2)
    for i in range(3):
        put(store, f"d{i}.py", facts(defs=(definition("get"),)))
    put(store, "use.py", facts(refs=("get",)))
    assert store.edges("reference") == []


def test_stats(store: GraphStore) -> None:
    put(
        store,
        "a.py",
        facts(defs=(definition("f"), definition("g")), refs=("f",), imports=(Import("b"),)),
        "x = 1\n",
    )
    stats = store.stats()
    assert (stats.files, stats.symbols, stats.references, stats.imports) == (1, 2, 1, 1)
    assert stats.windows == 1


def edge_set(store: GraphStore) -> set[tuple[str, int, str, int, str, float]]:
    return {
        (e.src_kind, e.src_id, e.dst_kind, e.dst_id, e.type, round(e.weight, 6))
        for e in store.edges()
    }


def test_incremental_edges_match_a_full_rebuild(store: GraphStore) -> None:
    put(store, "shapes.py", facts(defs=(definition("area"), definition("Shape"))))
    put(store, "other.py", facts(defs=(definition("area"),), refs=("Shape",)))
    put(store, "main.py", facts(refs=("area", "Shape"), imports=(Import("shapes"),)))
    store.resolve_imports(full=True)
    steps = [
        lambda: put(store, "shapes.py", facts(defs=(definition("volume"),))),
        lambda: put(store, "util.py", facts(defs=(definition("area"), definition("Shape")))),
        lambda: put(store, "main.py", facts(refs=("area", "volume"), imports=(Import("util"),))),
        lambda: store.remove_file("r", "util.py"),
        lambda: put(store, "shapes.py", facts(defs=(definition("area"),), refs=("volume",))),
    ]
    for step in steps:
        step()
        incremental = edge_set(store)  # edges() refreshes only what changed
        store.resolve_imports(full=True)
        assert incremental == edge_set(store)


UPDATED = "".join(
    f"def step_{i}(value):\n    return helper(value) + step_{max(i - 1, 0)}(value)\n\n"
    for i in range(30)
)


def contents(store: GraphStore) -> tuple[list[tuple], list[tuple]]:
    """The file's references and windows, as rows (ids aside)."""
    refs = store.db.execute(
        "SELECT name, kind, scope, line, col, end_col FROM refs ORDER BY 1, 2, 3, 4, 5, 6"
    ).fetchall()
    windows = store.db.execute(
        "SELECT start_line, end_line, text FROM windows ORDER BY 1"
    ).fetchall()
    return refs, windows


@settings(max_examples=30, deadline=None)
@given(edits=splices(len(UPDATED), "helpr_(v)\n ", removed=40, inserted=30, edits=4))
def test_an_updated_file_holds_what_a_first_write_of_its_text_would(edits) -> None:
    """Updates write only the references and windows that differ; what is stored (and what
    the FTS index finds) is the same as when the text is written at once."""
    updated, fresh = open_store(None), open_store(None)
    text = UPDATED
    put(updated, "a.py", extract(text.encode(), "python"), text)
    for edit in edits:
        text = apply(text, edit)
        put(updated, "a.py", extract(text.encode(), "python"), text)
    put(fresh, "a.py", extract(text.encode(), "python"), text)
    assert contents(updated) == contents(fresh)
    for table in ("windows_fts", "symbols_fts"):  # the index matches its rows
        updated.db.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")
    for word in ("helper", "step_29", "helpr"):
        found = [(h.start_line, h.text) for h in updated.search_windows(word, limit=10)]
        assert found == [(h.start_line, h.text) for h in fresh.search_windows(word, limit=10)]
