"""Flask's JSON responses through orjson: every jsonify costs a fraction of the standard
library's (the dashboard's curves and the statistics' series are thousands of numbers a
refresh).

Only responses change. `dumps` and `loads` stay the standard library's, so what the test
client and anything else calling `app.json.dumps` sends is what a bot's `json.dumps` sends,
NaN included (the prediction routes take NaN as a missing feature). A response is written as
Flask's default provider writes it (keys in insertion order; decimals and UUIDs through its
`default`; indented when debugging), except that a NaN is written as null, which is JSON,
where the standard library would write `NaN`, which is not, and that a datetime is written
as the API documents its times, ISO 8601 in UTC (Flask's own `default` writes an HTTP
date). A value orjson cannot write, an integer beyond 64 bits (jsonb holds them), goes
through the standard library as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Response, current_app
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.astimezone(UTC).isoformat()
        return DefaultJSONProvider.default(o)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if args and kwargs:
            raise TypeError("jsonify takes positional or keyword arguments, not both")
        obj = (args[0] if len(args) == 1 else list(args)) if args else (kwargs or None)
        indented = self.compact is False or (self.compact is None and current_app.debug)
        options = _OPTIONS | (orjson.OPT_INDENT_2 if indented else 0)
        try:
            body = orjson.dumps(obj, default=self.default, option=options).decode()
        except TypeError:  # an integer orjson cannot write
            body = self.dumps(obj, **({"indent": 2} if indented else {"separators": (",", ":")}))
        return current_app.response_class(f"{body}\n", mimetype=self.mimetype)
