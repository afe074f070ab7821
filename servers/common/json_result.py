"""The base of every reply a core hands its shell: a frozen dataclass that knows its JSON."""

from __future__ import annotations

from typing import Any

from servers.common.jsonargs import dumps


class JsonResult:
    """:meth:`to_json` for every result: the JSON of :meth:`as_dict` (the shell sends it as is)."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return dumps(self.as_dict())
