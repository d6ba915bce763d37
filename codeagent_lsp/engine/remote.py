"""The remote backend: the model runs on inference replicas elsewhere in the company network.

Two protocols. `openai`: POST /v1/completions with the FIM prompt our templates build, as text
(vLLM, Ray Serve LLM, llama-server, llama-cpp-python's server). `infill`: llama-server's
/infill, which builds the FIM prompt itself from `input_prefix`/`input_suffix` and the
repository context as `input_extra` chunks; `cache_prompt` and an `id_slot` pinned per document
keep each document's KV cache on the server. Instruct requests (code actions) use
/v1/chat/completions in both cases. Answers are streamed, so a suggestion can end early and a
cancelled request closes its connection (the server stops generating).

Only the configured URLs are contacted: no proxy from the environment, no redirects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from codeagent_lsp.engine import models
from codeagent_lsp.engine.backend import Generation, Request, RequestRecord, Special
from codeagent_lsp.engine.llama import (
    EngineError,
    ModelInfo,
    VocabularyOnly,
    vocabulary_read_in_a_child,
)
from codeagent_lsp.engine.replicas import Replica, ReplicaPool
from codeagent_lsp.engine.slots import short_name
from codeagent_lsp.metrics import count_generation
from codeagent_lsp.security import egress
from codeagent_lsp.settings import RemoteSettings, Settings

log = logging.getLogger(__name__)
# httpx logs every request line at INFO and httpcore its traffic at DEBUG: neither belongs in
# a log that must never hold code or the bearer token.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class RemoteError(EngineError):
    """A request no replica could answer, or a remote configuration that cannot work."""


class ReplicaFailure(Exception):
    """This replica failed (unreachable, too slow, an error status, a malformed answer):
    the request moves to the next replica and this one waits before it is tried again."""


def open_remote(
    settings: Settings,
    notify: Callable[[str], None] | None = None,
    allowed_urls: tuple[str, ...] = (),
    token_file: str = "",
) -> tuple[RemoteBackend, str | None]:
    """The remote backend for `settings`, and the FIM family its tokenizer model declares.
    Services off this machine must be among `allowed_urls` (the policy's [network] inference);
    the bearer token is read from `token_file` (the policy's [network] token_file)."""
    remote = settings.remote
    urls = [_checked_url(u, allowed_urls) for u in remote.urls]
    if not urls:
        raise RemoteError("engine.backend is remote but codeagent.remote.urls is empty")
    token = _bearer_token(token_file)
    tls = _tls_context(remote)
    resolved = _tokenizer_model(settings)
    if resolved is None and settings.completion.template == "auto":
        raise RemoteError(
            "without a tokenizer model the FIM template cannot be detected: set "
            "codeagent.remote.tokenizer to the served model's GGUF or codeagent.completion.template"
        )
    vocabulary = vocabulary_read_in_a_child(resolved.path) if resolved else None
    pool = ReplicaPool(urls, remote.slots, remote.retrySeconds, remote.maxRetrySeconds, notify)
    backend = RemoteBackend(remote, pool, vocabulary, token, tls)
    return backend, resolved.family if resolved else None


def _checked_url(url: str, allowed_urls: tuple[str, ...]) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"codeagent.remote.urls: {url!r} is not an http(s) URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise RemoteError(
            f"codeagent.remote.urls: {parts.scheme}://{parts.hostname} must carry no user, "
            "password, query or fragment (the token goes in the policy's network.token_file)"
        )
    try:
        egress.check_inference_url(url, allowed_urls)
    except PermissionError as exc:
        raise RemoteError(f"codeagent.remote.urls: {exc.strerror}") from exc
    return url.strip().rstrip("/")


def _bearer_token(token_file: str) -> str | None:
    """The token from the administrator's file; errors never quote it. A client names no file
    or environment variable: either would let it send any secret of the server to a port."""
    if not token_file:
        return None
    try:
        token = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.__class__.__name__
        raise RemoteError(f"the policy's network.token_file cannot be read: {reason}") from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise RemoteError("the bearer token in network.token_file is empty or has whitespace")
    return token


def _tls_context(remote: RemoteSettings) -> ssl.SSLContext:
    """Certificates checked against remote.caBundle, else the system's store."""
    try:
        return ssl.create_default_context(cafile=remote.caBundle or None)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.__class__.__name__
        raise RemoteError(f"codeagent.remote.caBundle cannot be read: {reason}") from None


def _tokenizer_model(settings: Settings) -> models.ResolvedModel | None:
    """remote.tokenizer, else codeagent.model when its file is here, else None (estimate)."""
    models_dir = models.models_dir(settings.models_dir_setting())
    if settings.remote.tokenizer:
        return models.resolve(settings.remote.tokenizer, models_dir)
    try:
        return models.resolve(settings.model_name(), models_dir)
    except models.ModelNotFound:
        return None


@dataclass
class _Call:
    """A request in flight for one document."""

    task: asyncio.Task[Generation]
    superseded: bool = False


class RemoteBackend:
    warms = False
    """Replicas keep their own caches; a warm-up would cost a round trip and a slot."""

    def __init__(
        self,
        settings: RemoteSettings,
        pool: ReplicaPool,
        vocabulary: VocabularyOnly | None,
        token: str | None,
        tls: ssl.SSLContext,
        *,
        record_limit: int = 256,
    ) -> None:
        self.settings, self.pool, self.vocabulary, self._tls = settings, pool, vocabulary, tls
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.records: deque[RequestRecord] = deque(maxlen=record_limit)
        self._latest: dict[str, _Call] = {}
        self._client: httpx.AsyncClient | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.info = ModelInfo(
            path="",
            description=f"{settings.protocol} inference service",
            n_ctx_train=0,
            n_params=0,
            device=f"remote ({len(pool.replicas)} replicas)",
            name=settings.model or "remote",
        )

    # --- tokens ---------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Exact with the tokenizer model; else one token per UTF-8 byte, an upper bound for
        byte-level BPE (every token covers at least one byte), so budgets still hold."""
        if self.vocabulary is None:
            return len(text.encode())
        return len(self.vocabulary.tokenize(text))

    def has_token(self, text: str) -> bool:
        """Without a tokenizer model the configured template is trusted (open_remote requires
        one to be named)."""
        return self.vocabulary is None or self.vocabulary.token_id(text) is not None

    # --- requests -------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Generation:
        started = time.perf_counter()
        previous = self._latest.get(request.key)
        if previous is not None:
            previous.superseded = True
            previous.task.cancel()  # closes its HTTP request
        call = _Call(asyncio.ensure_future(self._serve(request, started)))
        self._latest[request.key] = call
        try:
            return await call.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if call.superseded and not (current and current.cancelling()):
                return self._ended(request, started, "superseded")
            self._ended(request, started, "cancelled")
            raise
        except RemoteError:
            self._ended(request, started, "error")
            raise
        finally:
            if self._latest.get(request.key) is call:
                del self._latest[request.key]

    async def _serve(self, request: Request, started: float) -> Generation:
        """Ask the document's replica, then the next ones while they fail."""
        for replica in self.pool.candidates(request.key):
            try:
                generation = await self._ask(replica, request, started)
            except ReplicaFailure as exc:
                log.warning("replica %s failed: %s", replica.url, exc)
                self.pool.failed(replica, str(exc))
                continue
            self.pool.succeeded(replica)
            self._record(generation.record)
            return generation
        raise RemoteError(self.pool.unavailable())

    async def _ask(self, replica: Replica, request: Request, started: float) -> Generation:
        path, body, slot = self._payload(replica, request)
        answer = _Answer(started)
        try:
            async with self._http().stream(
                "POST", replica.url + path, json=body, headers=self._headers
            ) as response:
                await _check_status(response, replica)
                await answer.read(response, request.should_stop)
        except httpx.TimeoutException as exc:
            raise ReplicaFailure(f"no answer in time ({exc.__class__.__name__})") from None
        except httpx.HTTPError as exc:
            raise ReplicaFailure(f"{exc.__class__.__name__}: {exc}") from None
        prompt_tokens = answer.prompt_tokens or self._prompt_tokens(request)
        record = RequestRecord(
            document=short_name(request.key),
            slot=slot,
            prompt_tokens=prompt_tokens,
            reused_tokens=answer.cached_tokens,
            shifted_tokens=0,
            evaluated_tokens=max(0, prompt_tokens - answer.cached_tokens),
            generated_tokens=answer.generated_tokens,
            ttft_ms=answer.ttft_ms(),
            total_ms=round((time.perf_counter() - started) * 1000, 2),
            outcome="ok",
            replica=replica.url,
        )
        return Generation(answer.text, record)

    def _payload(self, replica: Replica, request: Request) -> tuple[str, dict[str, Any], int]:
        """(path, JSON body, server slot or -1) for this request on this replica."""
        common: dict[str, Any] = {"temperature": request.temperature, "stream": True}
        if self.settings.model:
            common["model"] = self.settings.model
        if request.messages:
            messages = [{"role": role, "content": text} for role, text in request.messages]
            return (
                "/v1/chat/completions",
                {**common, "messages": messages, "max_tokens": request.max_tokens},
                -1,
            )
        if self.settings.protocol == "infill" and request.fim is not None:
            slot, _ = replica.slots.acquire(request.key)
            fim = request.fim
            return (
                "/infill",
                {
                    **common,
                    "input_prefix": fim.prefix,
                    "input_suffix": fim.suffix,
                    "input_extra": [{"filename": p, "text": t} for p, t in fim.context_files],
                    "prompt": "",
                    "n_predict": request.max_tokens,
                    "cache_prompt": True,
                    "id_slot": slot.seq,
                },
                slot.seq,
            )
        return (
            "/v1/completions",
            {
                **common,
                "prompt": _render(request),
                "max_tokens": request.max_tokens,
                "stop": list(request.stop),
            },
            -1,
        )

    def _prompt_tokens(self, request: Request) -> int:
        return sum(1 if isinstance(s, Special) else self.count_tokens(s) for s in request.segments)

    def _http(self) -> httpx.AsyncClient:
        """One client (connection pool) per backend, made on the event loop that uses it."""
        if self._client is None:
            s = self.settings
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(s.readTimeout, connect=s.connectTimeout),
                verify=self._tls,
                trust_env=False,  # no proxy or .netrc from the environment: only our URLs
                follow_redirects=False,
            )
        return self._client

    async def get(self, url: str, path: str) -> httpx.Response:
        """GET `path` (e.g. /v1/models) of replica `url` with this backend's token, TLS and
        timeouts, as `codeagent-lsp doctor` asks. Raises httpx.HTTPError when it cannot be
        asked."""
        return await self._http().get(url + path, headers=self._headers)

    # --- bookkeeping ----------------------------------------------------------------------------

    def _ended(self, request: Request, started: float, outcome: str) -> Generation:
        """Record a request that produced no answer."""
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        record = RequestRecord(
            short_name(request.key), -1, 0, 0, 0, 0, 0, elapsed, elapsed, outcome
        )
        self._record(record)
        return Generation("", record)

    def _record(self, record: RequestRecord) -> None:
        self.records.append(record)
        count_generation(record)

    def release(self, key: str) -> None:
        for replica in self.pool.replicas.values():
            replica.slots.release(key)

    def add_record(self, record: RequestRecord) -> None:
        self._record(record)

    def stats(self) -> dict[str, object]:
        tokenizer = "vocabulary" if self.vocabulary else "estimate: 1 token per UTF-8 byte"
        return {
            "records": [r.to_json() for r in self.records],
            "slots": [],
            "remote": {
                "protocol": self.settings.protocol,
                "tokenizer": tokenizer,
                "replicas": self.pool.table(),
            },
        }

    def close(self) -> None:
        for call in self._latest.values():
            call.task.cancel()
        if self._client is not None:
            try:
                task = asyncio.get_running_loop().create_task(self._client.aclose())
            except RuntimeError:  # no loop: the one that owned the connections is gone
                pass
            else:
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            self._client = None
        if self.vocabulary is not None:
            self.vocabulary.close()
            self.vocabulary = None

    async def aclose(self) -> None:
        """close(), then wait until the connections are closed."""
        self.close()
        await asyncio.gather(*self._closing)


