"""Netfilter and IPVS rulesets: the objects, and the text formats of the real tools."""

from kservice.netfilter.ruleset import *  # noqa: F403
from kservice.netfilter.ruleset import __all__ as _ruleset_all

__all__ = sorted(_ruleset_all)
