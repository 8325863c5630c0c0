"""The manager service (``kprobegen serve``): one long-running process that owns the modules
it loads on this machine, with an HTTP/JSON API over two Unix sockets. docs/service.md."""

from kprobegen.service.models import json_schema
from kprobegen.service.server import DEFAULT_SOCKET_DIR, RO_SOCKET, RW_SOCKET, Running, Service, serve
from kprobegen.service.state import ServiceError

__all__ = ["serve", "Running", "Service", "ServiceError", "json_schema", "RW_SOCKET", "RO_SOCKET", "DEFAULT_SOCKET_DIR"]
