"""Who is asking: the identity every policy decision and audit row is made for.

On stdio the client is whoever started the server, so the identity is the OS user and its
groups. On TCP/WebSocket the transport layer sets it from the bearer token the client presents
(the policy maps token hashes to users, groups and roles).
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]
    transport: str  # "stdio" | "tcp" | "ws"
    token_name: str | None = None


def os_identity() -> Identity:
    """The user running this process and the names of all its groups (primary first)."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry, as in some containers
        user = str(uid)
    return Identity(user=user, groups=_group_names(os.getgid(), os.getgroups()), transport="stdio")


def _group_names(primary: int, others: list[int]) -> tuple[str, ...]:
    names: list[str] = []
    for gid in (primary, *others):
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            name = str(gid)
        if name not in names:
            names.append(name)
    return tuple(names)
