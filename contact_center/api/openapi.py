"""What the OpenAPI document says every route may answer besides its success: one error
body shape and the status codes that go with it, declared once and shared by the routers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Closed(BaseModel):
    """A response body whose fields are all declared: answering with an undeclared one is
    a bug the response validation catches (a 500 in the tests), never a silent drop."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Closed):
    loc: list[str] = Field(description="Where the problem is, e.g. [\"body\", \"events\", "
                                       "\"0\", \"text\"].")
    msg: str
    type: str


class Error(Closed):
    """Every HTTP error, 500s included, in the shape of the socket's error replies."""

    type: Literal["error"] = "error"
    code: str = Field(description="Stable and machine-readable: e.g. unauthenticated, "
                                  "forbidden, validation_error, malformed_json, "
                                  "message_too_large, unknown_conversation, unavailable, "
                                  "query_timeout, internal_error.")
    message: str = Field(description="For people; may change.")
    details: list[ErrorDetail] | None = Field(
        default=None, description="validation_error: each problem (the first 20).")


def error(description: str) -> dict[str, Any]:
    """A `responses` entry: an `Error` body, and when it is answered."""
    return {"model": Error, "description": description}


Responses = dict[int | str, dict[str, Any]]

# What any route may answer, whatever it does: the token check (before the body is read;
# slowed down for an address after many failures), the body limit and URL checks of the
# app's middleware, a dependency that is down or a connection too many, a bug.
COMMON: Responses = {
    401: error("unauthenticated: no valid API token (`Authorization: Bearer cc_…`) nor "
               "live session cookie"),
    403: error("forbidden: the token's user lacks the permission the route needs; csrf: "
               "signed in by the session cookie, a POST, PUT, PATCH or DELETE without its "
               "session's X-CSRF-Token header"),
    413: error("message_too_large: the request body is over 16 MiB"),
    422: error("validation_error: a parameter or the body is invalid (`details` lists "
               "each problem); malformed_json: the body is not JSON"),
    429: error("too_many_failures: too many failed authentications from this address; "
               "retry after the `Retry-After` seconds"),
    500: error("internal_error: a bug; report it if it persists"),
    503: error("unavailable: the database (or Redis) is down, full or unreachable; "
               "nothing was changed, retry"),
}

