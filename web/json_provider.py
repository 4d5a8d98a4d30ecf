"""Flask's JSON through orjson: every jsonify costs a fraction of the standard library's
(the dashboard's curves and the statistics' series are thousands of numbers a refresh).

Output is what Flask's default provider writes for the same values: keys in insertion
order, dates, decimals and UUIDs through its `default`; NaN, which is not JSON, as null
(nothing here sends one). A value orjson cannot write, an integer beyond 64 bits (jsonb
holds them), goes through the standard library as before.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
        except TypeError:  # an integer orjson cannot write
            return super().dumps(obj, **kwargs)
