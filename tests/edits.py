"""Random edits of a text for hypothesis property tests: splices, as an editor's didChange
would make them."""

from __future__ import annotations

from hypothesis import strategies as st

Splice = tuple[int, int, str]
"""(code-point offset, code points removed there, text inserted there)."""


def splices(
    size: int, alphabet: str, *, removed: int, inserted: int, edits: int
) -> st.SearchStrategy[list[Splice]]:
    """1 to `edits` splices at offsets up to `size`, each removing up to `removed` code points
    and inserting up to `inserted` characters of `alphabet`."""
    splice = st.tuples(
        st.integers(0, size), st.integers(0, removed), st.text(alphabet, max_size=inserted)
    )
    return st.lists(splice, min_size=1, max_size=edits)


def apply(text: str, splice: Splice) -> str:
    """`text` with `splice` made (an offset past the end is the end)."""
    position, removed, inserted = splice
    position = min(position, len(text))
    return text[:position] + inserted + text[position + removed :]
