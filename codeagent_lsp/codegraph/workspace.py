"""The CodeGraph of one workspace: store, indexer and graph behind one small API, in the terms
the features need (absolute paths, names at a cursor). Thread-safe: the store serialises its
own access, so queries may run while `index_all` works in another thread."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from codeagent_lsp.codegraph.graph import REASONS, CodeGraph, Snippet
from codeagent_lsp.codegraph.indexer import Indexer, IndexSummary, default_workers
from codeagent_lsp.codegraph.languages import language_for
from codeagent_lsp.codegraph.live import LiveTrees
from codeagent_lsp.codegraph.store import (
    GraphStore,
    StoredReference,
    StoredSymbol,
    WindowHit,
    default_db_path,
)
from codeagent_lsp.security.paths import PathPolicy
from codeagent_lsp.security.policy import policy_in_force
from codeagent_lsp.security.roots import link_names
from codeagent_lsp.settings import CodegraphSettings


class InFile(Protocol):
    """Anything found in a file of the workspace: a snippet, a window, a reference, a section."""

    @property
    def repo(self) -> str: ...

    @property
    def path(self) -> str: ...


Found = TypeVar("Found", bound=InFile)


@dataclass(frozen=True)
class Location:
    path: Path
    line: int
    col: int
    end_line: int
    end_col: int


class WorkspaceIndex:
    def __init__(
        self,
        roots: list[tuple[str, Path]],
        settings: CodegraphSettings,
        denied: PathPolicy | None = None,
    ) -> None:
        """`denied`: what is never indexed, whatever `settings.exclude` and .gitignore files
        say (default: the secrets and the policy's [index] rules)."""
        self.roots = roots
        primary = roots[0][1] if roots else Path.cwd()
        db_path = default_db_path(primary)
        if settings.cacheDir:
            db_path = Path(settings.cacheDir).expanduser() / db_path.name
        self.store = GraphStore.open(db_path)
        # Secrets (.env, keys, credentials) are never indexed, whatever the settings say.
        self.indexer = Indexer(
            self.store,
            roots,
            max_file_bytes=settings.maxFileBytes,
            exclude_globs=settings.exclude,
            denied=denied or policy_in_force().index.path_policy(),
            workers=default_workers(),
        )
        self.graph = CodeGraph(self.store)
        self.live = LiveTrees()
        self._may_prompt: Callable[[str, str], bool] = policy_in_force().may_prompt
        self._generation = self.store.generation

    def lost_its_data(self) -> bool:
        """The database was rebuilt (deleted, corrupted) since the last full index: what it
        held is gone and the workspace must be indexed again."""
        return self.store.generation != self._generation

    def close(self) -> None:
        self.store.close()

    # --- keeping it current ---------------------------------------------------------------------

    def set_roots(self, roots: list[tuple[str, Path]]) -> None:
        """Workspace folders added or removed at run time: what a removed root held leaves the
        index now; `index_all` then indexes the roots that were added."""
        gone = {repo for repo, _ in self.roots} - {repo for repo, _ in roots}
        self.roots = roots
        self.indexer.set_roots(roots)
        for repo in gone:
            self.store.remove_tree(repo, "")
        self.graph.invalidate()

    def index_all(
        self,
        progress: Callable[[int, int, str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> IndexSummary:
        self._generation = self.store.generation
        summary = self.indexer.index_all(progress, cancelled)
        self.graph.invalidate()
        return summary

    def document_changed(self, path: Path, text: str) -> None:
        """An open document's new text: parsed incrementally from its previous tree. One over
        the size limit is not parsed at all (as a file on disk: `Indexer.max_file_bytes`)."""
        located = self.indexer.root_for(path)
        language = language_for(path)
        if not located or language is None:
            return
        source = text.encode("utf-8", errors="surrogatepass")
        if len(source) > self.indexer.max_file_bytes:
            self.live.forget(str(path))
            return
        tree, _ = self.live.update(str(path), source, language)
        if self.indexer.update_text(*located, text, tree):
            self.graph.invalidate()

    def document_closed(self, path: Path) -> None:
        self.live.forget(str(path))
        located = self.indexer.root_for(path)
        if located and self.indexer.close_text(*located):  # the disk is the truth again
            self.graph.invalidate()

    def file_changed(self, path: Path) -> None:
        if self.indexer.update_path(path):
            self.graph.invalidate()

    def file_deleted(self, path: Path) -> None:
        if self.indexer.remove_path(path):
            self.graph.invalidate()

    # --- queries --------------------------------------------------------------------------------

    def absolute(self, repo: str, path: str) -> Path | None:
        return next((root / path for name, root in self.roots if name == repo), None)

    def locate(self, path: Path) -> tuple[str, str] | None:
        return self.indexer.root_for(path)

    def may_prompt(self, repo: str, path: str) -> bool:
        """May the text of (repository, posix path) go into a prompt? The policy's [prompt]
        rules, for the path and, when the file is a symlink, for the file it names (its text);
        `for_prompt` applies them."""
        folder = self.absolute(repo, "")
        names = link_names(folder, path) if folder is not None else (path,)
        return all(self._may_prompt(repo, name) for name in names)

    def definitions(self, name: str, near: Path | None = None) -> list[StoredSymbol]:
        """Definitions of `name` in the asking file's language family, best first: the file
        itself, the files it imports, then by how much of its folder path they share."""
        found = self.store.definitions(name)
        here = self.locate(near) if near else None
        if here is None:
            return found
        family = _family(language_for(here[1]))
        same = [s for s in found if _family(s.language) == family]
        imported = {f.id for _, f in self.store.imports_of(*here) if f is not None}
        folder = here[1].split("/")[:-1]
        same.sort(
            key=lambda s: (
                (s.repo, s.path) != here,
                s.file_id not in imported,
                s.repo != here[0],
                -_shared_prefix(folder, s.path.split("/")[:-1]),
                s.path,
                s.definition.span.start_line,
            )
        )
        return same

    def references(self, name: str) -> list[StoredReference]:
        return self.store.references(name)

    def search(self, query: str, limit: int = 50) -> list[StoredSymbol]:
        return self.store.search_symbols(query, limit)

    def for_prompt(self, found: Iterable[Found]) -> list[Found]:
        """What was found, less what lies in a file that may not go into a prompt: the one
        filter every prompt's repository context passes (completion and each code action)."""
        return [item for item in found if self.may_prompt(item.repo, item.path)]

    def related(
        self,
        path: Path,
        text: str,
        line: int,
        budget: int,
        count: Callable[[str], int],
        reasons: Collection[str] = REASONS,
    ) -> list[Snippet]:
        """Context for a prompt at `line` of `path` (graph.related), only from files that may
        go into a prompt."""
        located = self.locate(path)
        if located is None:
            return []
        found = self.graph.related(*located, text, line, budget, count, reasons)
        return self.for_prompt(found)

    def similar_windows(
        self,
        query: str,
        limit: int,
        exclude: tuple[str, str] | None,
        exclude_lines: range | None = None,
    ) -> list[WindowHit]:
        """Code windows like `query` (store.search_windows, with its `exclude` and
        `exclude_lines`) from files that may go into a prompt."""
        found = self.store.search_windows(query, limit * 4, exclude, exclude_lines)
        return self.for_prompt(found)[:limit]

    def symbol_location(self, symbol: StoredSymbol, *, name_only: bool = False) -> Location | None:
        root = self.absolute(symbol.repo, symbol.path)
        if root is None:
            return None
        span = symbol.definition.name_span if name_only else symbol.definition.span
        return Location(root, span.start_line, span.start_col, span.end_line, span.end_col)

    def reference_location(self, ref: StoredReference) -> Location | None:
        root = self.absolute(ref.repo, ref.path)
        if root is None:
            return None
        span = ref.reference.span
        return Location(root, span.start_line, span.start_col, span.end_line, span.end_col)


_FAMILIES = {"javascript": "ecma", "typescript": "ecma", "tsx": "ecma", "c": "c", "cpp": "c"}


def _family(language: str | None) -> str | None:
    """Languages whose files import each other (JS and TS; C and C++) form one family."""
    return _FAMILIES.get(language or "", language)


def _shared_prefix(a: list[str], b: list[str]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count
