"""The requests and responses of the service's API (``/v1``), as pydantic models.

These models are what the server validates requests with and builds responses from, and
schema/service.schema.json is generated from them (``kprobegen serve --schema``;
tests/test_service.py checks that the file is what they give now). docs/service.md says
what each one is for.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

API_VERSION = 1
#: A module name: what the kernel and host mode accept (a C identifier, at most 56 characters).
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,55}$")
#: The largest JSON request body read (an inline spec is the biggest JSON a client sends).
MAX_BODY = 1 << 20
#: The largest module upload (``PUT /v1/modules/{name}``): a kprobegen .ko with its debug
#: information is well under this even with hundreds of hooks.
MAX_UPLOAD = 64 << 20
#: The longest time limit a module can be given (a week): longer is "until unloaded".
MAX_TIME_LIMIT_S = 7 * 24 * 3600.0

Lifetime = Literal["until-unloaded", "client"]
LIFETIME_HELP = ("until-unloaded: stays loaded until a client unloads it (the default, for a person's shell); "
                 "client: the service unloads it when the process that loaded it exits (for tests)")
TimeLimit = Annotated[float, Field(gt=0, le=MAX_TIME_LIMIT_S, allow_inf_nan=False,
                                   description="seconds after which the service unloads it and keeps its final counts")]

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
    lifetime: Lifetime = Field("until-unloaded", description=LIFETIME_HELP)
    time_limit_s: TimeLimit | None = None

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
    can_load: bool = Field(description="whether modules can be loaded on this machine (else only runs)")
    watcher: Literal["udev", "polling"] = Field(
        description="how modules removed outside the service are noticed: udev uevents (at once), "
                    "or a rescan of /sys/module every few seconds when udev cannot be watched")


class RunRequest(_Model):
    """POST /v1/runs: a spec run in a disposable VM (the busybox VM of ``kprobegen run``): built
    for ``kernel``, loaded, ``workload`` run, unloaded, the kernel's report parsed. For machines
    that cannot load modules themselves (a container, CI): nothing is loaded here."""

    spec: str = Field(max_length=MAX_BODY, description="a spec's YAML text")
    workload: str = Field(max_length=64 << 10, description="a shell command run as root in the VM (busybox sh)")
    kernel: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9._+~-]+$",
                               description="a kernel release or Debian suite (kprobegen kernels list); "
                                           "default: the default kernel")
    timeout_s: float = Field(120.0, gt=0, le=3600, allow_inf_nan=False,
                             description="the longest the VM may run (boot, workload, report)")
    accel: Literal["auto", "kvm", "tcg"] | None = Field(None, description="how the VM boots (default: auto)")


class UploadOptions(_Model):
    """The query of ``PUT /v1/modules/{name}`` (the body is the .ko itself)."""

    lifetime: Lifetime = Field("until-unloaded", description=LIFETIME_HELP)
    time_limit_s: TimeLimit | None = None


GoneReason = Literal["removed", "expired", "client-exited", "missing"]


class Module(_Model):
    """One module the service knows of: loaded now, or gone with its final counts kept."""

    module: ModuleName
    status: Literal["loaded", "gone"] = Field(
        description="loaded: in the kernel now; gone: left the kernel without a client's unload request "
                    "(its final counts, when the kernel log had them, are in `final`)")
    origin: Literal["service", "adopted"] = Field(
        description="service: loaded through this service; adopted: a kprobegen module found loaded at start")
    kernel: str
    loaded_at: str | None
    loaded_by: int | None = Field(description="uid of the client that loaded it (None when adopted)")
    spec: str | None
    ko: str | None
    lifetime: Lifetime = "until-unloaded"
    client_pid: int | None = Field(None, description="lifetime client: the process whose exit unloads it")
    client_start: int | None = Field(None, description="that process's start time (clock ticks after boot, "
                                                         "/proc/PID/stat), so that a reused pid is not taken for it")
    time_limit_s: float | None = None
    expires_at: str | None = Field(None, description="when the time limit unloads it")
    gone_at: str | None = None
    gone_reason: GoneReason | None = Field(
        None, description="removed: unloaded outside the service (rmmod); expired: its time limit; "
                          "client-exited: its client went away; missing: not in the kernel at the service's start")
    final: dict[str, Any] | None = Field(None, description="final counts (Results JSON) of a gone module, "
                                                            "when the kernel log still held them")


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
    """DELETE /v1/modules/{name}: the module is unloaded (or was gone) and the service forgets it;
    these are its final counts."""

    module: ModuleName
    loaded_at: str | None
    unloaded_at: str
    results: dict[str, Any] | None = Field(description="final counts: the Results JSON of docs/results.md "
                                                       "(null for a gone module whose counts were not in the log)")
    gone_reason: GoneReason | None = Field(None, description="set when the module had left the kernel before "
                                                             "this request (see Module.gone_reason)")


class RunResult(_Model):
    """POST /v1/runs: the module's report with the workload's exit code and output, as
    ``kprobegen run --json`` prints it (docs/results.md)."""

    run: dict[str, Any]
    report_error: str | None = Field(None, description="why the report is incomplete, when it is")


class Event(_Model):
    """What happened, in order. ``seq`` counts up from 1 over the life of the state dir: events
    are kept in ``<state dir>/events.jsonl`` and numbering goes on after a restart."""

    seq: int
    time: str
    kind: Literal["started", "stopped", "loaded", "unloaded", "adopted", "gone", "removed", "expired",
                  "client-exited", "disarmed", "armed", "run", "state-unreadable"]
    module: ModuleName | None = None
    uid: int | None = Field(None, description="the client that caused it, if a client did")
    detail: str | None = None


class Events(_Model):
    """GET /v1/events?since=N[&wait=S]: the events with seq > N (those still kept), and the next
    ``since``. ``missed``: events after N were dropped (more than the service keeps)."""

    events: list[Event]
    next: int
    oldest: int = Field(description="seq of the oldest event kept")
    missed: bool


class Error(_Model):
    """Every 4xx and 5xx: one line saying why."""

    status: int
    error: str


REQUESTS = (LoadRequest, UploadOptions, RunRequest)
RESPONSES = (Health, ModuleList, Module, Snapshot, Snapshots, Unloaded, Events, RunResult, Error)


def json_schema() -> dict:
    """The JSON Schema of every request and response (one definition each, under ``$defs``)."""
    from pydantic.json_schema import models_json_schema

    _, schema = models_json_schema([(m, "validation") for m in REQUESTS + RESPONSES],
                                   title="kprobegen service API v1")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = ("Requests and responses of `kprobegen serve` (HTTP/JSON over Unix sockets, "
                             "/v1/...); docs/service.md. Generated from kprobegen/service/models.py.")
    return schema
