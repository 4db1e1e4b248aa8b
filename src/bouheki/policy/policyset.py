"""What loading the configuration produces: every policy with its scope."""

from __future__ import annotations

from dataclasses import dataclass, field

from bouheki.common.api import Problem
from bouheki.common.settings import DaemonSettings
from bouheki.policy.model import PolicySpec

HOST_POLICY_NAME = "@host"  # '@' cannot start a unit name: no clash with units


@dataclass(frozen=True)
class NamedPolicy:
    """A merged policy and where it applies.

    name: the unit name or pattern for unit policies ('nginx.service',
    'docker-*.scope'), HOST_POLICY_NAME for the host policy, '@container' for
    a legacy `target: container` policy. Policy ids are kept per name.
    units: the unit names/patterns it applies to (empty for the host policy).
    files: the files it was read from, in the order applied.
    flags: extra POLICY_* flags (POLICY_FOREIGN_MNTNS_ONLY for containers).
    """

    name: str
    units: tuple[str, ...]
    spec: PolicySpec
    files: tuple[str, ...]
    flags: int = 0


@dataclass
class PolicySet:
    host: NamedPolicy | None
    units: list[NamedPolicy]
    settings: DaemonSettings = field(default_factory=DaemonSettings)
    warnings: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every file read

    def policies(self) -> list[NamedPolicy]:
        return ([self.host] if self.host is not None else []) + list(self.units)
