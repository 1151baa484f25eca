"""Which rows of a specimen table play a role (training, keys, seen/unseen queries).

Roles come from ``cfg.data.splits`` (``SplitRoles``), so any source's split names work.
BIOSCAN-5M defaults (docs/datasets.md, "Splits and roles"): train = pretrain + train, keys = train +
key_unseen, test_seen = test, test_unseen = test_unseen, val_seen = val, val_unseen = val_unseen.
"""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from clibd.config import SplitRoles

ROLE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SplitRoles) if f.name != "unused")
# Roles whose rows are evaluated (labels compared): they must carry cfg.data.required_ranks.
EVAL_ROLES: tuple[str, ...] = ("keys", "test_seen", "test_unseen", "val_seen", "val_unseen")


def role_splits(roles: SplitRoles, role: str) -> list[str]:
    if role not in ROLE_NAMES:
        raise ValueError(f"unknown role {role!r}; roles are {list(ROLE_NAMES)}")
    return list(getattr(roles, role))


def known_splits(roles: SplitRoles) -> set[str]:
    """Every split name the config mentions: a role's, or ``unused``."""
    return {s for role in ROLE_NAMES for s in role_splits(roles, role)} | set(roles.unused)


def eval_splits(roles: SplitRoles) -> set[str]:
    return {s for role in EVAL_ROLES for s in role_splits(roles, role)}


def select_role(table: pd.DataFrame, roles: SplitRoles, role: str) -> pd.DataFrame:
    """Rows whose split belongs to ``role``, as a fresh table (index 0..n-1, order kept)."""
    splits = role_splits(roles, role)
    if table["split"].isna().all() and len(table):
        raise ValueError(
            "the table carries no split names (its source has no split column); "
            "map one with data.columns.split before selecting roles"
        )
    return table[table["split"].isin(splits).to_numpy(dtype=bool)].reset_index(drop=True)
