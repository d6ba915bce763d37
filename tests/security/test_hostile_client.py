"""A hostile client of a shared node (TLS, bearer tokens) chooses no path on the node and
nothing that runs there: repositories are the node's, selected by name and checked against the
role; model, engine, cache folders, logging and inference settings are the node's; a role that
may not use the model loads none."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_node import Client, connect, frame, listening_port, node_settings, tls_files

__all__ = ["tls_files"]  # a fixture, shared with the node tests

TOKENS = {"contractor": "contractor-token-0123456789", "viewer": "viewer-token-0123456789",
          "admin": "admin-token-0123456789"}  # fmt: skip
PER_ADDRESS = 6
CLIENT_ROOT = Path("/home/alice/work")
"""Where the client's checkouts are: no such folder exists on the node."""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    lines = [
        f'[audit]\ndb = "{tmp_path / "audit.sqlite3"}"\n',
        '[roles.contractor]\nfeatures = ["completion", "hover", "navigation", "index", "stats"]'
        '\nrepositories = ["public-*"]\n',
    ]
    for name, token in TOKENS.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        lines.append(f'[[token]]\nname = "{name}"\nsha256 = "{digest}"\nrole = "{name}"\n')
    path.write_text("\n".join(lines))
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """The node's repositories (public-a, secret-b) and a folder of its own (public-x)."""
    repos = tmp_path / "repos"
    write(repos / "public-a" / "app.py", 'def public_function():\n    """Public words."""\n')
    write(repos / "secret-b" / "lib.py", 'def secret_function():\n    """SECRET WORDS."""\n')
    own = write(tmp_path / "own" / "public-x" / "code.py", "def node_private_function(): ...\n")
    return {"repos": repos, "own": own.parent}


@pytest.fixture
async def node(
    tls_files: tuple[Path, Path], policy: Path, tmp_path: Path, tiny_model: Path, folders
) -> AsyncIterator[tuple[int, Path]]:
    cert, key = tls_files
    env = {**os.environ, "CODEAGENT_POLICY": str(policy), "XDG_CACHE_HOME": str(tmp_path)}
    log = tmp_path / "node.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "codeagent_lsp", "--tcp", "127.0.0.1:0",
         "--tls-cert", str(cert), "--tls-key", str(key), "--log-file", str(log),
         *node_settings(tiny_model, folders["repos"]), "--auth-timeout", "2",
         "--max-connections-per-address", str(PER_ADDRESS)],
        env=env, cwd=tmp_path,
    )  # fmt: skip
    yield await listening_port(process, log), log
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


class Session(Client):
    """A client that keeps the server's notifications (window/showMessage) it reads past."""

    def __init__(self, client: Client) -> None:
        super().__init__(client.reader, client.writer)
        self.told: list[str] = []

    async def read(self) -> dict[str, Any]:
        message = await super().read()
        if message.get("method") == "window/showMessage":
            self.told.append(message["params"]["message"])
        return message

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.writer.write(frame({"jsonrpc": "2.0", "method": method, "params": params}))

    async def ready(self) -> dict[str, Any]:
        """Stats once the CodeGraph is indexed."""
        while True:
            stats = (await self.request("codeagent/stats"))["result"]
            if stats.get("codegraph", {}).get("ready"):
                return stats
            await asyncio.sleep(0.1)


async def session(port: int, cert: Path, who: str, folders: list[dict[str, str]], **options):
    client = Session(await connect(port, cert))
    params = {"processId": None, "capabilities": {"window": {"showMessage": {}}},
              "workspaceFolders": folders, "initializationOptions": options}  # fmt: skip
    answer = await client.request("initialize", params, TOKENS[who])
    assert "result" in answer, answer
    client.notify("initialized", {})
    return client


def folder(path: Path, name: str | None = None) -> dict[str, str]:
    return {"uri": path.as_uri(), "name": name or path.name}


def symbols(answer: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["location"]["uri"] for s in answer["result"] or []}


