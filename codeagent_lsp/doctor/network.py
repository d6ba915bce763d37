"""Network checks: the egress guard refuses a connection off this machine before any packet is
sent; the machine's interfaces and default routes, for the administrator to compare with the
intended segmentation; and each inference replica: reachable, TLS valid, token accepted, model
served, one timed 8-token completion."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import ipaddress
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx

from codeagent_lsp.doctor.check import Check, Options
from codeagent_lsp.engine import models
from codeagent_lsp.engine.backend import Request
from codeagent_lsp.engine.remote import RemoteBackend, RemoteError, open_remote
from codeagent_lsp.security import egress
from codeagent_lsp.security.policy import Policy

DOCUMENTATION_ADDRESS = ("192.0.2.1", 9)
"""TEST-NET-1 (RFC 5737): never a real host, so a connection there is only ever a probe."""
PROBE_TOKENS = 8
PROBE_PROMPT = "def add(a, b):\n    return"
_SIOCGIFADDR = 0x8915


def network_checks(options: Options) -> Iterator[Check]:
    yield egress_check(options.policy)
    yield interfaces_check()
    urls = tuple(dict.fromkeys((*options.remote_urls, *options.settings.remote.urls)))
    if not urls:
        yield Check(
            "network", "replicas", "ok",
            "no inference replica configured (codeagent.remote.urls, --remote): the embedded "
            "engine serves",
        )  # fmt: skip
        return
    yield from asyncio.run(_replica_checks(urls, options))


# --- egress ------------------------------------------------------------------------------------


def egress_check(policy: Policy) -> Check:
    """Install the guard the server installs and try 192.0.2.1: the guard must refuse it in the
    interpreter, before the connect system call (so nothing is sent); the kernel's count of
    TCP connection attempts (ActiveOpens) is read before and after as evidence."""
    refused: list[str] = []
    egress.install(egress.EgressGuard(policy.inference_urls, refused.append))
    before = _active_opens()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(DOCUMENTATION_ADDRESS)
            outcome = "it connected"
        except PermissionError:
            outcome = ""
        except OSError as exc:
            outcome = f"the system call ran ({errno.errorcode.get(exc.errno or 0, exc)})"
    after = _active_opens()
    data = {"refused": list(refused), "activeOpensBefore": before, "activeOpensAfter": after}
    if outcome or not refused:
        return Check(
            "network", "egress guard", "fail",
            f"a connection to {DOCUMENTATION_ADDRESS[0]} was not stopped by the guard: {outcome}",
            "report this: the guard is sys.addaudithook on socket.connect (Python 3.8+)", data,
        )  # fmt: skip
    evidence = "" if before is None or before != after else "; TCP connection attempts unchanged"
    return Check(
        "network", "egress guard", "ok",
        f"a connection to {DOCUMENTATION_ADDRESS[0]} is refused before the system call, no "
        f"packet sent{evidence}", data=data,
    )  # fmt: skip


def _active_opens(snmp: Path = Path("/proc/net/snmp")) -> int | None:
    """TCP connections this network namespace has tried to open (SYNs sent), or None."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        rows = [line.split() for line in snmp.read_text().splitlines() if line.startswith("Tcp:")]
        names, values = rows[0], rows[1]
        return int(values[names.index("ActiveOpens")])
    return None


# --- interfaces and routes -----------------------------------------------------------------------


def interfaces_check() -> Check:
    """Read from socket.if_nameindex, an ioctl per interface (IPv4) and /proc/net (IPv6,
    routes): no dependency, and no command run."""
    ipv6 = _ipv6_addresses()
    interfaces = [
        {"name": name, "addresses": [*_ipv4_address(name), *ipv6.get(name, [])]}
        for _, name in socket.if_nameindex()
    ]
    routes = _default_routes()
    listed = "; ".join(f"{i['name']} {', '.join(i['addresses']) or '-'}" for i in interfaces)
    via = "; ".join(f"default via {r['gateway']} dev {r['interface']}" for r in routes)
    message = f"{listed}; {via or 'no default route: only directly attached networks'}"
    return Check(
        "network", "interfaces", "ok", message,
        "compare with the intended segmentation",
        {"interfaces": interfaces, "defaultRoutes": routes},
    )  # fmt: skip