def _render(request: Request) -> str:
    """The prompt as text. The service parses control tokens in it, so their text is removed
    from the code first: a file cannot forge a FIM marker or end the prompt."""
    controls = {s.text for s in request.segments if isinstance(s, Special)} | set(request.stop)
    parts = []
    for segment in request.segments:
        if isinstance(segment, Special):
            parts.append(segment.text)
            continue
        for control in controls:
            segment = segment.replace(control, "")
        parts.append(segment)
    return "".join(parts)


async def _check_status(response: httpx.Response, replica: Replica) -> None:
    if response.status_code < 400:
        return
    if response.status_code >= 500 or response.status_code == 429:
        raise ReplicaFailure(f"HTTP {response.status_code}")
    await response.aread()
    raise RemoteError(
        f"{replica.url} refused the request: HTTP {response.status_code} "
        f"{_error_message(response)}".rstrip()
    )


def _error_message(response: httpx.Response) -> str:
    """The service's own error message, short; never the body as a whole (it may echo code)."""
    try:
        error = response.json().get("error", "")
    except (ValueError, AttributeError):
        return ""
    message = error.get("message", "") if isinstance(error, dict) else str(error)
    return str(message)[:200]


class _Answer:
    """A streamed completion (server-sent events), read chunk by chunk."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.text = ""
        self.first_at: float | None = None
        self.prompt_tokens = self.cached_tokens = self.generated_tokens = 0

    async def read(
        self, response: httpx.Response, should_stop: Callable[[str], bool] | None
    ) -> None:
        chunks = 0
        async for line in response.aiter_lines():
            if not line or line.startswith((":", "event:", "id:", "retry:")):
                continue
            if not line.startswith("data:"):
                raise ReplicaFailure("the answer is not a completion stream")
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                break
            self._take(_json_object(data))
            chunks += 1
            if should_stop is not None and should_stop(self.text):
                break  # leaving the stream closes the connection: the server stops
        if not chunks:
            raise ReplicaFailure("the answer holds no completion")

    def _take(self, chunk: dict[str, Any]) -> None:
        piece = _piece(chunk)
        if piece and self.first_at is None:
            self.first_at = time.perf_counter()
        self.text += piece
        if piece:
            self.generated_tokens += 1
        # Counts where the service reports them: OpenAI `usage` (vLLM adds cached tokens),
        # llama-server's `timings` and `tokens_evaluated` on its last chunk.
        usage = _mapping(chunk.get("usage"))
        timings = _mapping(chunk.get("timings"))
        details = _mapping(usage.get("prompt_tokens_details"))
        self.prompt_tokens = _count(
            usage.get("prompt_tokens"), chunk.get("tokens_evaluated"), self.prompt_tokens
        )
        self.cached_tokens = _count(
            details.get("cached_tokens"), timings.get("cache_n"), self.cached_tokens
        )
        self.generated_tokens = _count(
            usage.get("completion_tokens"), timings.get("predicted_n"), self.generated_tokens
        )

    def ttft_ms(self) -> float:
        first = self.first_at or time.perf_counter()
        return round((first - self.started) * 1000, 2)


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(*values: object) -> int:
    """The first reported count (a non-negative integer) among `values`."""
    return next((v for v in values if isinstance(v, int) and v >= 0 and v is not True), 0)


def _json_object(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ReplicaFailure("the answer holds a chunk that is not JSON") from None
    if not isinstance(chunk, dict):
        raise ReplicaFailure("the answer holds a chunk that is not a JSON object")
    return chunk


def _piece(chunk: dict[str, Any]) -> str:
    """The text of one chunk: llama-server's /infill `content`, an OpenAI completion's
    `choices[0].text`, or a chat completion's `choices[0].delta.content`."""
    if "content" in chunk:
        piece = chunk["content"]
    else:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise ReplicaFailure("the answer holds a chunk without choices")
        if not choices:  # a usage-only chunk
            return ""
        choice = choices[0] if isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    if piece is None:
        return ""
    if not isinstance(piece, str):
        raise ReplicaFailure("the answer holds a chunk whose text is not a string")
    return piece