async def test_workspace_folders_select_the_nodes_repositories_by_name_and_role(
    node, tls_files, folders, tmp_path: Path
) -> None:
    port, _ = node
    chosen = [
        folder(CLIENT_ROOT / "public-a"),  # a repository of the node, open to the role
        folder(folders["own"]),  # a folder of the node's own, named like a public repository
        folder(CLIENT_ROOT / "secret-b"),  # a repository of the node the role may not use
        folder(CLIENT_ROOT / "anything", "../secret-b"),  # a name that is a path
        {"uri": (CLIENT_ROOT / "public-a").as_uri() + "/../x", "name": "climbing"},
    ]
    client = await session(port, tls_files[0], "contractor", chosen)
    await client.ready()
    found = symbols(await client.request("workspace/symbol", {"query": "function"}))
    # Only public-a is served, and it is named in the client's own paths.
    assert found == {"public_function": (CLIENT_ROOT / "public-a" / "app.py").as_uri()}
    told = "\n".join(client.told)
    assert "public-x is not served: this node has no repository 'public-x'" in told
    assert "secret-b is not served: repository 'secret-b' is not open" in told
    assert "climbing is not served: the path climbs out of its folder (..)" in told
    assert str(folders["repos"]) not in told and str(folders["own"]) not in told

    # A document under the client's folder arrives as text; navigation answers in its paths.
    uri = (CLIENT_ROOT / "public-a" / "use.py").as_uri()
    text = "from app import public_function\npublic_function()\n"
    document = {"uri": uri, "languageId": "python", "version": 1, "text": text}
    client.notify("textDocument/didOpen", {"textDocument": document})
    position = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 3}}
    hover = await client.request("textDocument/hover", position)
    assert "Public words." in str(hover["result"]), hover
    definition = await client.request("textDocument/definition", position)
    assert (CLIENT_ROOT / "public-a" / "app.py").as_uri() in str(definition["result"])
    assert str(folders["repos"]) not in str(definition) + str(hover)

    # The node's own file, named by its node path, is outside the client's workspace.
    own = (folders["own"] / "code.py").as_uri()
    document = {"uri": own, "languageId": "python", "version": 1, "text": "node_private_function"}
    client.notify("textDocument/didOpen", {"textDocument": document})
    at = {"textDocument": {"uri": own}, "position": {"line": 0, "character": 3}}
    refused = await client.request("textDocument/hover", at)
    assert "error" in refused and "outside the workspace" in refused["error"]["message"]
    await client.request("shutdown")
    client.writer.close()
    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
        repositories = {r for (r,) in db.execute("SELECT DISTINCT repository FROM audit")}
    assert repositories <= {None, "public-a"}, repositories


async def test_a_viewer_sets_no_path_engine_cache_or_log_on_the_node(
    node, tls_files, tmp_path: Path
) -> None:
    port, log = node
    text_file = write(tmp_path / "notes.txt", "TOPSECRET-BYTES of a file on the node\n")
    options = {
        "model": str(text_file),
        "modelsDir": str(tmp_path),
        "engine": {"contextSize": 500000, "threads": 64},
        "codegraph": {"cacheDir": str(tmp_path / "written-by-client")},
        "logging": {"level": "debug", "logCode": True},
        "remote": {"urls": ["http://127.0.0.1:9"], "tokenEnv": "HOME"},
    }
    viewer = await session(
        port, tls_files[0], "viewer", [folder(CLIENT_ROOT / "public-a")], **options
    )
    stats = await viewer.ready()
    # No engine for a role without completion rights: nothing loaded, nothing tried.
    assert stats["model"] is None and stats["problem"] is None, stats
    told = "\n".join(viewer.told)
    for key in ("model", "modelsDir", "engine", "codegraph.cacheDir", "logging", "remote"):
        assert f"codeagent.{key}: set by the node" in told, told
    assert "TOPSECRET" not in told
    await viewer.request("workspace/symbol", {"query": "public"})
    assert not (tmp_path / "written-by-client").exists()
    assert " DEBUG " not in log.read_text()

    # The admin's completion runs on the node's engine, which the viewer never joined.
    admin = await session(port, tls_files[0], "admin", [folder(CLIENT_ROOT / "public-a")])
    uri = (CLIENT_ROOT / "public-a" / "new.py").as_uri()
    document = {"uri": uri, "languageId": "python", "version": 1, "text": "def f():\n    return "}
    admin.notify("textDocument/didOpen", {"textDocument": document})
    params = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}}
    assert "result" in await admin.request("textDocument/completion", params)
    shared = (await admin.request("codeagent/stats"))["result"]["shared"]
    assert shared == {"engine": 1, "clients": 1, "loads": 1}, shared


async def closed_by_server(client: Client, guard_s: float = 60) -> bool:
    """Does the server close this connection (EOF) within `guard_s`?"""
    try:
        return await asyncio.wait_for(client.reader.read(), guard_s) == b""
    except TimeoutError:  # an OSError too: caught first
        return False
    except (ConnectionError, OSError):
        return True


