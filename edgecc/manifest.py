"""``manifest.json``: what was compiled, how, what came out, and whether it was verified.

Schema (``schema_version`` 1)::

    edgecc_version, created, source
    target:        {name, options, toolchain}
    inputs/outputs: [{name, shape, dtype[, dynamic]}]
    pipeline:      {text, passes: [{pass, options, modified, stats, seconds}]}
    model:         {before: {parameters, bytes, macs}, after: {...}}
    layers:        {before: [[layer, dtype, elements, bytes]], after: [...]}
    artifacts:     [{path, kind, bytes, sha256, description}]
    lowering:      {seconds, ...the target's facts; varies: {path: why}}
    verification:  {performed, metric, samples, max_abs, max_rel, cosine, sqnr_db, atol, rtol,
                    passed, reference}  or  {performed: false, reason}
    not_verified:  [what could not be checked on this machine]
    compile_seconds: {checks, load, passes, lowering, verify, write: wall seconds of each
                    stage; total: from the call to the manifest's writing (the stages sum
                    within it); parts: {passes: {pass: s}, lowering: {what the target
                    reports, e.g. tvm import, tvm tuning, tvm relax passes, tvm codegen,
                    tvm link}}}

Reproducibility: compiling the same model with the same options gives byte-identical
artifacts (the same ``sha256``), except the files a target lists in ``lowering.varies``
with the reason (a toolchain that embeds UUIDs or timestamps edgecc cannot remove).
``manifest.json`` itself records when and how long (``created``, ``seconds``); ``created``
honours ``SOURCE_DATE_EPOCH`` (reproducible-builds.org) when it is set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def created_timestamp() -> str:
    """Now (UTC, ISO 8601), or ``SOURCE_DATE_EPOCH`` when the build environment sets it."""
    import datetime

    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
            if epoch.isdigit() else datetime.datetime.now(datetime.timezone.utc))
    return when.isoformat(timespec="seconds")


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def jsonable(value: Any) -> Any:
    """Plain JSON (no NaN/Infinity tokens): non-finite floats become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def write_manifest(directory: str, manifest: dict[str, Any]) -> str:
    path = os.path.join(directory, MANIFEST)
    with open(path, "w") as f:
        json.dump(jsonable(manifest), f, indent=2, allow_nan=False)
        f.write("\n")
    return path


def read_manifest(directory: str) -> dict[str, Any]:
    from edgecc.errors import EdgeccError

    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise EdgeccError(
            f"'{directory}' is not an edgecc output directory (no {MANIFEST}); "
            "give the directory 'edgecc compile -o' wrote"
        )
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise EdgeccError(f"'{path}' is not valid JSON: {exc}") from exc
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EdgeccError(
            f"'{path}' has manifest schema {version}; this edgecc reads {SCHEMA_VERSION}: "
            "recompile with this version"
        )
    return data
