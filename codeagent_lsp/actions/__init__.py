"""Code actions, one home: explain, docstring, fix and generate tests, for the language
server's code actions (`features/code_actions.py`) and the headless commands (`headless.py`).

- `pipeline`: prompt from the code and the CodeGraph, answer from the Assistant, checked
  before it is offered; results are plain line edits (entry points `explain`, `docstring`,
  `fix`, `tests`).
- `prompts`: each action's prompt beside the parsing of its answer.
- `testgen/`: where tests go and in which framework, per language style.

May import `assistant`, `codegraph`, `context`, `lines` and `security`; never pygls or lsprotocol.
"""