async def connected(port: int, cert: Path) -> Client:
    """A TLS connection, or a closed one when the node turns it away before its handshake."""
    try:
        return await connect(port, cert)
    except (ConnectionError, ssl.SSLError):
        reader = asyncio.StreamReader()
        reader.feed_eof()
        return Client(reader, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("tls", [True, False])
async def test_idle_connections_are_closed_and_capped_per_address(
    node, tls_files, tls: bool
) -> None:
    """Idle after the TLS handshake, or never starting one (a plain TCP connection to the TLS
    port): past the cap at once, and after --auth-timeout (2 s) the others. A node that ran the
    handshake before counting held those for the handshake's 60 s, past the 30 s guard."""
    port, _ = node
    if tls:
        idle = [await connected(port, tls_files[0]) for _ in range(PER_ADDRESS + 2)]
    else:
        idle = [Client(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(40)]
    assert all(await asyncio.gather(*(closed_by_server(c, 30) for c in idle)))
    # A client that authenticates is served afterwards: the idle ones hold nothing.
    client = await session(port, tls_files[0], "contractor", [folder(CLIENT_ROOT / "public-a")])
    assert "result" in await client.request("codeagent/stats")


async def test_a_huge_symbol_query_is_bounded(node, tls_files) -> None:
    port, _ = node
    client = await session(port, tls_files[0], "contractor", [folder(CLIENT_ROOT / "public-a")])
    await client.ready()
    query = " ".join(f"w{i}" for i in range(10_000)) + " public"
    answer = await asyncio.wait_for(client.request("workspace/symbol", {"query": query}), 120)
    assert answer["result"] == []  # only the first words count, and no symbol has them all
    found = await client.request("workspace/symbol", {"query": "public"})
    assert [s["name"] for s in found["result"]] == ["public_function"]


def edit(line: int, character: int, text: str) -> dict[str, Any]:
    at = {"line": line, "character": character}
    return {"range": {"start": at, "end": at}, "text": text}


async def test_one_clients_huge_document_and_edits_do_not_stall_another(node, tls_files) -> None:
    """A client opens a 4 MB single-line document, edits the end of that line, then sends one
    didChange of 30,000 edits. The node applies them off the event loop, in order: another
    client's hover, sent once they are all on their way, is answered before the first client's
    next request, which waits for its own edits. On a node that did this work on the shared
    event loop, that next request came first and the hover waited for all of it."""
    port, _ = node
    public = CLIENT_ROOT / "public-a"
    calm = await session(port, tls_files[0], "contractor", [folder(public)])
    hostile = await session(
        port, tls_files[0], "admin", [folder(public)], completion={"warm": False}
    )
    await calm.ready()
    await hostile.ready()
    use = (public / "use.py").as_uri()
    text = "from app import public_function\npublic_function()\n"
    calm.notify("textDocument/didOpen", {"textDocument": {"uri": use, "languageId": "python",
                                                          "version": 1, "text": text}})  # fmt: skip
    position = {"textDocument": {"uri": use}, "position": {"line": 1, "character": 3}}
    assert "Public words." in str((await calm.request("textDocument/hover", position))["result"])

    huge, burst = (public / "huge.py").as_uri(), (public / "burst.py").as_uri()
    line = "x = [" + "1, " * 1_333_330 + "]"  # 4,000,000 bytes on one line
    for uri, text in ((huge, line), (burst, "value = 1\n" * 50)):
        document = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        hostile.notify("textDocument/didOpen", {"textDocument": document})
    end = [edit(0, len(line) + i, "#") for i in range(3)]
    many = [edit(0, 0, "y") for _ in range(30_000)]
    for version, (uri, changes) in enumerate(((huge, end), (burst, many)), start=2):
        params = {"textDocument": {"uri": uri, "version": version}, "contentChanges": changes}
        hostile.notify("textDocument/didChange", params)
    stats_id = next(hostile.ids)
    request = {"jsonrpc": "2.0", "id": stats_id, "method": "codeagent/stats", "params": None}
    hostile.writer.write(frame(request))
    await hostile.writer.drain()

    order: list[str] = []

    async def answered(name: str, reply) -> dict[str, Any]:
        message = await reply
        order.append(name)
        return message

    hover, stats = await asyncio.wait_for(
        asyncio.gather(
            answered("hover", calm.request("textDocument/hover", position)),
            answered("stats", hostile.answer(stats_id)),
        ),
        300,  # a guard against a hang, not a measure
    )
    assert order == ["hover", "stats"]
    assert "Public words." in str(hover["result"]) and "result" in stats
    # The edits were all applied, in order: the first line is now 30,000 y's longer.
    outline = await hostile.request("textDocument/documentSymbol", {"textDocument": {"uri": burst}})
    assert outline["result"][0]["name"] == "y" * 30_000 + "value", outline


USE = "from app import public_function\npublic_function()\n"


async def calm_and_hostile(port: int, cert: Path) -> tuple[Session, Session, dict[str, Any]]:
    """A calm client (its hover on use.py answered once) and a hostile one, on public-a."""
    public = CLIENT_ROOT / "public-a"
    calm = await session(port, cert, "contractor", [folder(public)])
    hostile = await session(port, cert, "admin", [folder(public)], completion={"warm": False})
    await calm.ready()
    use = (public / "use.py").as_uri()
    document = {"uri": use, "languageId": "python", "version": 1, "text": USE}
    calm.notify("textDocument/didOpen", {"textDocument": document})
    position = {"textDocument": {"uri": use}, "position": {"line": 1, "character": 3}}
    assert "Public words." in str((await calm.request("textDocument/hover", position))["result"])
    return calm, hostile, position


async def flood(hostile: Session, uri: str, source: str, method: str, params: list[dict]) -> list:
    """The hostile client opens `source` as `uri` and sends one `method` request per params;
    their ids."""
    document = {"uri": uri, "languageId": "python", "version": 1, "text": source}
    hostile.notify("textDocument/didOpen", {"textDocument": document})
    ids = []
    for each in params:
        ids.append(next(hostile.ids))
        request = {"jsonrpc": "2.0", "id": ids[-1], "method": method, "params": each}
        hostile.writer.write(frame(request))
    await hostile.writer.drain()
    return ids


async def hover_among(
    calm: Session, position: dict[str, Any], hostile: Session, ids: list[int]
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Reads the hostile client's answers to `ids` and sends the calm client's hover once the
    first is in (the node works on the rest then): (how many of them were answered before the
    hover, the hover's answer, the answers by id)."""
    order: list[str] = []
    started = asyncio.Event()

    async def answers() -> list[dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        while len(found) < len(ids):  # in any order
            message = await hostile.read()
            if message.get("id") in ids and "method" not in message:
                found[message["id"]] = message
                order.append("answer")
                started.set()
        return [found[i] for i in ids]

    async def hover() -> dict[str, Any]:
        await started.wait()
        answer = await calm.request("textDocument/hover", position)
        order.append("hover")
        return answer

    hovered, found = await asyncio.wait_for(asyncio.gather(hover(), answers()), 600)  # a guard
    return order.index("hover"), hovered, found


async def test_one_clients_code_actions_on_a_huge_document_do_not_stall_another(
    node, tls_files
) -> None:
    """A document of 100,000 functions and 25 code actions on it: the node parses the opened
    document (next edits' baseline) and the code at each action's range on the client's own
    heavy lane, one at a time, off the event loop. Another client's hover, sent once the first
    action is answered, comes before most of the others. On a node that parsed the opened
    document on the shared event loop and the actions on four threads of that client (GIL-bound
    Python all), the hover came after 24 of the 25."""
    calm, hostile, position = await calm_and_hostile(node[0], tls_files[0])
    many = (CLIENT_ROOT / "public-a" / "many.py").as_uri()
    source = "".join(f"def f{i}():\n    pass\n" for i in range(100_000))
    params = []
    for line in range(0, 200_000, 8_000):
        at = {"line": line, "character": 0}
        params.append({"textDocument": {"uri": many}, "range": {"start": at, "end": at},
                       "context": {"diagnostics": []}})  # fmt: skip
    ids = await flood(hostile, many, source, "textDocument/codeAction", params)
    before, hovered, answers = await hover_among(calm, position, hostile, ids)
    assert before <= len(ids) // 2, f"the hover came after {before} of {len(ids)} actions"
    assert "Public words." in str(hovered["result"])
    titles = [[a["title"] for a in answer["result"]] for answer in answers]
    assert [t for t in titles[19] if t.startswith("Add docstring")] == ["Add docstring to f76000"]


async def test_one_clients_document_symbols_of_a_large_document_do_not_stall_another(
    node, tls_files
) -> None:
    """A second heavy kind: a document of 40,000 functions (under codegraph.maxFileBytes, so
    the CodeGraph indexes it as it opens) and 12 outlines of it, each a parse of the whole
    document. Another client's hover, sent once the first outline is answered, comes before
    the third: the client's outlines take its heavy lane one at a time. On a node that ran
    them four at a time on that client's threads, they were answered in fours, and the hover
    after four of them (on the same 2-core machine where this node answers it after one)."""
    calm, hostile, position = await calm_and_hostile(node[0], tls_files[0])
    large = (CLIENT_ROOT / "public-a" / "large.py").as_uri()
    source = "".join(f"def g{i}():\n    pass\n" for i in range(40_000))
    params = [{"textDocument": {"uri": large}}] * 12
    ids = await flood(hostile, large, source, "textDocument/documentSymbol", params)
    before, hovered, answers = await hover_among(calm, position, hostile, ids)
    assert before <= 2, f"the hover came after {before} of {len(ids)} outlines"
    assert "Public words." in str(hovered["result"])
    assert all(len(a["result"]) == 2000 for a in answers)  # navigation.MAX_DOCUMENT_SYMBOLS
