"""Policies behind one interface: :class:`Policy` and the :func:`make_policy` registry."""

from policies.base import Policy, PolicyOutputError, validate_action
from policies.registry import UnknownPolicyError, describe, make_policy, names, register, vla_names

__all__ = [
    "Policy",
    "PolicyOutputError",
    "UnknownPolicyError",
    "describe",
    "make_policy",
    "names",
    "register",
    "validate_action",
    "vla_names",
]
