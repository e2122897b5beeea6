"""The names of a model's aliases and of a version's statuses, written once.

Aliases: ``production`` (serves all traffic but the canary's share), ``canary`` (serves its
``weight`` of the traffic) and ``shadow`` (scored on mirrored traffic, never answers).
A version is a ``candidate`` (passed its gate), ``rejected`` (did not) or ``archived``
(retired by a person). Events, the registry API, the registry's rules, serving and the
CLIs import these instead of retyping the strings.
"""

from __future__ import annotations

from typing import Literal, get_args

Alias = Literal["production", "canary", "shadow"]
ALIASES: tuple[Alias, ...] = get_args(Alias)

VersionStatus = Literal["candidate", "rejected", "archived"]
VERSION_STATUSES: tuple[VersionStatus, ...] = get_args(VersionStatus)
