"""A griffe extension for the API pages: the docstrings cross-reference in Sphinx's roles (``:class:`X```,
``:func:`~a.b.c```), which Markdown would print as they are; each becomes a code span of the name Sphinx would
show (the last component after ``~``). Loaded by mkdocstrings (``mkdocs.yml``: ``extensions``)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring's Sphinx roles as code spans before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
