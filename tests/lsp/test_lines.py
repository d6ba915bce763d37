"""LSP's line model: lines end at `\\n`, `\\r\\n` and `\\r` only, never at the other characters
Python's `splitlines` splits at. Random edits, sent as an editor sends them, keep the server's
copy of a document equal to the editor's; positions and CodeGraph locations after such a line
still point at the right character."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from codeagent_lsp import lines
from codeagent_lsp.codegraph import extract
from codeagent_lsp.codegraph.live import LiveTrees
from codeagent_lsp.codegraph.words import word_at
from codeagent_lsp.documents import LspWorkspace
from codeagent_lsp.server import offset_of, position_of

# Every character splitlines() treats as a line end that LSP does not, then LSP's own.
NOT_LSP_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
ALPHABET = NOT_LSP_BREAKS + "\r\n" + "ab é😀\t:("
ENCODINGS = [
    types.PositionEncodingKind.Utf16,
    types.PositionEncodingKind.Utf8,
    types.PositionEncodingKind.Utf32,
]
URI = "file:///project/a.py"


# --- the editor's side, written independently of codeagent_lsp.lines -----------------------


def units(text: str, encoding: str) -> int:
    if encoding == types.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8"))
    if encoding == types.PositionEncodingKind.Utf16:
        return len(text.encode("utf-16-le")) // 2
    return len(text)


def editor_position(text: str, offset: int, encoding: str) -> types.Position:
    """How an editor names the position before `text[offset]`."""
    line, start, i = 0, 0, 0
    while i < offset:
        if text[i] == "\r" and text[i + 1 : i + 2] == "\n":
            i += 2
        elif text[i] in "\r\n":
            i += 1
        else:
            i += 1
            continue
        line, start = line + 1, i
    return types.Position(line, units(text[start:offset], encoding))


def cursor_offsets(text: str) -> list[int]:
    """Offsets an editor's cursor can be at: not between the two characters of a CRLF."""
    return [i for i in range(len(text) + 1) if not (text[i - 1 : i + 1] == "\r\n" and i > 0)]


# --- random edits -------------------------------------------------------------------------------

texts = st.text(alphabet=ALPHABET, max_size=60)


@st.composite
def edits(draw: st.DrawFn, text: str) -> tuple[int, int, str, bool]:
    """An edit's offsets, its new text, and whether its range is sent with its ends swapped
    (a client's mistake that vscode-languageserver-textdocument takes as the same range)."""
    offsets = cursor_offsets(text)
    start = draw(st.sampled_from(offsets))
    end = draw(st.sampled_from([o for o in offsets if o >= start]))
    return start, end, draw(texts), draw(st.booleans())


def open_workspace(text: str, encoding: str) -> LspWorkspace:
    workspace = LspWorkspace(None, types.TextDocumentSyncKind.Incremental, [], encoding)
    workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, text))
    return workspace


def send_edit(workspace: LspWorkspace, editor_text: str, edit, encoding: str, version: int):
    start, end, new, swapped = edit
    ends = [editor_position(editor_text, offset, encoding) for offset in (start, end)]
    change = types.TextDocumentContentChangePartial(
        types.Range(*(reversed(ends) if swapped else ends)), new
    )
    identifier = types.VersionedTextDocumentIdentifier(version=version, uri=URI)
    workspace.update_text_document(identifier, change)
    return editor_text[:start] + new + editor_text[end:]


@settings(max_examples=300, deadline=None)
@given(st.data(), texts, st.sampled_from(ENCODINGS))
def test_random_edits_keep_the_servers_text_equal_to_the_editors(data, text, encoding):
    workspace = open_workspace(text, encoding)
    editor = text
    for version in range(2, 2 + data.draw(st.integers(1, 6))):
        edit = data.draw(edits(editor))
        editor = send_edit(workspace, editor, edit, encoding, version)
        assert workspace.get_text_document(URI).source == editor
    # A symbol after every kind of line end is still found where the editor shows it.
    tail = "\ndef target_fn():\n    return 1\n"
    editor = send_edit(workspace, editor, (len(editor), len(editor), tail, False), encoding, 99)
    document = workspace.get_text_document(URI)
    assert document.source == editor
    name_at = editor.rindex("target_fn") + 2
    position = editor_position(editor, name_at, encoding)
    assert offset_of(document, position) == name_at
    assert word_at(document.source, offset_of(document, position)) == "target_fn"
    assert position_of(document, name_at) == position


