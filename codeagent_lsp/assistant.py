"""The completion pipeline shared by the server, the headless commands and the benchmarks.

text + cursor -> budgeted excerpt -> FIM prompt tokens -> engine (KV slot per document) ->
post-processing -> suggestion. Nothing here knows LSP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codeagent_lsp.context import budget, postprocess
from codeagent_lsp.context.chat import chat_template
from codeagent_lsp.context.templates import FimTemplate, detect_template
from codeagent_lsp.engine import models
from codeagent_lsp.engine.backend import Backend, FimParts, Generation, Request, RequestRecord
from codeagent_lsp.engine.embedded import EmbeddedBackend
from codeagent_lsp.engine.llama import EngineError, ModelInfo
from codeagent_lsp.engine.pool import BackendPool
from codeagent_lsp.engine.remote import open_remote
from codeagent_lsp.engine.slots import short_name
from codeagent_lsp.security import audit
from codeagent_lsp.security.policy import policy_in_force
from codeagent_lsp.security.redact import redact
from codeagent_lsp.settings import EngineSettings, Settings

log = logging.getLogger(__name__)


class ModelUnavailable(models.ModelError):
    """No model can serve: the message says what is missing and the command that fixes it."""


ContextProvider = Callable[
    [str, Path, str, int, int, Callable[[str, str], int], range], list[tuple[str, str]]
]
"""(document key, file, text, offset, token budget, cost of a (path, text) file in the prompt,
the document's lines the excerpt holds) -> (path, text) pairs."""


@dataclass(frozen=True)
class PromptFile:
    """Where the document lives, for the prompt's file header and the repository context."""

    repo: str | None = None
    path: str | None = None
    """Relative to the repository: absolute paths never reach the model."""
    file: Path | None = None


@dataclass(frozen=True)
class Suggestion:
    text: str
    """Text to insert at the cursor; empty when nothing is worth showing."""
    record: RequestRecord
    raw: str = ""
    """The model's answer before post-processing (`Assistant.finish` turns it into `text`)."""


@dataclass
class _Prefetch:
    """A suggestion computed in the background at a position (`Assistant.prefetch`)."""

    prefix: str
    suffix: str
    request: Request
    generation: asyncio.Future[Generation]

    def usable(self) -> bool:
        """Running, or done with an answer (not stopped, preempted or failed)."""
        done = self.generation
        if not done.done():
            return True
        if done.cancelled() or done.exception() is not None:
            return False
        return done.result().record.outcome == "ok"


@dataclass
class _DocumentState:
    """What the pipeline remembers of a document between keystrokes."""

    window: budget.Window | None = None
    last_prefix: str = ""
    last_suffix: str = ""
    last_text: str = ""
    last_prompt_tokens: int = 0
    prefetch: _Prefetch | None = None


@dataclass
class _Loaded:
    backend: Backend
    """The embedded llama.cpp engine or remote inference replicas (engine.backend)."""
    template: FimTemplate
    stops: tuple[str, ...]
    """The template's stop tokens that the model's vocabulary holds."""

    @property
    def info(self) -> ModelInfo:
        return self.backend.info


def _close_loaded(loading: asyncio.Future[_Loaded]) -> None:
    if not loading.cancelled() and loading.exception() is None:
        loading.result().backend.close()


class Assistant:
    def __init__(
        self,
        settings: Settings,
        notify: Callable[[str], None] | None = None,
        backends: BackendPool | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        """A network node's loaded models, shared by its connections; None: load our own."""
        self.policy = policy_in_force()
        self.model_sha256: str | None = None
        """Of the loaded model file, for the policy and the audit log."""
        self.notify = notify
        """Told, in words for the user, when a remote inference replica fails or recovers."""
        self._documents: dict[str, _DocumentState] = {}
        self._loaded: _Loaded | None = None
        self._loading: asyncio.Future[_Loaded] | None = None
        self.context: ContextProvider | None = None
        """Repository context for prompts (the server sets it once the CodeGraph is open)."""
        self.problem: str | None = None
        """Why no model is available, for the user; None while loading or loaded."""

    # --- model lifecycle ------------------------------------------------------------------------

    async def load(self) -> ModelInfo:
        """Load the configured model once; raises ModelUnavailable with a message for the user."""
        return (await self._ensure_loaded()).info

    async def _ensure_loaded(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        if self._loading is None:
            notify = self._notify_from_any_thread(asyncio.get_running_loop())
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._load_blocking, notify))
        try:
            self._loaded = await asyncio.shield(self._loading)
        except (models.ModelError, EngineError, ValueError) as exc:
            self.problem = str(exc)
            raise ModelUnavailable(str(exc)) from exc
        return self._loaded

    def _notify_from_any_thread(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[str], None] | None:
        """The model worker's supervisor tells of crashes from its own threads."""
        notify = self.notify
        if notify is None:
            return None

        def from_thread(message: str) -> None:
            loop.call_soon_threadsafe(notify, message)

        return from_thread

    def _load_blocking(self, notify: Callable[[str], None] | None = None) -> _Loaded:
        backend, family = self._open_backend(notify)
        try:
            template = detect_template(self.settings.completion.template, backend.has_token, family)
            missing = [t for t in template.control_tokens() if not backend.has_token(t)]
            if missing:
                raise EngineError(
                    f"the model's vocabulary lacks the {template.family} tokens {missing}"
                )
        except Exception:
            backend.close()
            raise
        stops = tuple(t for t in template.stop_tokens if backend.has_token(t))
        info = backend.info
        log.info("model %s loaded on %s, template %s", info.name, info.device, template.family)
        return _Loaded(backend, template, stops)

    def _open_backend(
        self, notify: Callable[[str], None] | None = None
    ) -> tuple[Backend, str | None]:
        """The configured backend and the FIM family its model declares (None: detect)."""
        if self.settings.engine.backend == "remote":
            policy = self.policy
            return open_remote(
                self.settings, self.notify, policy.inference_urls, policy.inference_token_file
            )
        resolved = models.resolve(
            self.settings.model_name(), models.models_dir(self.settings.models_dir_setting())
        )
        model = self._check_model(resolved.path)
        engine = self._engine_settings()
        try:  # the engine loads the file that was checked; it keeps its own descriptor
            if self.backends is not None:
                return self.backends.borrow(model, engine, notify), resolved.family
            return EmbeddedBackend(model, engine, notify), resolved.family
        finally:
            model.close()

    def _engine_settings(self) -> EngineSettings:
        """The client's engine settings within the policy's [cache] rules."""
        engine, cache = self.settings.engine, self.policy.cache
        ages = [a for a in (engine.parkMaxAgeHours, cache.park_max_age_hours) if a > 0]
        return dataclasses.replace(
            engine,
            parkSlots=engine.parkSlots and cache.park_kv_slots,
            parkMaxAgeHours=min(ages, default=0.0),
        )

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.backend.close()
        elif self._loading is not None:
            # Closed while the model loads (settings changed, a node's client left): close it
            # once loaded, else its worker holds a model for the server's lifetime (a backend
            # closed refuses work, so a request still in flight gets an error).
            if self._loading.done():  # a headless run's loop may be closed already
                _close_loaded(self._loading)
            else:
                self._loading.add_done_callback(_close_loaded)
        self._loaded = None
        self._loading = None

    @property
    def info(self) -> ModelInfo | None:
        return self._loaded.info if self._loaded else None

    def forget(self, key: str) -> None:
        """A document was closed: drop its state and free its slot."""
        self._documents.pop(key, None)
        if self._loaded is not None:
            self._loaded.backend.release(key)

    def stats(self) -> dict[str, object]:
        if self._loaded is None:
            return {"records": [], "slots": [], "model": None, "problem": self.problem}
        data = self._loaded.backend.stats()
        info = self._loaded.info
        data["model"] = {
            "name": info.name,
            "device": info.device,
            "path": info.path,
            "template": self._loaded.template.family,
        }
        return data

    # --- completion -----------------------------------------------------------------------------

    async def complete(
        self,
        key: str,
        text: str,
        offset: int,
        where: PromptFile | None = None,
        request: Request | None = None,
    ) -> Suggestion:
        """A suggestion at `offset` (a code-point index into `text`); cancel by cancelling the
        awaiting task. `where` names the file for the prompt and the repository context;
        `request`, from `prompt()` for the same arguments, is sent as it is instead of building
        the prompt again. Raises ModelUnavailable when no model can serve."""
        loaded = await self._ensure_loaded()
        state = self._documents.setdefault(key, _DocumentState())
        prefix, suffix = text[:offset], text[offset:]
        reused = self._typeahead(key, state, prefix, suffix, loaded)
        if reused is not None:
            return reused
        started = time.perf_counter()
        prefetched = await self._prefetched(state, prefix, suffix)
        if prefetched is not None:
            generation = prefetched
        else:
            if request is None:
                request = await self._fim_request(
                    loaded, state, key, text, offset, where or PromptFile()
                )
            generation = await self._generate(loaded, request)
        suggestion = self.finish(
            generation.text, prefix, suffix, generated=generation.record.generated_tokens
        )
        audit.note_response(
            suggestion, generation.record.prompt_tokens, generation.record.generated_tokens
        )
        if not generation.cancelled:
            state.last_prefix, state.last_suffix, state.last_text = prefix, suffix, suggestion
            state.last_prompt_tokens = generation.record.prompt_tokens
        if prefetched is None:
            return Suggestion(suggestion, generation.record, generation.text)
        record = _served_from_prefetch(generation.record, started)
        loaded.backend.add_record(record)
        return Suggestion(suggestion, record, generation.text)

    async def prompt(
        self, key: str, text: str, offset: int, where: PromptFile | None = None
    ) -> Request:
        """The request `complete()` would send at `offset`, without sending it (the quality
        benchmark hashes it to know whether a stored answer still holds)."""
        loaded = await self._ensure_loaded()
        state = self._documents.setdefault(key, _DocumentState())
        return await self._fim_request(loaded, state, key, text, offset, where or PromptFile())

    def finish(self, raw: str, prefix: str, suffix: str, *, generated: int = 0) -> str:
        """The model's answer at a cursor between `prefix` and `suffix`, post-processed as the
        settings ask (multi-line or not); `generated` tokens reaching `completion.maxTokens`
        mean the limit cut the answer (its last line is unfinished)."""
        multiline = self._multiline(prefix, suffix)
        truncated = generated >= self.settings.completion.maxTokens
        return postprocess.postprocess(
            raw, prefix, suffix, multiline=multiline, truncated=truncated
        )

    async def warm(
        self,
        key: str,
        text: str,
        offset: int,
        where: PromptFile | None = None,
        *,
        at_cursor: bool = False,
    ) -> RequestRecord | None:
        """Evaluate the prompt at `offset` without generating, so the next request in this
        document reuses its KV cache (llama.vim's warm-up on buffer enter). `at_cursor`: the
        client reported its cursor there (it settled), so the suggestion itself is computed, as
        a `prefetch`: the first request there then answers from it instead of generating (the
        tokens generated are 1-3 s of a first suggestion on 2 CPU cores, after the prompt).
        Runs below any real request: the engine preempts it for one, and cancelling the
        awaiting task stops it (what was evaluated stays cached). None when the backend has
        nothing to warm (remote)."""
        if at_cursor:
            return await self.prefetch(key, text, offset, where)
        loaded = await self._ensure_loaded()
        if not loaded.backend.warms:
            return None
        state = self._documents.setdefault(key, _DocumentState())
        request = await self._fim_request(loaded, state, key, text, offset, where or PromptFile())
        warm = dataclasses.replace(request, max_tokens=0, should_stop=None, background=True)
        return (await loaded.backend.generate(warm)).record

    async def prefetch(
        self, key: str, text: str, offset: int, where: PromptFile | None = None
    ) -> RequestRecord | None:
        """Compute the suggestion at `offset` in the background, so that the next `complete`
        there answers from it (outcome "prefetched") or waits for it rather than starting
        another: what llama.vscode and Copilot do once a suggestion is accepted. Runs below any
        real request like a warm-up (the engine preempts it); cancelling the awaiting task
        stops it. None when the backend has no background priority (remote)."""
        loaded = await self._ensure_loaded()
        if not loaded.backend.warms:
            return None
        state = self._documents.setdefault(key, _DocumentState())
        request = await self._fim_request(loaded, state, key, text, offset, where or PromptFile())
        request = dataclasses.replace(request, background=True)
        generating = asyncio.ensure_future(loaded.backend.generate(request))
        state.prefetch = _Prefetch(text[:offset], text[offset:], request, generating)
        return (await generating).record

    def prefetching(self, key: str, text: str, offset: int) -> bool:
        """Whether a prefetch at `offset` of `text` runs or holds its answer."""
        state = self._documents.get(key)
        pending = state.prefetch if state else None
        at = (text[:offset], text[offset:])
        return pending is not None and (pending.prefix, pending.suffix) == at and pending.usable()

    def after_accept(self, key: str, current: str) -> tuple[str, int] | None:
        """(text, cursor) of the document once its last suggestion is accepted whole, when
        `current` (the document now) is that text or on its way to it: the suggestion's
        beginning typed, or nothing yet (an editor's accept command may come before its
        change). None otherwise."""
        state = self._documents.get(key)
        if state is None or not state.last_text:
            return None
        prefix, suffix, shown = state.last_prefix, state.last_suffix, state.last_text
        typed = current[len(prefix) : len(current) - len(suffix)]
        on_the_way = (
            len(current) >= len(prefix) + len(suffix)
            and current.startswith(prefix)
            and current.endswith(suffix)
            and shown.startswith(typed)
        )
        return (prefix + shown + suffix, len(prefix) + len(shown)) if on_the_way else None

    async def _prefetched(
        self, state: _DocumentState, prefix: str, suffix: str
    ) -> Generation | None:
        """The prefetched generation at this position (waiting for it while it runs), its
        prompt noted on the request's audit row; None when there is none or it was stopped.
        Any request uses up the document's prefetch."""
        pending, state.prefetch = state.prefetch, None
        if pending is None or (pending.prefix, pending.suffix) != (prefix, suffix):
            return None
        try:
            generation = await asyncio.shield(pending.generation)
        except asyncio.CancelledError:
            if not pending.generation.cancelled() or _cancelling():
                raise  # this request was cancelled, not the prefetch
            return None
        except EngineError:
            return None  # the request tries for itself, and says why if it fails too
        if generation.record.outcome != "ok":
            return None
        self._note_prompt(pending.request)
        return generation

    async def _generate(self, loaded: _Loaded, request: Request) -> Generation:
        self._note_prompt(request)
        return await loaded.backend.generate(request)

    def _note_prompt(self, request: Request) -> None:
        """On the request's audit row; in the log only when the administrator asked for code."""
        audit.note_prompt(
            "".join(str(getattr(s, "text", s)) for s in request.segments), self.model_sha256
        )
        if self.settings.logging.logCode:
            log.debug("prompt for %s: %r", request.key, request.segments)

    async def _fim_request(
        self,
        loaded: _Loaded,
        state: _DocumentState,
        key: str,
        text: str,
        offset: int,
        where: PromptFile,
    ) -> Request:
        """The FIM request at `offset`: excerpt cut to its budgets, secrets redacted,
        repository context the policy allows."""
        opts = self.settings.completion
        count = loaded.backend.count_tokens
        excerpt = await asyncio.to_thread(  # off the event loop: tokenizes up to the budgets
            budget.fit, text, offset, opts.prefixTokens, opts.suffixTokens, count, state.window
        )
        state.window = excerpt.window
        # Secrets in the file never reach the model (nor the audit log that may keep prompts).
        excerpt = dataclasses.replace(
            excerpt, prefix=redact(excerpt.prefix), suffix=redact(excerpt.suffix)
        )
        context: list[tuple[str, str]] = []
        if self.context is not None and where.file is not None:
            room = opts.totalTokens - count(excerpt.prefix) - count(excerpt.suffix)
            cost = functools.partial(loaded.template.context_cost, count=count)
            held = range(excerpt.window.start_line, excerpt.window.end_line)
            context = await asyncio.to_thread(
                self.context,
                key,
                where.file,
                text,
                offset,
                min(opts.contextTokens, room),
                cost,
                held,
            )
        context = [(p, redact(t)) for p, t in context if self.policy.prompt_paths.allowed(p)]
        segments = loaded.template.build(
            excerpt.prefix,
            excerpt.suffix,
            path=where.path,
            repo=where.repo,
            context_files=context,
        )
        template = loaded.template
        multiline = self._multiline(text[:offset], text[offset:])
        return Request(
            key=key,
            segments=segments,
            max_tokens=opts.maxTokens,
            temperature=opts.temperature,
            stop=loaded.stops,
            tail_marker=None if template.suffix_first else template.suffix_token,
            should_stop=postprocess.stop_early(text[:offset], text[offset:], multiline=multiline),
            stop_mode="multi-line" if multiline else "single-line",
            fim=FimParts(excerpt.prefix, excerpt.suffix, tuple(context)),
        )

    async def instruct(
        self, key: str, system: str, user: str, *, max_tokens: int = 512
    ) -> Generation:
        """An answer to an instruct request in the model family's chat format, on the same
        engine and KV slots as completions (`key` picks the slot). Secrets in the request are
        redacted first; prompt and answer are noted on the request's audit row."""
        user = redact(user)
        audit.note_prompt(system + "\n" + user, self.model_sha256)
        generation = await self._instruct(key, system, user, max_tokens=max_tokens)
        record = generation.record
        audit.note_response(generation.text, record.prompt_tokens, record.generated_tokens)
        return generation

    def _check_model(self, path: Path) -> models.OpenModel:
        """Open the model file once, hash it (about a second per GB) and refuse one the policy
        does not allow, before llama.cpp reads it; what llama.cpp then loads is this open file."""
        where = self.policy.model_path_allowed(path)
        if not where.allowed:
            raise models.ModelError(where.reason)
        model = models.open_model(path)
        self.model_sha256 = model.sha256
        decision = self.policy.model_allowed(model.sha256)
        if not decision.allowed:
            model.close()
            raise models.ModelError(decision.reason)
        return model

    async def _instruct(
        self, key: str, system: str, user: str, *, max_tokens: int = 512
    ) -> Generation:
        """An answer to an instruct request in the model family's chat format, on the same
        engine and KV slots as completions (`key` picks the slot)."""
        loaded = await self._ensure_loaded()
        chat = chat_template(loaded.template.family)
        stops = tuple(t for t in chat.stop_tokens if loaded.backend.has_token(t))
        request = Request(
            key=key,
            segments=chat.build(system, user),
            max_tokens=max_tokens,
            stop=tuple(dict.fromkeys(loaded.stops + stops)),
            messages=(("system", system), ("user", user)),
        )
        return await loaded.backend.generate(request)

    def _multiline(self, prefix: str, suffix: str) -> bool:
        mode = self.settings.completion.multiline
        if mode == "auto":
            return postprocess.wants_multiline(prefix, suffix)
        return mode == "always"

    def _typeahead(
        self, key: str, state: _DocumentState, prefix: str, suffix: str, loaded: _Loaded
    ) -> Suggestion | None:
        """The rest of the last suggestion when the user typed its beginning: no model call."""
        if not (self.settings.completion.reuseSuggestion and state.last_text):
            return None
        if suffix != state.last_suffix or not prefix.startswith(state.last_prefix):
            return None
        typed = prefix[len(state.last_prefix) :]
        if not typed or not state.last_text.startswith(typed) or typed == state.last_text:
            return None
        record = RequestRecord(
            document=short_name(key),
            slot=-1,
            prompt_tokens=state.last_prompt_tokens,
            reused_tokens=state.last_prompt_tokens,
            shifted_tokens=0,
            evaluated_tokens=0,
            generated_tokens=0,
            ttft_ms=0.0,
            total_ms=0.0,
            outcome="typeahead",
        )
        loaded.backend.add_record(record)
        return Suggestion(state.last_text[len(typed) :], record)


def _cancelling() -> bool:
    """Whether the running task was asked to stop (a cancelled request)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _served_from_prefetch(prefetch: RequestRecord, started: float) -> RequestRecord:
    """The record of a request a prefetch answered: no model work of its own (the prefetch has
    its record), the wait for it (0 when it was done) as its latency."""
    waited = round((time.perf_counter() - started) * 1000, 2)
    return dataclasses.replace(
        prefetch,
        reused_tokens=prefetch.prompt_tokens,
        shifted_tokens=0,
        evaluated_tokens=0,
        restored_tokens=0,
        generated_tokens=0,
        ttft_ms=waited,
        total_ms=waited,
        outcome="prefetched",
        boundary_ms=0.0,
    )
