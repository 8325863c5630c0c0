"""The requests and responses of the service's API (``/v1``), as pydantic models.

These models are what the server validates requests with and builds responses from, and
schema/service.schema.json is generated from them (``kprobegen serve --schema``;
tests/test_service.py checks that the file is what they give now). docs/service.md says
what each one is for.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

API_VERSION = 1
#: A module name: what the kernel and host mode accept (a C identifier, at most 56 characters).
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,55}$")
#: The largest request body read (an inline spec is the biggest thing a client sends).
MAX_BODY = 1 << 20

ModuleName = str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests --------------------------------------------------------------------------------

class LoadRequest(_Model):
    """POST /v1/modules: exactly one of ``spec`` (the YAML text of a spec: the server stores it
    and builds it against the running kernel), ``spec_path`` (a spec file on this machine) or
    ``ko_path`` (a kprobegen .ko built for the running kernel)."""

    spec: str | None = Field(None, max_length=MAX_BODY, description="a spec's YAML text")
    spec_path: str | None = Field(None, max_length=4096, description="an absolute path to a spec file")
    ko_path: str | None = Field(None, max_length=4096, description="an absolute path to a kprobegen .ko")

    @model_validator(mode="after")
    def _one_source(self) -> "LoadRequest":
        given = [k for k in ("spec", "spec_path", "ko_path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of spec, spec_path, ko_path"
                             + (f" (got {', '.join(given)})" if given else ""))
        for key in ("spec_path", "ko_path"):
            value = getattr(self, key)
            if value is not None and (not value.startswith("/") or "\0" in value):
                raise ValueError(f"{key} must be an absolute path")
        if self.ko_path is not None and not self.ko_path.endswith(".ko"):
            raise ValueError("ko_path must name a .ko file")
        return self


# -- responses -------------------------------------------------------------------------------

class Peer(_Model):
    """Who sent a request, as the kernel says (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


class Health(_Model):
    """GET /v1/health."""

    status: Literal["ok"] = "ok"
    api: int = API_VERSION
    version: str
    kernel: str
    pid: int
    started_at: str
    socket: Literal["ro", "rw"] = Field(description="the socket this request came in on")
    peer: Peer
    state_dir: str
    problems: list[str] = Field(description="what the service could not read or reconcile at start")


class Module(_Model):
    """One module the service knows of."""

    module: ModuleName
    status: Literal["loaded", "gone"] = Field(
        description="loaded: in the kernel now; gone: recorded as loaded, but the kernel no longer has it")
    origin: Literal["service", "adopted"] = Field(
        description="service: loaded through this service; adopted: a kprobegen module found loaded at start")
    kernel: str
    loaded_at: str | None
    loaded_by: int | None = Field(description="uid of the client that loaded it (None when adopted)")
    spec: str | None
    ko: str | None
    gone_at: str | None = None


class ModuleList(_Model):
    """GET /v1/modules."""

    modules: list[Module]


class Snapshot(_Model):
    """GET /v1/modules/{name}/snapshot."""

    module: ModuleName
    results: dict[str, Any] = Field(description="live counts: the Results JSON of docs/results.md")


class Snapshots(_Model):
    """GET /v1/snapshot: every loaded module's live counts; a module that could not be read is in
    ``errors`` with the reason."""

    snapshots: dict[str, dict[str, Any]]
    errors: dict[str, str]


class Unloaded(_Model):
    """DELETE /v1/modules/{name}: the module is gone and these are its final counts."""

    module: ModuleName
    loaded_at: str | None
    unloaded_at: str
    results: dict[str, Any] = Field(description="final counts: the Results JSON of docs/results.md")


class Event(_Model):
    """What happened, in order (``seq`` counts up from 1 for the life of the process)."""

    seq: int
    time: str
    kind: Literal["started", "loaded", "unloaded", "adopted", "gone", "state-unreadable"]
    module: ModuleName | None = None
    uid: int | None = Field(None, description="the client that caused it, if a client did")
    detail: str | None = None


class Events(_Model):
    """GET /v1/events?since=N: the events with seq > N (those still kept), and the next ``since``."""

    events: list[Event]
    next: int


class Error(_Model):
    """Every 4xx and 5xx: one line saying why."""

    status: int
    error: str


REQUESTS = (LoadRequest,)
RESPONSES = (Health, ModuleList, Module, Snapshot, Snapshots, Unloaded, Events, Error)


def json_schema() -> dict:
    """The JSON Schema of every request and response (one definition each, under ``$defs``)."""
    from pydantic.json_schema import models_json_schema

    _, schema = models_json_schema([(m, "validation") for m in REQUESTS + RESPONSES],
                                   title="kprobegen service API v1")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = ("Requests and responses of `kprobegen serve` (HTTP/JSON over Unix sockets, "
                             "/v1/...); docs/service.md. Generated from kprobegen/service/models.py.")
    return schema
