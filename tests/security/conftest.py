"""Fixtures of the security attack suite; see sec_helpers.py for what they set up."""

from sec_helpers import attacker, bystanders, server  # noqa: F401  (pytest fixtures)