@settings(max_examples=200, deadline=None)
@given(texts, st.sampled_from(ENCODINGS))
def test_positions_and_offsets_agree_with_the_editor(text, encoding):
    document = open_workspace(text, encoding).get_text_document(URI)
    for offset in cursor_offsets(text):
        position = editor_position(text, offset, encoding)
        assert position_of(document, offset) == position
        assert offset_of(document, position) == offset
    assert len(lines.split_lines(text)) == editor_position(text, len(text), encoding).line + 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([*NOT_LSP_BREAKS, "\r", "\r\n", "\n"]), min_size=1, max_size=6))
def test_codegraph_locations_land_on_the_editors_lines(breaks: list[str]):
    """Definitions after any mix of line ends: the tree-sitter point of each name, converted
    with `Points`, is the position the editor shows it at."""
    text = "".join(f"def fn_{i}():\n    return {i}\n{b}\n" for i, b in enumerate(breaks))
    facts = extract.extract(text.encode("utf-8"), "python")
    points = lines.Points(text, len)
    found = {
        d.name: points.position(d.name_span.start_line, d.name_span.start_col)
        for d in facts.definitions
    }
    for i in range(len(breaks)):
        expected = editor_position(text, text.index(f"fn_{i}("), types.PositionEncodingKind.Utf32)
        assert found[f"fn_{i}"] == (expected.line, expected.character)


def test_a_form_feed_line_is_no_line_end():
    text = "def alpha():\n    return 1\n\x0c\ndef beta():\n    return alpha()\n"
    assert lines.line_count(text) == 6
    assert lines.to_offset(text, 3, 4) == text.index("beta")
    assert lines.to_position(text, text.rindex("alpha()")) == (4, 11)


def test_a_character_past_the_line_end_means_the_line_end():
    text = "ab\r\ncd"
    assert lines.to_offset(text, 0, 99) == 2
    assert lines.to_offset(text, 1, 99) == 6
    assert lines.to_offset(text, 7, 0) == 6
    assert lines.to_position(text, 3) == (0, 2)  # between \r and \n: the end of line 0


# --- the CodeGraph on LSP's lines, whatever ends them -------------------------------------------

LSP_BREAKS = ["\n", "\r\n", "\r"]
PROGRAMS = {
    # language: (file head, one function: {i} its number, {p} the one it calls, {e} a line end)
    "python": ("", "def fn_{i}():{e}    return fn_{p}(){e}"),
    "javascript": ("", "function fn_{i}() {{{e}  return fn_{p}();{e}}}{e}"),
    "go": ("package m{e}", "func fn_{i}() int {{{e}\treturn fn_{p}(){e}}}{e}"),
}


@st.composite
def programs(draw: st.DrawFn, language: str) -> tuple[str, int]:
    """A program of functions, each calling the one before, whose line ends are any mix of
    LSP's three, with lines of the characters only `splitlines` ends lines at between them."""
    head, function = PROGRAMS[language]
    count = draw(st.integers(2, 5))
    ends = st.sampled_from(LSP_BREAKS)
    text = head.format(e=draw(ends))
    for i in range(count):
        text += function.format(i=i, p=max(i - 1, 0), e=draw(ends))
        odd = draw(st.text(alphabet=NOT_LSP_BREAKS, max_size=2))
        text += ("//" if language != "python" else "#") + odd + draw(ends)
    return text, count


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from(sorted(PROGRAMS)), st.sampled_from(ENCODINGS))
def test_symbols_and_references_sit_on_the_editors_lines_whatever_ends_them(
    data, language, encoding
):
    """Definitions (definition, hover, documentSymbol) and references, from a file read whole
    and from an open document edited line by line, are where the editor shows them."""
    text, count = data.draw(programs(language))
    size = units if encoding != types.PositionEncodingKind.Utf32 else None
    live = LiveTrees()
    edited = text.replace("fn_0()", "fn_0( )")  # an edit the open document's tree follows
    live.update("doc", text.encode(), language)
    tree, _ = live.update("doc", edited.encode(), language)
    for source, facts in (
        (text, extract.extract(text.encode(), language)),
        (edited, extract.extract(edited.encode(), language, tree)),
    ):
        points = lines.Points(source, (lambda s: size(s, encoding)) if size else len)
        found = {
            d.name: points.position(d.name_span.start_line, d.name_span.start_col)
            for d in facts.definitions
        }
        calls = sorted(
            points.position(r.span.start_line, r.span.start_col)
            for r in facts.references
            if r.name.startswith("fn_")  # not Go's `int`
        )
        expected_calls = []
        for i in range(count):
            at = editor_position(source, source.index(f"fn_{i}("), encoding)
            assert found[f"fn_{i}"] == (at.line, at.character)
            call = source.index(f"fn_{max(i - 1, 0)}(", source.index(f"fn_{i}(") + 1)
            at = editor_position(source, call, encoding)
            expected_calls.append((at.line, at.character))
        assert calls == sorted(expected_calls)
