"""Schemathesis over the OpenAPI schema: generated requests (valid and malformed) to every
operation, with an admin token, never get a 5xx (issue 19 item 4). The event stream is
left out: it never ends, and tests/web/test_sse.py covers it."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.fixtures.web import Tokens, WebServer

EXCLUDED = {"/api/v1/events/stream"}


def operations(web_server: WebServer) -> list[Any]:
    document = web_server.app.openapi()
    document["paths"] = {p: v for p, v in document["paths"].items() if p not in EXCLUDED}
    schema = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_operation_answers_a_server_error(web_server: WebServer, tokens: Tokens) -> None:
    headers = tokens.headers("admin")
    checked = []
    for operation in operations(web_server):

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: Any) -> None:
            case.call_and_validate(base_url=web_server.url,
                                   headers={**(case.headers or {}), **headers},
                                   checks=[not_a_server_error], timeout=20)  # fmt: skip

        run()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 25, checked
