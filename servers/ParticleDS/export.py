"""Writing results for people and other programs: the JSON Table and the CSV file.

The CSV is written to a temporary file in the target folder and renamed into place, so
an overnight queue reading the file never sees half of it.
"""

from __future__ import annotations

import csv
import os
import tempfile

from servers.common.errors import BadArgument, Failed, NotFound
from servers.common.jsonargs import dumps
from servers.ParticleDS.results import TABLE_COLUMNS, ParticleResults


def table_json(results: ParticleResults) -> str:
    """The Table attribute: a JSON list of row objects with :data:`TABLE_COLUMNS` keys."""
    return dumps(results.rows())


def write_csv(results: ParticleResults, path: str) -> str:
    """Write one row per particle to ``path`` (overwritten); return the absolute path written."""
    if not isinstance(path, str) or not path.strip():
        raise BadArgument("the CSV path is empty; give a file path on the server, e.g. /data/particles.csv")
    target = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise BadArgument(f"'{target}' is a directory; give a file name such as {target}/particles.csv")
    if not os.path.isdir(folder):
        raise NotFound(f"the folder '{folder}' does not exist on the server; create it or choose another")
    try:
        handle, temporary = tempfile.mkstemp(prefix=".particles-", suffix=".csv", dir=folder)
    except OSError as exc:
        raise Failed(f"cannot write in '{folder}' ({exc.strerror}); choose a writable folder") from None
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(TABLE_COLUMNS)
            for row in results.rows():
                writer.writerow([_csv_value(row[column]) for column in TABLE_COLUMNS])
        os.replace(temporary, target)
    except OSError as exc:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise Failed(f"writing '{target}' failed ({exc.strerror}); check the disk and permissions") from None
    return target


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
