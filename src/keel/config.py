"""One typed settings table: environment ``KEEL_*`` > ``keel.yaml`` > default.

A project is the folder holding ``keel.yaml``; keel looks for it upwards from
the working directory, as git looks for ``.git``. Without one, the working
directory is the project. Embedded stores live in ``<project>/.keel/``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import ConfigError, did_you_mean

# The redaction helpers live in keel.errors (the lowest layer, so every KeelError can use
# them); keel.config.redact is where the rest of keel and users look for them.
from keel.errors import is_secret_key as is_secret_key
from keel.errors import redact as redact
from keel.errors import redact_uris as redact_uris

CONFIG_FILE = "keel.yaml"
STATE_DIR = ".keel"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("not a valid bool (use true or false)")


def _float(value: Any) -> float:
    return float(value)


def _int(value: Any) -> int:
    return int(value)


def _str(value: Any) -> str:
    return str(value)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = _str

    @property
    def env(self) -> str:
        return "KEEL_" + self.name.upper()


# Defaults of None are derived from the project root in `Settings._derive`.
SETTINGS: tuple[Setting, ...] = (
    Setting("metadata_uri", None, "SQLAlchemy URL of the metadata store (runs, registry, definitions). Default: SQLite in .keel/keel.db; PostgreSQL: postgresql+psycopg://user@host/db"),
    Setting("artifacts_uri", None, "Where artifacts are stored, content-addressed: a folder path or s3://bucket/prefix. Default: .keel/artifacts"),
    Setting("s3_endpoint_url", "", "Endpoint of an S3-compatible server (MinIO, moto, ...); empty for AWS S3"),
    Setting("lake_uri", None, "Parquet datasets (offline features, prediction logs, labels): a folder or s3://bucket/prefix. Default: .keel/lake"),
    Setting("online_uri", None, "Online feature store: sqlite:///path, redis://host:port/db or memory://. Default: SQLite in .keel/online.db"),
    Setting("engine", "local", "Compute engine: local (in-process) or ray"),
    Setting("ray_address", "", "Ray cluster address; empty starts Ray locally"),
    Setting("user", "", "Acting user recorded on every event. Default: the operating-system user"),
    Setting("experiment", "Default", "Experiment used when a run names none"),
    Setting("features_module", "features.py", "Python file or module holding the project's feature definitions"),
    Setting("flush_interval", 1.0, "Seconds between flushes of buffered metrics (the most a crash can lose)", _float),
    Setting("heartbeat_timeout", 30.0, "Seconds without a heartbeat after which a running run shows as crashed", _float),
    Setting("max_value_length", 6000, "Longest param or tag value, in characters", _int),
    Setting("capture_environment", True, "Record git state, argv and the package lock on every run", _bool),
    Setting("tracking_uri", "", "URL of a keel server (http://host:port): the Python API and the CLI then go through it, with KEEL_TRACKING_TOKEN, and need no database or bucket settings"),
    Setting("tracking_token", "", "API token for the keel server named by KEEL_TRACKING_URI. Default: the one `keel login` stored for that URI in the credentials file"),
    Setting("login_file", None, "Where `keel login` keeps tokens per server URI (readable by the user only). Default: ~/.keel/credentials.json"),
    Setting("require_services", False, "Tests: fail, instead of skipping, when PostgreSQL or Redis is unreachable", _bool),
)
_BY_NAME = {s.name: s for s in SETTINGS}

# The authenticated user of the current server request (a context variable, so each request and
# task sees its own); `Settings.acting_user` returns it before KEEL_USER or the OS user.
_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("keel_acting_user", default=None)


@contextlib.contextmanager
def acting_as(user: str) -> Iterator[None]:
    """Record ``user`` as the acting user on every event written inside the block.

    The server wraps each authenticated request in it, so the identity on an audit
    event comes from authentication, never from a name the client sends.
    """
    token = _acting.set(user)
    try:
        yield
    finally:
        _acting.reset(token)


def _server_key(uri: str) -> str:
    return str(uri).strip().rstrip("/")


def read_credentials(path: Path) -> dict[str, str]:
    """{server URI: token} from a credentials file written by :func:`store_credential`; {} without one."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    tokens = data.get("tokens") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in tokens.items()} if isinstance(tokens, dict) else {}


