"""Secrets out of prompts and logs: known token shapes, private keys, URL passwords, values of
secret-named keys (`password = ...`), and long high-entropy strings.

Hand-written rather than detect-secrets: that library scans files line by line with two dozen
plugins (far too slow for a prompt rebuilt on every keystroke), reports findings instead of
replacing them, and brings `requests` for its verifiers. A handful of regular expressions over
the prompt costs well under a millisecond.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
from collections import Counter

REDACTED = "<redacted>"

_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
)
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk|pk|rk)[-_](?:live|test)[-_][\w.-]+"  # Stripe-style keys
    r"|\bsk-[\w-]{20,}"  # OpenAI-style keys
    r"|\bA(?:KIA|SIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_\w{20,}|\bgithub_pat_\w{20,}|\bglpat-[\w-]{20,}"  # GitHub, GitLab
    r"|\bxox[abposr]-[\w-]{10,}"  # Slack
    r"|\bAIza[\w-]{35}"  # Google API keys
    r"|\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]*"  # JWTs
)
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@")
_SECRET_VALUE = re.compile(
    r"(?i)(?P<key>[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key|credentials?|auth)[\"']?[ \t]*(?:=|:=|:)(?!=)[ \t]*)"
    r"(?P<quote>[\"']?)(?P<value>[^\s\"',{}\[\]#;()]+)"
)
"""`password = "hunter2"`, `API_KEY=...`, `token: ...`: the name must END with the secret word
(`prompt_tokens = 3` is no secret) and `==` is a comparison, not an assignment."""
_HARMLESS = frozenset(
    {"string", "integer", "number", "boolean", "object", "array", "null", "none", "true",
     "false", "~", "required", "optional", "str", "int", "bool", "self", "os.environ"}
)  # fmt: skip
"""Values of secret-named keys that are no secret: schema types, flags, type hints."""

_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z_.]*")

_CANDIDATE = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
"""Runs of base64/hex/url-safe characters long enough to be a key."""
MAX_ENTROPY_THRESHOLD = 4.5
"""Bits per character above which a long string is taken for a key: random base64 of 40
characters scores about 5, English words and identifiers 3 to 4, hex digests at most 4."""
MIN_CLASS_CHANGES = 0.4


@functools.lru_cache(maxsize=256)
def redact(text: str) -> str:
    """`text` with every secret it holds replaced by a `<redacted>` marker. Cached: while the user
    types, the suffix and the repository context of each prompt are the same texts again."""
    text = _PRIVATE_KEY.sub("<redacted private key>", text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(r"\1:" + REDACTED + "@", text)
    text = _SECRET_VALUE.sub(_redact_value, text)
    return _CANDIDATE.sub(_redact_random, text)


def _redact_value(match: re.Match[str]) -> str:
    value = match["value"]
    harmless = (
        value.lower() in _HARMLESS
        or value.startswith(("$", "<", "%", "{{"))  # a reference or placeholder
        or (value.isdigit() and len(value) < 8)  # max_tokens = 512
        # Unquoted, a name or attribute path is code reading a variable (`token = self.token`).
        or (not match["quote"] and _REFERENCE.fullmatch(value) is not None)
    )
    return match.group() if harmless else match["key"] + match["quote"] + REDACTED


def _redact_random(match: re.Match[str]) -> str:
    return REDACTED if looks_random(match.group()) else match.group()


def looks_random(word: str) -> bool:
    """A long string of letters and digits whose characters are spread like a key's, not like
    an identifier's: it mixes at least two of lower case, upper case and digits, holds a digit,
    and its Shannon entropy is near what random characters of its length would have."""
    classes = sum((any(c.islower() for c in word), any(c.isupper() for c in word),
                   any(c.isdigit() for c in word)))  # fmt: skip
    if classes < 2 or not any(c.isdigit() for c in word):
        return False
    threshold = min(MAX_ENTROPY_THRESHOLD, 0.85 * math.log2(len(word)))
    return shannon_entropy(word) >= threshold and _class_changes(word) >= MIN_CLASS_CHANGES


def _class_changes(word: str) -> float:
    """Share of neighbouring letters and digits of different kinds (lower, upper, digit):
    about 0.65 in random base64, under 0.35 in `InvalidBase64PaddingDefect` or an alphabet."""
    kinds = ["d" if c.isdigit() else "u" if c.isupper() else "l" for c in word if c.isalnum()]
    if len(kinds) < 2:
        return 0.0
    return sum(a != b for a, b in itertools.pairwise(kinds)) / (len(kinds) - 1)


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with its secrets redacted, so no handler it is attached to
    ever writes one (a secret can reach a log through an exception or a library's message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
