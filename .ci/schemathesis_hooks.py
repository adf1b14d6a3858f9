"""Schemathesis hooks for sugang's contract run (.ci/run).

sugang's contract is stricter than JSON Schema can say: an integer field
takes a JSON integer or a string of digits, and a number written with a
fraction or an exponent (`1.0`, `1e3`, `-0.0`) is 422 (API.md, Conventions;
tests/api/bad_input.rs holds that). JSON Schema counts `2.0` as an integer,
so schemathesis sends whole floats for `type: integer` and would report the
422 as a schema-valid request refused. This hook writes those whole floats as
the integers they stand for; everything else is sent as generated.
"""

import schemathesis


def _integral(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


@schemathesis.hook
def map_body(ctx, body):
    return _integral(body)
