"""Parked KV slots on the tiny GGUF: an evicted, closed or shut-down document's KV cache goes to
disk and comes back with the document, also in another process; a damaged or foreign file is
ignored and deleted; the folder is private and capped."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from codeagent_lsp.assistant import Assistant, Suggestion
from codeagent_lsp.engine.backend import Generation
from codeagent_lsp.engine.engine import Engine, GenerationJob
from codeagent_lsp.engine.parking import MAGIC, SlotPark, Speeds, fingerprint
from codeagent_lsp.security.policy import parse
from codeagent_lsp.settings import EngineSettings, Settings, merge
from tests.conftest import PROJECTS
from tests.test_engine import CODE, SUFFIX_CODE

WAIT = 60.0
PRINT = fingerprint("0" * 64, "auto", "cpu")


@pytest.fixture
def make_engine(tiny_model: Path, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Engines on the tiny model parking into one folder (one slot: a second document evicts)."""
    engines: list[Engine] = []

    def make(max_bytes: int = 1 << 30, slots: int = 1) -> Engine:
        park = SlotPark(tmp_path / "kv", PRINT, max_bytes=max_bytes)
        settings = EngineSettings(threads=1, slots=slots, contextSize=2048)
        engine = Engine(tiny_model, settings, park=park)
        engine.wait_loaded(timeout=WAIT)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def generate(engine: Engine, key: str, tokens: list[int]) -> Generation:
    return engine.submit(GenerationJob(key, tokens, max_tokens=6)).result(timeout=WAIT)


