"""Which policy each id stood for in the generation in force, kept while the
pinned programs outlive the daemon.

The programs count hits and report events by policy id. A daemon that adopts
its predecessor's programs (a restart, an upgrade, a crash) must give each
policy the id it had, or counters and the events buffered while no daemon
ran would be pinned on another policy whenever the configuration changed in
between. So after every apply the daemon writes the generation and its
name -> id map to its runtime directory (/run/bouheki: RuntimeDirectory=,
kept across restarts by RuntimeDirectoryPreserve=restart, gone at a stop
like the pins). The successor trusts it only for the very generation the
adopted maps hold active.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bouheki")

FILE = "policy-ids.json"


@dataclass(frozen=True)
class SavedIds:
    generation: int
    ids: dict[str, int]  # policy name -> id

    def names(self) -> dict[int, str]:
        return {i: n for n, i in self.ids.items()}


def save(directory: Path, generation: int, ids: dict[str, int]) -> None:
    """Atomically: a successor reads the old map or the new, never half."""
    path = directory / FILE
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"generation": generation, "ids": ids}))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot keep the policy ids in %s (%s): a successor that adopts the "
                    "programs will count and name by fresh ids", path, e)  # fmt: skip


def load(directory: Path) -> SavedIds | None:
    path = directory / FILE
    try:
        data = json.loads(path.read_text())
        ids = {str(k): int(v) for k, v in data["ids"].items()}
        return SavedIds(int(data["generation"]), ids)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None