def _ipv4_address(name: str) -> list[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            answer = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:  # no IPv4 address
            return []
    return [socket.inet_ntoa(answer[20:24])]


def _ipv6_addresses(table: Path = Path("/proc/net/if_inet6")) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for line in table.read_text().splitlines():
            fields = line.split()
            if len(fields) == 6:
                address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                found.setdefault(fields[5], []).append(f"{address}/{int(fields[2], 16)}")
    return found


def _default_routes() -> list[dict[str, str]]:
    routes = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                gateway = socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
                routes.append({"interface": fields[0], "gateway": gateway})
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/ipv6_route").read_text().splitlines():
            fields = line.split()
            if len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00":
                hop = ipaddress.IPv6Address(bytes.fromhex(fields[4]))
                if not hop.is_unspecified:
                    routes.append({"interface": fields[9], "gateway": str(hop)})
    return routes


# --- inference replicas --------------------------------------------------------------------------


async def _replica_checks(urls: tuple[str, ...], options: Options) -> list[Check]:
    return [await replica_check(url, options) for url in urls]


async def replica_check(url: str, options: Options) -> Check:
    """One replica, step by step; the first step that fails is the one reported."""
    settings = options.settings
    # The probe sends plain text, so no FIM template is needed to talk to the replica.
    template = settings.completion.template
    probe_settings = dataclasses.replace(
        settings,
        remote=dataclasses.replace(settings.remote, urls=(url,)),
        completion=dataclasses.replace(
            settings.completion, template="qwen2.5-coder" if template == "auto" else template
        ),
    )
    name = f"replica {url}"
    try:
        policy = options.policy
        backend, _ = open_remote(
            probe_settings, None, policy.inference_urls, policy.inference_token_file
        )
    except (RemoteError, models.ModelError) as exc:
        return Check("network", name, "fail", str(exc), "fix codeagent.remote or the policy")
    try:
        return await _probe(name, url, backend, options)
    finally:
        await backend.aclose()


async def _probe(name: str, url: str, backend: RemoteBackend, options: Options) -> Check:
    remote = options.settings.remote
    endpoint = egress.endpoint_of(url)
    steps: list[str] = []
    data: dict[str, object] = {"steps": steps}
    try:
        socket.create_connection((endpoint.host, endpoint.port), remote.connectTimeout).close()
    except OSError as exc:
        return Check(
            "network", name, "fail", f"unreachable: {exc.strerror or exc}",
            "start the replica, or check the route and firewall between the two machines", data,
        )  # fmt: skip
    steps.append("reachable")
    try:
        answer = await backend.get(url.rstrip("/"), "/v1/models")
    except httpx.HTTPError as exc:
        if _tls_failure(exc) is not None:
            return Check(
                "network", name, "fail", f"TLS not valid: {_tls_failure(exc)}",
                "give the replica a certificate for its name, signed by codeagent.remote."
                "caBundle (or the system's store)", data,
            )  # fmt: skip
        return Check("network", name, "fail", f"no answer: {type(exc).__name__}", "", data)
    steps.append("TLS valid" if url.startswith("https:") else "plaintext")
    if answer.status_code in (401, 403):
        return Check(
            "network", name, "fail",
            f"the token was refused (HTTP {answer.status_code})",
            "put the replica's token in the file the policy's [network] token_file names", data,
        )  # fmt: skip
    served = _model_ids(answer)
    if served is None:
        return Check(
            "network", name, "fail",
            f"/v1/models answered HTTP {answer.status_code}, not a model list",
            "point codeagent.remote.urls at an OpenAI-compatible service", data,
        )  # fmt: skip
    steps.append("token accepted")
    data["models"] = served
    if remote.model and remote.model not in served:
        return Check(
            "network", name, "fail",
            f"it does not serve model {remote.model!r} (it serves {', '.join(served) or 'none'})",
            "set codeagent.remote.model to a served name", data,
        )  # fmt: skip
    steps.append(f"serves {remote.model or ', '.join(served)}")
    return await _timed_completion(name, url, backend, steps, data)


async def _timed_completion(
    name: str, url: str, backend: RemoteBackend, steps: list[str], data: dict[str, object]
) -> Check:
    request = Request(key="doctor", segments=[PROBE_PROMPT], max_tokens=PROBE_TOKENS)
    try:
        generation = await backend.generate(request)
    except RemoteError as exc:
        return Check("network", name, "fail", f"the completion failed: {exc}", "", data)
    record = generation.record
    data["record"] = record.to_json()
    steps.append(f"{record.generated_tokens} tokens in {record.total_ms:.0f} ms")
    plaintext = url.startswith("http:") and not egress.is_local(egress.endpoint_of(url).host)
    if plaintext:
        return Check(
            "network", name, "warn",
            ", ".join(steps) + "; code and the token cross the network unencrypted",
            "serve the replica over https", data,
        )  # fmt: skip
    return Check("network", name, "ok", ", ".join(steps), data=data)


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS error behind an httpx error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _model_ids(answer: httpx.Response) -> list[str] | None:
    if answer.status_code != 200:
        return None
    try:
        return [str(m["id"]) for m in answer.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return None