def test_an_evicted_document_comes_back_from_disk(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a, b = engine.tokenize(CODE), engine.tokenize(SUFFIX_CODE * 3)
    first = generate(engine, "a.py", a)
    generate(engine, "b.py", b)  # one slot: a.py is evicted, and parked
    back = generate(engine, "a.py", a)
    assert back.record.restored_tokens > len(a) // 2
    assert back.record.evaluated_tokens == 1  # only the last prompt token, as when cached
    assert back.text == first.text  # the restored KV cache answers exactly as the first


def test_parked_slots_survive_a_restart(make_engine: Callable[..., Engine]) -> None:
    before = make_engine(slots=2)
    a = before.tokenize(CODE)
    first = generate(before, "a.py", a)
    before.close()  # parks every slot
    after = make_engine(slots=2)
    again = generate(after, "a.py", a)
    assert again.record.restored_tokens and again.record.evaluated_tokens == 1
    assert again.text == first.text


def test_a_short_slot_or_an_unrelated_prompt_is_not_restored(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine()
    generate(engine, "a.py", engine.tokenize(CODE))
    generate(engine, "b.py", engine.tokenize("x = 1\n"))  # evicts a.py; too short to park
    other = engine.tokenize(SUFFIX_CODE * 3)
    assert generate(engine, "a.py", other).record.restored_tokens == 0  # a.py changed whole
    assert generate(engine, "b.py", other).record.restored_tokens == 0


def _corruptions() -> dict[str, Callable[[bytes], bytes]]:
    def header_edit(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
        def apply(data: bytes) -> bytes:
            start = len(MAGIC) + 4
            size = int.from_bytes(data[len(MAGIC) : start], "big")
            header = json.loads(data[start : start + size])
            edit(header)
            new = json.dumps(header).encode()
            return MAGIC + len(new).to_bytes(4, "big") + new + data[start + size :]

        return apply

    return {
        "truncated": lambda d: d[: len(d) - 100],
        "flipped payload byte": lambda d: d[:-50] + bytes([d[-50] ^ 0xFF]) + d[-49:],
        "other magic": lambda d: b"X" + d[1:],
        "empty": lambda d: b"",
        "garbage header": lambda d: MAGIC + (5).to_bytes(4, "big") + b"{nope" + d[-64:],
        "other model": header_edit(lambda h: h.update(fingerprint="f" * 32)),
        "other document": header_edit(lambda h: h.update(key="0" * 32)),
        "tokens edited": header_edit(lambda h: h["tokens"].__setitem__(3, 7)),
    }


@pytest.mark.parametrize("damage", sorted(_corruptions()))
def test_a_corrupt_or_foreign_file_is_ignored_and_deleted(tmp_path: Path, damage: str) -> None:
    park = SlotPark(tmp_path, PRINT, max_bytes=1 << 20)
    park.park("a.py", list(range(100)), bytes(range(256)) * 4)
    (path,) = park.folder.glob("*.kv")
    path.write_bytes(_corruptions()[damage](path.read_bytes()))
    assert park.take("a.py") is None
    assert not path.exists()


def test_the_folder_is_private_and_writes_are_atomic(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    root.mkdir(mode=0o755)
    park = SlotPark(root, PRINT, max_bytes=1 << 20)
    park.park("a.py", list(range(40)), b"state" * 100)
    assert stat.S_IMODE(root.stat().st_mode) == stat.S_IMODE(park.folder.stat().st_mode) == 0o700
    files = list(park.folder.iterdir())
    assert len(files) == 1 and files[0].suffix == ".kv"  # no temporary file left behind
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    taken = park.take("a.py")
    assert taken is not None and taken.tokens == list(range(40)) and taken.state == b"state" * 100


def test_the_size_cap_evicts_the_least_recently_used(tmp_path: Path) -> None:
    park = SlotPark(tmp_path, PRINT, max_bytes=1 << 20)
    for age, key in ((30, "old.py"), (20, "used.py"), (10, "new.py")):
        park.park(key, list(range(40)), bytes(1000))
        path = park._file(key)
        os.utime(path, (0, path.stat().st_mtime - age))
    one_file = path.stat().st_size
    park.max_bytes = 3 * one_file  # room for three
    park.take("used.py")  # used again: now the most recent
    park.park("newest.py", list(range(40)), bytes(1000))
    assert park.take("old.py") is None
    assert all(park.take(k) is not None for k in ("used.py", "new.py", "newest.py"))


def test_an_age_cap_drops_old_files(tmp_path: Path) -> None:
    park = SlotPark(tmp_path, PRINT, max_bytes=1 << 20, max_age_s=3600)
    park.park("a.py", list(range(40)), bytes(100))
    (path,) = park.folder.glob("*.kv")
    os.utime(path, (0, path.stat().st_mtime - 7200))
    assert park.take("a.py") is None and not path.exists()


def test_the_policy_can_turn_parking_off_or_cap_its_age(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[cache]\npark_kv_slots = false\npark_max_age_hours = 12\n")
    rules = parse(policy).cache
    assert (rules.park_kv_slots, rules.park_max_age_hours) == (False, 12.0)
    policy.write_text('[cache]\npark_max_age_hours = "soon"\n')
    with pytest.raises(Exception, match="park_max_age_hours"):
        parse(policy)


def _complete(sample: Path, model: Path, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "codeagent_lsp", "complete", f"{sample}:9:12", "--json"),
            *("--model", str(model), "--set", "engine.threads=1"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)["record"]


@pytest.mark.parametrize("parking", [True, False])
def test_a_new_process_restores_the_document_unless_the_policy_forbids(
    tiny_model: Path, tmp_path: Path, parking: bool
) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(CODE + SUFFIX_CODE)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[defaults]\nrole = "member"\n[cache]\npark_kv_slots = {str(parking).lower()}\n'
    )
    env = {**os.environ, "CODEAGENT_POLICY": str(policy), "XDG_CACHE_HOME": str(tmp_path)}
    first = _complete(sample, tiny_model, env)
    again = _complete(sample, tiny_model, env)  # another process: a restart
    assert first["restoredTokens"] == 0
    parked = list((tmp_path / "codeagent-lsp" / "kv").glob("*/*.kv"))
    if parking:
        assert len(parked) == 1
        assert again["restoredTokens"] > 0 and again["evaluatedTokens"] == 1
    else:
        assert not parked and again["restoredTokens"] == 0
        assert again["evaluatedTokens"] == first["evaluatedTokens"]


def _hidden_line_tasks() -> list[tuple[str, str, int]]:
    """(document, text, cursor) like `bench quality`'s: a middle line's code hidden, the cursor
    after its indentation."""
    sources = {
        "geometry.py": (PROJECTS / "python" / "shapes" / "geometry.py").read_text(),
        "app.py": (PROJECTS / "python" / "app.py").read_text(),
        "tool.py": CODE + SUFFIX_CODE,
    }
    tasks = []
    for name, source in sources.items():
        lines = source.split("\n")
        row = len(lines) // 2
        indent = lines[row][: len(lines[row]) - len(lines[row].lstrip())]
        before, after = "\n".join([*lines[:row], indent]), "\n".join(["", *lines[row + 1 :]])
        tasks.append((f"file:///work/{name}", before + after, len(before)))
    return tasks


def _suggestions(tiny_model: Path, park_dir: Path, parking: bool) -> list[Suggestion]:
    """Every task asked twice on one slot: the second time each document comes back evicted,
    restored from disk when parking is on, evaluated afresh when off. Greedy sampling."""
    options = {
        "model": str(tiny_model),
        "engine": {"threads": 1, "slots": 1, "parkSlots": parking, "parkDir": str(park_dir)},
        "completion": {"maxTokens": 32, "temperature": 0.0},
    }
    settings, errors = merge(Settings(), options)
    assert not errors
    assistant = Assistant(settings)

    async def ask_twice() -> list[Suggestion]:
        tasks = _hidden_line_tasks()
        return [await assistant.complete(*task) for task in tasks + tasks]

    try:
        return asyncio.run(ask_twice())
    finally:
        assistant.close()


def test_suggestions_are_identical_with_parking_on_and_off(
    tiny_model: Path, tmp_path: Path
) -> None:
    """What `bench quality` must show: a restored KV cache answers exactly as a fresh
    evaluation of the same prompt (greedy; the text and its number of tokens)."""
    parked = _suggestions(tiny_model, tmp_path / "on", parking=True)
    fresh = _suggestions(tiny_model, tmp_path / "off", parking=False)
    count = len(parked) // 2
    assert all(s.record.restored_tokens > 0 for s in parked[count:])  # restores did happen
    assert all(s.record.restored_tokens == 0 for s in fresh)
    assert [s.text for s in parked] == [s.text for s in fresh]
    assert [s.record.generated_tokens for s in parked] == [s.record.generated_tokens for s in fresh]
    assert any(s.text for s in fresh)  # the comparison compares something


def test_a_wrong_kv_state_would_change_the_suggestion(make_engine: Callable[..., Engine]) -> None:
    """The comparison above can fail: a parked file that passes every check but holds another
    prompt's KV cache (same length) makes the document answer differently."""
    engine = make_engine()
    a = engine.tokenize(CODE)
    b = engine.tokenize(SUFFIX_CODE * 3)[: len(a)]
    fresh = engine.submit(GenerationJob("a.py", a, max_tokens=32)).result(timeout=WAIT)
    # One token sampled, none decoded: b.py's slot holds its prompt alone. It evicts a.py.
    engine.submit(GenerationJob("b.py", b, max_tokens=1)).result(timeout=WAIT)
    generate(engine, "c.py", engine.tokenize(CODE[::-1]))  # evicts b.py
    other = engine.park.take("b.py")
    assert other is not None and len(other.tokens) == len(a)
    engine.park.park("a.py", a, other.state)  # a.py's tokens over b.py's KV cache
    wrong = engine.submit(GenerationJob("a.py", a, max_tokens=32)).result(timeout=WAIT)
    assert wrong.record.restored_tokens == len(a) - 1  # the last token is evaluated anyway
    assert wrong.text != fresh.text


def test_restoring_is_skipped_when_evaluating_is_measured_faster(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine()
    a, b = engine.tokenize(CODE), engine.tokenize(SUFFIX_CODE * 3)
    generate(engine, "a.py", a)
    generate(engine, "b.py", b)  # evicts a.py
    back = generate(engine, "a.py", a)  # evicts b.py
    assert back.record.restored_tokens > 0
    speeds = engine.speeds  # both measured on this machine by what just ran
    assert speeds.eval_tokens_s > 0 and speeds.restore_bytes_s > 0
    speeds.restore_bytes_s = 1.0  # as from a disk giving a byte a second
    again = generate(engine, "b.py", b)
    assert again.record.restored_tokens == 0  # evaluated afresh instead
    assert again.record.evaluated_tokens == len(b)
    assert engine.park.size("b.py")  # left parked: a later, faster read may use it


def test_the_restore_decision_weighs_bytes_against_tokens() -> None:
    h200 = Speeds(eval_tokens_s=14_000.0, restore_bytes_s=200e6)  # 1.4k tokens: 100 ms
    assert not h200.restore_pays(1_400, 34_000_000)  # 170 ms to read and load
    assert h200.restore_pays(1_400, 10_000_000)  # 50 ms
    assert h200.restore_pays(1_400, 22_000_000)  # 110 ms: within the noise, restored
    two_cores = Speeds(eval_tokens_s=100.0, restore_bytes_s=200e6)  # 1.4k tokens: 14 s
    assert two_cores.restore_pays(1_400, 34_000_000)
    assert Speeds(eval_tokens_s=1e9).restore_pays(1_400, 34_000_000)  # restore not measured yet
    measured = Speeds()
    measured.note_eval(8, 1.0)  # too short a batch to say anything
    measured.note_eval(1_000, 0.5)
    measured.note_eval(1_000, 5.0)  # interrupted: the best measurement stays
    measured.note_restore(1_000_000, 0.01)
    assert (measured.eval_tokens_s, measured.restore_bytes_s) == (2_000.0, 100e6)
