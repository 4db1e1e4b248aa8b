"""`bouhekictl explain --offline`: the daemon's explain, from the files.

The configuration is loaded, resolved (domain names through this host's
resolver, executables by their files) and compiled as the daemon does, and
the question goes to the same code (service/explain.py), with the unit
placed where systemd would put it. So the answer equals the daemon's once
it has loaded these files, for a unit that runs in its default slice. No
daemon, no D-Bus.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .check import tree
from .errors import EXIT_CONFIG_INVALID, CtlError


def explain_offline(args: argparse.Namespace, query: Any) -> dict[str, Any]:
    from ..config import loader
    from ..config.errors import ConfigError
    from ..policy.assemble import compile_policy_set, policy_set_requirements
    from ..service import environment, explain

    main, dirs = tree(None, args.root, args.units_dir)
    try:
        policy_set = loader.load(main, dirs or loader.DEFAULT_SEARCH_DIRS)
    except ConfigError as e:
        lines = "\n".join(str(p) for p in e.problems)
        raise CtlError(f"the configuration is invalid:\n{lines}", EXIT_CONFIG_INVALID) from None
    env = environment.build(policy_set_requirements(policy_set))
    compiled = compile_policy_set(policy_set, env)
    policy = explain.policy_for_unit(compiled, query.unit)
    return dataclasses.asdict(explain.explain(compiled, policy, query))
