"""The keel error tree.

Every error keel raises on purpose is a :class:`KeelError`. Each carries a
message that says what failed, the offending value and what to do, and the
HTTP status the server answers with::

    KeelError                      400  (base; "bad input" unless said otherwise)
     ├── ConfigError               400  a setting has a value keel cannot use
     ├── ValidationError           422  a name, value or argument is not acceptable
     │    ├── ContractViolation    422  data broke an error-level contract check
     │    └── GatesFailed          422  a promotion was refused by its gates (``report`` holds each gate)
     ├── StepFailed                422  a pipeline step raised (``step``, ``result`` so far; resume to go on)
     ├── AuthenticationError       401  no valid credentials (missing, wrong, expired or revoked token)
     ├── ForbiddenError            403  the acting user may not do this (force a promotion, approve own request)
     ├── TooManyAttempts           429  too many failed logins from this user or client (``retry_after`` seconds)
     ├── NotFoundError             404  a run, experiment, model or artifact does not exist
     ├── ConflictError             409  the write collides with existing state
     │    └── WriteConflict        409  a concurrent write won a unique key or deadlock; nothing was written, retry
     ├── IntegrityError            409  stored content does not match its recorded hash
     ├── StoreError                503  a database or service cannot be reached or is not migrated
     └── DependencyError           500  an optional extra is not installed

No secret reaches a message: every KeelError masks the passwords and tokens of
the URIs in its message, hint and detail (:func:`redact_uris`). :func:`redact`
(also ``keel.config.redact``) masks every kind of secret in any text, for logs,
displays and stored records.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any


class KeelError(Exception):
    """Base of every error keel raises on purpose."""

    http_status: int = 400

    def __init__(self, message: str, *, hint: str | None = None, **detail: Any) -> None:
        # A database or service URI in a message never shows its password or token.
        message = redact_uris(message)
        hint = None if hint is None else redact_uris(hint)
        self.message = message
        self.hint = hint
        self.detail = {k: redact_uris(v) if isinstance(v, str) else v for k, v in detail.items()}
        super().__init__(message if hint is None else f"{message} {hint}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready body for the server and `--json` output."""
        out: dict[str, Any] = {"error": type(self).__name__, "message": str(self)}
        if self.detail:
            out["detail"] = {k: _jsonable(v) for k, v in self.detail.items()}
        return out


class ConfigError(KeelError):
    http_status = 400


class ValidationError(KeelError):
    http_status = 422


class ContractViolation(ValidationError):
    """An error-level data contract check failed; ``report`` holds every result."""

    def __init__(self, message: str, *, report: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class GatesFailed(ValidationError):
    """A promotion was refused by its gates; ``report`` holds every gate's result."""

    def __init__(self, message: str, *, report: Any, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class StepFailed(KeelError):
    """A pipeline step raised; ``result`` holds the pipeline result so far, ``step`` the step's name."""

    http_status = 422

    def __init__(self, message: str, *, step: str, result: Any, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, step=step, run_id=getattr(result, "run_id", None))
        self.step = step
        self.result = result


class AuthenticationError(KeelError):
    """No valid credentials: a missing, wrong, expired or revoked token or password."""

    http_status = 401


class ForbiddenError(KeelError):
    """The acting user may not do this (force a promotion, approve their own request)."""

    http_status = 403


class TooManyAttempts(KeelError):
    """Too many failed logins for one user or from one client; retry after ``retry_after`` seconds."""

    http_status = 429

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, retry_after=retry_after)
        self.retry_after = retry_after


class NotFoundError(KeelError):
    http_status = 404


class ConflictError(KeelError):
    http_status = 409


class WriteConflict(ConflictError):
    """A concurrent writer took the same unique key first, or the database broke a deadlock.

    The transaction was rolled back as a whole, so nothing of it was written;
    the operation can be retried (``MetadataStore.transact`` does so itself).
    """


class IntegrityError(KeelError):
    http_status = 409


class StoreError(KeelError):
    http_status = 503


class DependencyError(KeelError):
    http_status = 500


# -- redaction (keel.config re-exports these: ``keel.config.redact``) ----------------------

MASK = "***"

# A key names a secret when its last word is one of _SECRET_WORD (DB_PASSWORD, AWS_SECRET_ACCESS_KEY,
# api-key, X-Amz-Signature) or ends with one of _SECRET_END (sslpassword, accesstoken, apikey), or when
# any word is one of _SECRET_ANY (SECRET_NAME). "tokenizer", "max_tokens" and "monkey" are not secrets.
_SECRET_WORD = {"key", "pwd", "pass", "auth", "sig", "cookie", "session", "credential", "credentials"}
_SECRET_END = ("password", "passwd", "passphrase", "token", "secret", "apikey", "accesskey", "secretkey", "privatekey", "signature")
_SECRET_ANY = {"password", "passwd", "secret", "token", "credentials"}
_WORD_SPLIT = re.compile(r"[_.\-]+")
# scheme://user:password@host -> scheme://user:***@host (the user stays: it says who connects).
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*):(?P<pw>[^\s@/'\"]+)@")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{}]+")
# key=value, key: value, "key": "value" (query strings, env, argv, JSON, YAML).
_KEY_VALUE = re.compile(
    r"(?<![A-Za-z0-9_])(?P<key>[A-Za-z][A-Za-z0-9_.\-]*)(?P<sep>[\"']?\s*[=:]\s*)"
    r"(?:(?P<q>[\"'])(?P<qvalue>[^\"'\n]*)(?P=q)|(?P<value>(?!//)[^\s&;,?#()<>'\"}\]]+))"
)
# Authorization: Bearer abc / Basic abc
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=\-]{6,})", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Whether a setting, variable, parameter or header named ``key`` holds a secret."""
    words = [w for w in _WORD_SPLIT.split(key.lower()) if w]
    if not words:
        return False
    return words[-1] in _SECRET_WORD or words[-1].endswith(_SECRET_END) or any(w in _SECRET_ANY for w in words)