def store_credential(uri: str, token: str, path: Path | None = None) -> Path:
    """Keep ``token`` for the server at ``uri`` (``keel login``), in a file only the user can read."""
    import json

    path = Path(settings().login_file) if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tokens = read_credentials(path)
    tokens[_server_key(uri)] = token
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"tokens": tokens}, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    reset()
    return path


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` that holds keel.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return None


@dataclass(frozen=True)
class Value:
    value: Any
    source: str  # "env", "keel.yaml", "default"


class Settings:
    """The effective settings of one project. Build with :func:`load_settings`."""

    def __init__(self, root: Path, file_values: dict[str, Any], env: dict[str, str]) -> None:
        self.root = root
        self.config_file = root / CONFIG_FILE if (root / CONFIG_FILE).is_file() else None
        self.sections = {k: v for k, v in file_values.items() if isinstance(v, dict)}
        self._values: dict[str, Value] = {}
        unknown = [k for k, v in file_values.items() if not isinstance(v, dict) and k not in _BY_NAME]
        if unknown:
            raise ConfigError(
                f"Unknown setting '{unknown[0]}' in {self.config_file}."
                + did_you_mean(unknown[0], _BY_NAME),
                hint="Run `keel config` to list every setting.",
            )
        for s in SETTINGS:
            if s.env in env:
                raw, source = env[s.env], "env"
            elif s.name in file_values:
                raw, source = file_values[s.name], CONFIG_FILE
            else:
                raw, source = s.default, "default"
            if raw is None:
                raw = self._derive(s.name)
            try:
                parsed = s.parse(raw)
            except (TypeError, ValueError) as exc:
                where = s.env if source == "env" else f"{source} key '{s.name}'"
                raise ConfigError(f"Setting {where} has value {raw!r}: {exc}.", hint=s.help) from None
            self._values[s.name] = Value(parsed, source)
        if not self._values["tracking_token"].value and self._values["tracking_uri"].value:
            stored = read_credentials(Path(self._values["login_file"].value)).get(_server_key(self._values["tracking_uri"].value))
            if stored:
                self._values["tracking_token"] = Value(str(stored), "credentials file")

    def _derive(self, name: str) -> str:
        if name == "login_file":
            return str(Path.home() / STATE_DIR / "credentials.json")
        state = self.root / STATE_DIR
        return {
            "metadata_uri": f"sqlite:///{state / 'keel.db'}",
            "artifacts_uri": str(state / "artifacts"),
            "lake_uri": str(state / "lake"),
            "online_uri": f"sqlite:///{state / 'online.db'}",
        }[name]

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name].value
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str) -> Any:
        if name not in self._values:
            raise ConfigError(f"Unknown setting '{name}'." + did_you_mean(name, _BY_NAME))
        return self._values[name].value

    def section(self, name: str) -> dict[str, Any]:
        """A nested block of keel.yaml (e.g. ``registry:``), or {}."""
        return dict(self.sections.get(name, {}))

    def items(self) -> list[tuple[Setting, Value]]:
        return [(s, self._values[s.name]) for s in SETTINGS]

    @property
    def acting_user(self) -> str:
        # Inside a server request the authenticated identity wins over KEEL_USER (see `acting_as`).
        authenticated = _acting.get()
        if authenticated is not None:
            return authenticated
        if self.user:
            return str(self.user)
        import getpass

        try:
            return getpass.getuser()
        except Exception:
            return "unknown"


def describe_yaml_error(exc: Exception) -> tuple[int | None, str, str | None]:
    """(1-based line to fix, one-line description, hint) of a PyYAML error.

    An unclosed bracket, brace or quote is only noticed where the parser gives
    up, often lines later; the line to fix is where the construct started (the
    context mark). Anything else (a bad indent, a stray ``:``) is at the line
    where the parser stopped (the problem mark).
    """
    context = str(getattr(exc, "context", None) or "")
    cmark, pmark = getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or str(exc).splitlines()[0])
    opened = cmark is not None and any(word in context for word in ("flow", "scanning", "quoted"))
    mark = cmark if opened else (pmark or cmark)
    line = None if mark is None else int(mark.line) + 1
    text = problem
    if opened and cmark is not None and pmark is not None and pmark.line != cmark.line:
        text = f"{context.removeprefix('while ')} that starts here is not closed ({problem} at line {pmark.line + 1})"
    elif context and cmark is not None and cmark.line + 1 != line:
        text = f"{problem} ({context} that starts at line {cmark.line + 1})"
    if opened:
        hint = None
    elif "mapping values are not allowed" in problem:
        hint = "Quote a value that contains ': ', or look for a missing ':' on the line above."
    else:
        hint = "Check the indentation of this line against the lines above it."
    return line, text, hint


def _read_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line, text, hint = describe_yaml_error(exc)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(
            f"{where}: not valid YAML: {text}.", hint=(hint + " " if hint else "") + "Fix the file or run `keel init --force`.", file=str(path), line=line
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, found {type(data).__name__}.")
    return data


def load_settings(start: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read the settings for the project at or above ``start``."""
    env = dict(os.environ if env is None else env)
    root_env = env.get("KEEL_HOME")
    root = Path(root_env).resolve() if root_env else (find_project_root(start) or (start or Path.cwd()).resolve())
    file_values = _read_file(root / CONFIG_FILE) if (root / CONFIG_FILE).is_file() else {}
    return Settings(root, file_values, env)


_current: Settings | None = None
_current_key: tuple[str, tuple[tuple[bytes, bytes], ...]] | None = None


def settings() -> Settings:
    """The settings of the current project, re-read when the folder or KEEL_* change."""
    global _current, _current_key
    raw = getattr(os.environ, "_data", None)  # the undecoded mapping: no per-key decoding (~5 µs)
    if isinstance(raw, dict):
        pairs = tuple((k, v) for k, v in raw.items() if k[:5] == b"KEEL_")
    else:  # pragma: no cover - other platforms
        pairs = tuple((k.encode(), v.encode()) for k, v in os.environ.items() if k.startswith("KEEL_"))
    key = (os.getcwd(), pairs)
    if _current is None or key != _current_key:
        _current = load_settings()
        _current_key = key
    return _current


def reset() -> None:
    """Forget the cached settings (tests, `keel init`)."""
    global _current, _current_key
    _current = None
    _current_key = None


INIT_TEMPLATE = """\
# keel project settings. Each can be overridden by an environment variable
# KEEL_<NAME>; `keel config` shows every effective value and where it came from.
#
# metadata_uri: postgresql+psycopg://user@host:5432/keel   # default: SQLite in .keel/
# artifacts_uri: s3://bucket/keel                           # default: .keel/artifacts
# online_uri: redis://localhost:6379/0                      # default: SQLite in .keel/
experiment: {experiment}
features_module: features.py
"""


def init_project(folder: Path, *, force: bool = False, experiment: str = "Default") -> Path:
    """Create keel.yaml and .keel/ in ``folder``; returns the keel.yaml path.

    ``experiment`` is the project's default experiment (where runs that name none go).
    """
    folder = folder.resolve()
    path = folder / CONFIG_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists.", hint="Use --force to overwrite it.")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(INIT_TEMPLATE.format(experiment=experiment))
    (folder / STATE_DIR).mkdir(exist_ok=True)
    gi = folder / STATE_DIR / ".gitignore"
    if not gi.exists():
        gi.write_text("*\n")
    reset()
    return path
