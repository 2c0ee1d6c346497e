"""The ``registry:`` block of keel.yaml.

.. code-block:: yaml

    registry:
      environments: [staging, production]   # each holds at most one version
      require_approval: [production]        # promotion there becomes a request
      admins: [alice]                       # may force a promotion past failed gates
      policies:
        churn:
          data: data/validation.parquet
          target: churned
          gates: ["roc_auc >= 0.80", "roc_auc >= champion + 0.005"]
          confidence: 0.95
"""

from __future__ import annotations

from typing import Any

from keel.errors import ConfigError, NotFoundError, did_you_mean

DEFAULT_ENVIRONMENTS = ("staging", "production")


def section() -> dict[str, Any]:
    from keel.config import settings

    block = settings().section("registry")
    if not isinstance(block, dict):
        raise ConfigError("keel.yaml 'registry:' must be a mapping.", hint="See docs/registry.md for its keys.")
    return block


def _names(key: str, default: tuple[str, ...] = ()) -> list[str]:
    value = section().get(key, list(default))
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):  # {production: true, staging: false}
        value = [k for k, v in value.items() if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"keel.yaml registry.{key} must be a list of names, found {value!r}.", hint=f"e.g. {key}: [production]")
    return list(value)


def environments() -> list[str]:
    envs = _names("environments", DEFAULT_ENVIRONMENTS)
    if not envs:
        raise ConfigError("keel.yaml registry.environments is empty.", hint="List at least one, e.g. [staging, production].")
    return envs


def check_environment(env: str) -> str:
    envs = environments()
    if env not in envs:
        prefixed = [e for e in envs if isinstance(env, str) and env and e.startswith(env)]
        suggestion = did_you_mean(str(env), envs) or (f" Did you mean '{prefixed[0]}'?" if prefixed else "")
        raise NotFoundError(
            f"Unknown environment {env!r}." + suggestion,
            hint=f"Environments are {', '.join(envs)} (keel.yaml registry.environments); for a free pointer use an alias "
            f"(`keel models alias NAME {env} VERSION`).",
        )
    return env


def requires_approval(env: str) -> bool:
    return env in _names("require_approval")


def admins() -> list[str]:
    return _names("admins")


def policy_config(model: str) -> dict[str, Any] | None:
    policies = section().get("policies") or {}
    if not isinstance(policies, dict):
        raise ConfigError("keel.yaml registry.policies must map model names to policies.")
    found = policies.get(model)
    if found is not None and not isinstance(found, dict):
        raise ConfigError(f"keel.yaml registry.policies.{model} must be a mapping, found {found!r}.")
    return found