def _mask_pair(m: re.Match[str]) -> str:
    value = m["qvalue"] if m["q"] else m["value"]
    if not value or value == MASK or not is_secret_key(m["key"]):
        return m[0]
    q = m["q"] or ""
    return f"{m['key']}{m['sep']}{q}{MASK}{q}"


def _mask_uri(m: re.Match[str]) -> str:
    uri = _URI_PASSWORD.sub(lambda u: f"{u['head']}:{MASK}@", m[0])
    head, sep, query = uri.partition("?")
    return head + sep + _KEY_VALUE.sub(_mask_pair, query) if sep else uri


def redact_uris(text: str) -> str:
    """``text`` with the password and secret query parameters of every ``scheme://`` URI masked.

    The narrow form of :func:`redact` that every :class:`KeelError`
    applies to its message: it touches URIs only, so prose stays as written.
    """
    if "://" not in text:
        return text
    return _URI.sub(_mask_uri, text)


def redact(text_or_uri: str) -> str:
    """``text_or_uri`` with passwords and tokens replaced by ``***``.

    Call it on anything that leaves the process (logs, error messages, ``keel
    config``, stored argv and environment). It masks the password of
    ``scheme://user:password@host`` URIs, the values of query parameters and
    ``KEY=VALUE`` / ``key: value`` pairs whose key names a password, token,
    secret or key (``?password=``, ``token=``, ``access_key=``,
    ``AWS_SECRET_ACCESS_KEY=...``), and bearer/basic credentials. Everything
    else is kept as it was, so a redacted URI still says where it points::

        >>> redact("postgresql://bob:s3cret@db:5432/keel?sslmode=require&password=x")
        'postgresql://bob:***@db:5432/keel?sslmode=require&password=***'
    """
    if not text_or_uri:
        return text_or_uri
    out = _BEARER.sub(lambda m: m["head"] + MASK, text_or_uri)
    out = redact_uris(out)
    return _KEY_VALUE.sub(_mask_pair, out)


def did_you_mean(value: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """A " Did you mean 'x'?" suffix, or "" when nothing is close."""
    matches = difflib.get_close_matches(value, list(choices), n=1, cutoff=cutoff)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def missing_extra(module: str, extra: str) -> DependencyError:
    """The error for an optional dependency that is not installed."""
    return DependencyError(
        f"This feature needs the '{module}' package, which is not installed.",
        hint=f"Install it with: pip install 'keel[{extra}]'",
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
