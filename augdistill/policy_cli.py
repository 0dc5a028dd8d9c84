"""``augdistill policy show|plot``: inspect learned augmentation policies."""

from __future__ import annotations

import argparse

__all__ = ["add_policy_commands"]


def add_policy_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="inspect augmentation policies")
    p.set_defaults(handler=lambda a: (p.print_help(), 2)[1])
