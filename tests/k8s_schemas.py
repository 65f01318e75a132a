"""kubernetes_validate's schema files, read once per test process.

`kubernetes_validate.validate()` opens and parses two JSON files on every call: the kind's schema
and the version's `_definitions.json` (1.5 MB). The suite validates a few hundred objects, so
that parsing was most of its validation time. The files are the package's own read-only data
and validate() only reads what it parses, so install() keeps each file's parsed contents for the
process. What is validated, and against which schema, is unchanged.
"""

from __future__ import annotations

import functools

from kubernetes_validate import utils


def install() -> None:
    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.cache(utils.schema_contents)
