"""`kprobegen` subcommands: each parses arguments, calls the Python API, formats the answer.

User errors print one line to stderr and exit non-zero; --debug shows the traceback.
Progress goes to stderr, and only when stderr is a terminal (never into --json output).
A kernel named on the command line becomes a Kernel in one place (pipeline.resolve_kernel).

Commands import the heavier stages when they run, so that a command pays only for what it
uses: the cached `build` is timed in bench/build_bench.py, and the host-mode commands (`load
FILE.ko`, `list`, `snapshot`, `unload`: one short process each, timed against insmod in
bench/host_bench.py) find at the module level only what they use. What each lazy import
would add to them, measured with `python -X importtime` in the full guest under TCG
(2026-12-02, medians of 9): pipeline 0.18 s (kbuild, kernels.symbols), the vm package 0.23 s,
vm.guest 0.35 s and vm.qemu 0.27 s (each with the vm package), kernels.symbols 0.15 s,
kernels.debian 0.09 s, progress 0.03 s (typing), subprocess 0.05 s, report 0.15 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path

from kprobegen import __version__
from kprobegen.cache import atomic_write, cache_dir
from kprobegen.errors import BuildError, KernelError, KprobegenError, LoadError, SpecError, VMError
from kprobegen.kernels import find_kernel, list_kernels


def _progress(args) -> callable:
    """Progress on stderr: every message on a terminal; elsewhere only Notices (the long,
    otherwise silent steps: a kernel profile capture, a fall back from KVM to TCG)."""
    from kprobegen.progress import Notice  # 0.03 s under TCG (typing), not for host mode
    if getattr(args, "quiet", False):
        return lambda message: None
    terminal = sys.stderr.isatty()

    def say(message: str) -> None:
        if terminal or isinstance(message, Notice):
            print(f"kprobegen: {message}", file=sys.stderr, flush=True)

    return say


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _warn(lines) -> None:
    for line in lines:
        print(f"kprobegen: warning: {line}", file=sys.stderr)


# ------------------------------------------------------------------------------- argument checks

MAX_TIMEOUT = 7 * 24 * 3600.0


def _seconds(text: str) -> float:
    """--timeout: a finite number of seconds above 0 (nan would disable the timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds above 0 and at most {MAX_TIMEOUT:.0f}")
    return value


def _time_limit(text: str) -> float:
    """load --time-limit: seconds, more than 0, at most a week (the service's limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 7 * 24 * 3600:      # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r}: give more than 0 and at most 604800 (a week)")
    return value


def _positive_int(text: str) -> int:
    """--top: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return value


def _path(text: str) -> Path:
    """An output path: not empty (Path('') would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a folder")
    return Path(text)


# Output folders this command created, removed again (if still empty) when it fails.
_created_dirs: list[Path] = []


def _output_dir(path: Path, option: str) -> Path:
    """Make sure ``path`` is (or now is) a writable folder before any work is done, so that a
    bad -o / --keep fails at once with one line and nothing half-written. Folders created here
    are removed again if the command fails."""
    missing = []
    p = path
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        where = "" if p == path else f" ({p} is not a folder)"
        raise KprobegenError(f"{option} {path}: {'exists and is not a folder' if p == path else 'cannot be created'}{where}")
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise KprobegenError(f"{option} {path}: {folder} exists and is not a folder") from None
            continue
        except OSError as exc:
            raise KprobegenError(f"{option} {path}: cannot create {folder}: {exc.strerror}") from None
        _created_dirs.append(folder)
    if not os.access(path, os.W_OK | os.X_OK):
        raise KprobegenError(f"{option} {path}: the folder is not writable")
    return path


def _kernel(args):
    """The Kernel of --kernel, None without it."""
    if getattr(args, "kernel", None) is None:
        return None
    from kprobegen import pipeline  # 0.18 s under TCG: see the docstring

    return pipeline.resolve_kernel(args.kernel)


# ------------------------------------------------------------------------------- spec commands

def cmd_schema(args) -> int:
    from kprobegen.spec import json_schema

    _print_json(json_schema())
    return 0


def _default_kernel_with_profile():
    """The default kernel when its profile is already cached (checking against it boots
    nothing), else None."""
    from kprobegen.kernels.symbols import profile_cached  # 0.15 s under TCG

    try:
        kernel = find_kernel(None)
    except KernelError:
        return None
    return kernel if profile_cached(kernel.release) else None


def cmd_check(args) -> int:
    from kprobegen import pipeline  # 0.18 s under TCG: see the docstring

    kernel = _kernel(args) or _default_kernel_with_profile()
    spec = pipeline.prepare(args.spec, kernel, check_symbols=kernel is not None, progress=_progress(args),
                   accel=args.accel)
    if args.json:
        _print_json({"spec": str(args.spec), "module": spec.module, "valid": True,
                     "symbols_checked_against": kernel.release if kernel else None,
                     "hooks": [{"name": h.hook_name, "probe": h.probe, "symbol": h.symbol} for h in spec.hooks]})
    else:
        print(f"{args.spec}: ok: module {spec.module}, {len(spec.hooks)} hook{'s' if len(spec.hooks) != 1 else ''}, "
              + (f"symbols checked against {kernel.release}" if kernel else
                 "symbols NOT checked (no kernel profile cached: pass --kernel RELEASE|SUITE to capture one)"))
    return 0


def cmd_render(args) -> int:
    from kprobegen import pipeline  # 0.18 s under TCG: see the docstring
    from kprobegen.codegen import render, render_c

    kernel = _kernel(args)
    spec = pipeline.prepare(args.spec, kernel, check_symbols=kernel is not None, progress=_progress(args),
                            accel=args.accel)
    if args.emit_c or not args.output:
        sys.stdout.write(render_c(spec))
        return 0
    _output_dir(args.output, "-o")
    _warn(_equivalent_warnings(spec))
    for path in render(spec, args.output):
        print(path)
    return 0


def _equivalent_warnings(spec) -> list[str]:
    from kprobegen.codegen import render_bpftrace, render_stap

    return [f"SystemTap: {w}" for w in render_stap(spec).warnings] + [f"bpftrace: {w}" for w in render_bpftrace(spec).warnings]


def cmd_stap(args) -> int:
    from kprobegen.codegen import render_stap
    from kprobegen.spec import load_spec

    script = render_stap(load_spec(args.spec))
    _warn(script.warnings)
    sys.stdout.write(script.text)
    return 0


def cmd_bpftrace(args) -> int:
    from kprobegen.codegen import render_bpftrace
    from kprobegen.spec import load_spec

    script = render_bpftrace(load_spec(args.spec))
    _warn(script.warnings)
    sys.stdout.write(script.text)
    return 0


def cmd_build(args) -> int:
    from kprobegen import pipeline  # 0.18 s under TCG: see the docstring
    from kprobegen.kbuild import make_command, resolve_tree

    # Without --kernel the default kernel's tree builds the module, but its profile is not
    # used: no symbol check, no glob expansion, and so never a boot to capture a profile.
    by_profile = args.kernel is not None
    kernel = _kernel(args) if args.kernel_dir is None else None
    if args.kernel_dir is None and kernel is None:
        kernel = pipeline.resolve_kernel(None)
    if args.show_command:
        tree, _, make_vars = resolve_tree(kernel, args.kernel_dir)
        print(" ".join(make_command(tree, Path(args.output).resolve(), make_vars)))
        return 0
    _output_dir(args.output, "-o")
    built, _ = pipeline.build_spec(args.spec, args.output, kernel=kernel, kernel_dir=args.kernel_dir, use_profile=by_profile,
                          check_symbols=by_profile and not args.no_symbol_check,
                          use_cache=not args.no_cache, strict=args.strict, progress=_progress(args),
                          accel=args.accel)
    _warn(built.warnings)
    if args.json:
        _print_json({"module": built.name, "ko": str(built.ko), "kernel": built.kernel_release,
                     "kernel_dir": str(built.kernel_dir), "cached": built.cached, "warnings": list(built.warnings)})
    else:
        print(built.ko)
    return 0


# ------------------------------------------------------------------------------- results

def cmd_parse(args) -> int:
    from kprobegen.report import MAX_LOG_BYTES, ReportError, format_results, parse_log, read_log, results_json

    limit = args.max_bytes if args.max_bytes is not None else MAX_LOG_BYTES
    # Read with a bound, and only what ends: a regular file or stdin (a pipe is the way to
    # parse anything else). /dev/zero, /dev/urandom and FIFOs would never end, or never stop.
    if args.file in (None, "-"):
        text, read_problems = read_log(sys.stdin.buffer, limit)
    else:
        try:
            st = os.stat(args.file)
            if not stat.S_ISREG(st.st_mode):
                kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                        else "a character device" if stat.S_ISCHR(st.st_mode) else "not a regular file")
                hint = (" (the running kernel's log, with the facility: dmesg -r | kprobegen parse -)"
                        if stat.S_ISCHR(st.st_mode) else "")
                raise KprobegenError(f"{args.file}: {kind}, not a log file: give a file, or pipe "
                                     f"the log in (kprobegen parse - < ...){hint}")
            with open(args.file, "rb") as fh:
                text, read_problems = read_log(fh, limit)
        except OSError as exc:
            raise KprobegenError(f"{args.file}: cannot read the log: {exc.strerror}") from None
    log = parse_log(text)
    problems = read_problems + log.problems
    try:
        results = log.results(module=args.module, all=args.all)
    except ReportError as exc:
        if not problems:
            raise
        raise ReportError(f"{exc}; the log: {'; '.join(problems[:3])}") from None
    _warn(f"{count} protocol line{'s' if count != 1 else ''} not understood: {name}"
          for name, count in sorted(log.unrecognised.items()))
    # What the parser found about the log as a whole is part of the output (and of --json):
    # refused lines, conflicts, lost lines, and whether the log form shows who wrote a line.
    if args.json:
        _print_json(results_json(results, problems, log.notes))
    else:
        sys.stdout.write(format_results(results, top=args.top))
        for line in problems:
            print(f"log: {line}")
        for line in log.notes:
            print(f"note: {line}")
    return 0


def cmd_run(args) -> int:
    from kprobegen import pipeline  # 0.18 s under TCG: see the docstring
    from kprobegen.report import ReportError, format_results

    cmd = list(args.cmd)
    if not cmd:
        raise KprobegenError("no workload given: put the command after --, e.g. kprobegen run spec.yaml -- sync")
    add = _add_pairs(args.add)
    if args.keep is not None:
        _output_dir(args.keep, "--keep")
    kernel = pipeline.resolve_kernel(args.kernel)
    outcome = pipeline.run_spec(args.spec, cmd, kernel=kernel, add=add, timeout=args.timeout, accel=args.accel,
                       check_symbols=not args.no_symbol_check, progress=_progress(args), out_dir=args.keep)
    if args.log:
        _write_file(args.log, outcome.run.kernel_log.encode())
    if args.json:
        _print_json(outcome.to_json())
    else:
        # The workload's output as it wrote it, bytes untouched, before the counts.
        sys.stdout.flush()
        sys.stdout.buffer.write(outcome.run.stdout_bytes)
        sys.stdout.buffer.flush()
        sys.stderr.buffer.write(outcome.run.stderr_bytes)
        sys.stderr.buffer.flush()
        sys.stdout.write(format_results(outcome.results, top=args.top))
        for line in outcome.log_problems:   # e.g. report lines the workload forged: ignored
            print(f"kernel log: {line}")
        print(f"workload exit code {outcome.run.exit_code}; kernel {outcome.built.kernel_release} ({outcome.run.accel})")
    if outcome.report_error:  # shown above as an incomplete frame; never a silent count
        raise ReportError(outcome.report_error)
    return 0 if outcome.run.exit_code == 0 else (outcome.run.exit_code or 1)


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    try:
        atomic_write(Path(path), data)
    except OSError as exc:
        raise KprobegenError(f"{path}: cannot write: {exc.strerror}") from None


# ------------------------------------------------------------------------------- host mode
#
# With the manager service running, load/list/snapshot/unload go through it (its client,
# kprobegen.client) and print what they print without it: the same Results, LoadedModule and
# errors, rebuilt from its JSON. Without it they act on the kernel directly (kprobegen.host).

#: Where `kprobegen serve` makes its sockets by default (kprobegen.client.RW_SOCKET and
#: RO_SOCKET; tests/test_cli.py checks they agree). Named here so that a command run where no
#: service runs pays one stat(2) for it, not kprobegen.client's import of http.client (16 ms
#: on the development machine, not under TCG: half of this module's own import).
SERVICE_DIR = Path("/run/kprobegen")
RW_SOCKET_NAME = "kprobegen.sock"       # load, unload
RO_SOCKET_NAME = "kprobegen-ro.sock"    # list, snapshot: every GET, for root and the service's group
#: Seconds to wait for connect(2) to a service's socket, and for a running service's answer
#: to `unload --no-service`'s question "do you own it?".
PROBE_TIMEOUT = 5.0

HOST_EPILOG = """\
When the manager service runs (`kprobegen serve`), this command goes
through it, by default at {socket},
and prints what it prints without it; where no service runs, it acts on
the kernel directly. --socket names a service, --no-service skips it.

A socket file that nothing answers on is what a service that stopped
without cleaning up (a crash, a kill -9) leaves behind: no service runs,
so the command says so in one line on stderr and acts directly, as host
mode always can; a service started again adopts what was loaded meanwhile
and finds gone what was unloaded. A service that answers is never
bypassed: its refusals are errors, and only a module it does not know is
handled directly.
"""

UNLOAD_EPILOG = HOST_EPILOG + """
--no-service refuses to unload a module that a running service owns (it
asks the service first): the service would lose it behind its back (its
record, its lifetime). Unload it through the service, or add --force.
"""


class _UsageError(KprobegenError):
    exit_code = 2


def _service_socket(path: Path) -> tuple[str, str]:
    """Whether a service answers at ``path``: ("ok", ""), ("absent", why) when there is no
    socket file, ("stale", why) when nothing accepts on it, ("error", why) otherwise."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "absent", "no such socket"
    except OSError as exc:
        return "error", exc.strerror or str(exc)
    if not stat.S_ISSOCK(mode):
        return "absent", "not a socket"
    import socket  # here: only when a socket file is there

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(PROBE_TIMEOUT)
        sock.connect(str(path))
    except ConnectionRefusedError:
        return "stale", "nothing answers there (a socket left by a service that stopped)"
    except FileNotFoundError:
        return "absent", "no such socket"
    except OSError as exc:
        return "error", exc.strerror or str(exc)
    finally:
        sock.close()
    return "ok", ""


def _service(args, write: bool) -> Path | None:
    """The socket of the service this command goes through, or None to act on the kernel
    directly (HOST_EPILOG says when)."""
    name = RW_SOCKET_NAME if write else RO_SOCKET_NAME
    if args.no_service:
        return None
    if args.socket is not None:
        path = args.socket / name if args.socket.is_dir() else args.socket
        state, why = _service_socket(path)
        if state != "ok":
            raise KprobegenError(f"--socket {path}: {why}")
        return path
    path = SERVICE_DIR / name
    state, why = _service_socket(path)
    if state == "ok":
        return path
    if state == "stale":
        print(f"kprobegen: note: {path}: {why}: acting on the kernel directly", file=sys.stderr)
        return None
    if state == "error":
        raise KprobegenError(f"{path}: {why} (--no-service acts on the kernel without the service)")
    return None


def _service_call(sock: Path, method: str, *args, missing_ok: bool = False, rename=None, **kwargs):
    """``Client(sock).method(...)``; a refusal becomes the error direct mode raises for the
    same reason (409 and 400: LoadError, exit 1; 422: SpecError, exit 2), its text as the
    service said it (it is direct mode's own text: the service runs the same code).
    ``missing_ok``: None for a 404 (a module the service does not know). ``rename``: applied
    to the reason (file names as the user gave them)."""
    from kprobegen.client import Client, ServiceError  # here: only with a service running

    try:
        with Client(sock) as client:
            return getattr(client, method)(*args, **kwargs)
    except ServiceError as exc:
        reason = rename(exc.reason) if rename else exc.reason
        if exc.status == 404 and missing_ok:
            return None
        if exc.status is None:          # it went away, or timed out
            raise KprobegenError(f"{reason}; --no-service acts on the kernel without the service") from None
        if exc.status == 403:
            raise LoadError(f"{sock}: {reason}") from None
        if exc.status in (400, 409):
            raise LoadError(reason) from None
        if exc.status == 422:
            raise SpecError(reason) from None
        if exc.status == 500:
            raise KprobegenError(reason) from None
        raise KprobegenError(f"{sock}: {exc.status}: {reason}") from None


def _loaded_module(record: dict):
    """A service's Module record as host mode's LoadedModule (the same fields, the same JSON)."""
    from kprobegen.host import LoadedModule

    return LoadedModule(record["module"], record["kernel"], record.get("loaded_at"), record.get("spec"),
                        record.get("ko"))


def _running_service() -> Path | None:
    """The default read-only socket when a service answers on it (for --no-service's checks)."""
    path = SERVICE_DIR / RO_SOCKET_NAME
    return path if _service_socket(path)[0] == "ok" else None


def _owned_by_service(name: str) -> Path | None:
    """The running default service's socket when it records ``name`` as loaded, else None;
    a service that does not answer within PROBE_TIMEOUT is taken as not owning it."""
    path = _running_service()
    if path is None:
        return None
    from kprobegen.client import Client, ServiceError

    try:
        with Client(path, timeout=PROBE_TIMEOUT) as client:
            record = client.module(name)
    except ServiceError:
        return None
    return path if record.get("status") == "loaded" else None


def _unknown_to_service(sock: Path, name: str) -> None:
    """After a 404: the service does not know the module, so it is handled directly, as
    without a service; LoadError for a user who could not read it directly (not root)."""
    if os.geteuid() != 0 and Path("/sys/module", name).exists():
        raise LoadError(f"module {name} is loaded but not known to the service at {sock} (loaded with "
                        "--no-service?); reading it without the service needs root")


def _load_target(target: Path) -> Path:
    """A folder stands for the one .ko in it. (A path this user cannot look at is taken as it
    is: a service, which may read it, decides.)"""
    try:
        folder = target.is_dir()
    except OSError:
        folder = False
    if folder:
        kos = sorted(target.glob("*.ko"))
        if len(kos) != 1:
            raise KprobegenError(f"{target}: expected one .ko in the folder, found {len(kos)}")
        return kos[0]
    return target


def _print_loaded(loaded, args, sock: Path | None) -> int:
    if args.json:
        _print_json({**loaded.to_json(), "service": str(sock) if sock else None})
    else:
        print(f"loaded {loaded.name} into {loaded.kernel}; `kprobegen snapshot {loaded.name}` for live counts, "
              f"`kprobegen unload {loaded.name}` for the final ones"
              + (f" (the service at {sock} owns it)" if sock else ""))
    return 0


def cmd_load(args) -> int:
    sock = _service(args, write=True)
    if sock is not None:
        return _load_through(sock, args)
    from kprobegen import host  # 0.04 s under TCG, for the host-mode commands only

    host.require_loading()  # before looking at the target: a user who cannot load learns that first
    if args.time_limit is not None:
        raise _UsageError("load: --time-limit needs the manager service (kprobegen serve): it is what unloads the module")
    target = _load_target(Path(args.target))
    if target.suffix == ".ko":
        loaded = host.load_ko(target, loading_checked=True)
    else:
        from kprobegen import pipeline  # 0.18 s under TCG: a prebuilt .ko does without it

        loaded = pipeline.load_on_host(target, progress=_progress(args))
    if args.no_service and (running := _running_service()) is not None:
        _warn([f"a service runs ({running}); {loaded.name} was loaded without it (--no-service), "
               "so the service only adopts it"])
    return _print_loaded(loaded, args, None)


def _load_through(sock: Path, args) -> int:
    """`load` through the service: a spec by its absolute path (so that the service's errors
    name the file: they are given back with the path as the user wrote it), a .ko by its
    resolved path (as direct mode names it), a spec on stdin as its text."""
    from kprobegen.specfile import is_stdin

    target = _load_target(Path(args.target))
    if is_stdin(args.target):
        from kprobegen.specfile import read_spec_bytes

        source = {"spec": read_spec_bytes(args.target).decode("utf-8", "replace")}
        rename = lambda reason: "<stdin>" + reason[4:] if reason.startswith("spec:") else reason  # noqa: E731
    elif target.suffix == ".ko":
        source, rename = {"ko_path": target.resolve()}, None
    else:
        given, absolute = str(target), os.path.abspath(target)
        source = {"spec_path": absolute}
        rename = lambda reason: reason.replace(absolute, given)  # noqa: E731
    if sys.stderr.isatty():
        print(f"kprobegen: loading {args.target} through the service at {sock}", file=sys.stderr, flush=True)
    if args.time_limit is not None:
        source["time_limit_s"] = args.time_limit
    record = _service_call(sock, "load", rename=rename, **source)
    return _print_loaded(_loaded_module(record), args, sock)


def cmd_list(args) -> int:
    from kprobegen import host  # 0.04 s under TCG, for the host-mode commands only

    sock = _service(args, write=False)
    if sock is None:
        modules = host.loaded()
    else:
        records = _service_call(sock, "modules")
        by_name = {r["module"]: _loaded_module(r) for r in records if r.get("status") == "loaded"}
        if os.geteuid() == 0:
            # and, as direct mode lists them, what the kernel has that the service does not know
            # (loaded with --no-service), and what host mode recorded that the service's record
            # lacks (a module it adopted: no spec, no load time)
            for m in host.loaded():
                rec = by_name.get(m.name)
                by_name[m.name] = m if rec is None else host.LoadedModule(
                    m.name, rec.kernel, rec.loaded_at or m.loaded_at, rec.spec or m.spec, rec.ko or m.ko)
        modules = [by_name[name] for name in sorted(by_name)]
        for r in records:
            if r.get("status") != "loaded":
                why = ", ".join(x for x in (r.get("gone_reason"), r.get("gone_at")) if x)
                print(f"kprobegen: note: the service at {sock} also records {r['module']}, "
                      f"{r.get('status')}{f' ({why})' if why else ''}", file=sys.stderr)
    if args.json:
        _print_json([m.to_json() for m in modules])
        return 0
    if not modules:
        print("no kprobegen module is loaded")
        return 0
    print(f"{'MODULE':32} {'LOADED AT':21} SPEC")
    for m in modules:
        print(f"{m.name:32} {m.loaded_at or '?':21} {m.spec or m.ko or '-'}")
    return 0


def _print_report(results, args) -> int:
    """One module's Results, as --json or as the table."""
    from kprobegen.report import format_results  # 0.15 s under TCG (host.snapshot/unload import it first)

    if args.json:
        _print_json(results.to_json())
    else:
        sys.stdout.write(format_results([results], top=args.top))
    return 0


def _results(data: dict):
    """The service's Results JSON as Results (printed as direct mode prints its own)."""
    from kprobegen.report import Results  # 0.15 s under TCG, as direct mode's parse

    return Results.from_json(data)


def cmd_snapshot(args) -> int:
    sock = _service(args, write=False)
    if sock is not None:
        data = _service_call(sock, "snapshot", args.module, missing_ok=True)
        if data is not None:
            return _print_report(_results(data["results"]), args)
        _unknown_to_service(sock, args.module)
    from kprobegen import host  # 0.04 s under TCG, for the host-mode commands only

    return _print_report(host.snapshot(args.module), args)


def cmd_unload(args) -> int:
    if args.force and not args.no_service:
        raise _UsageError("unload: --force goes with --no-service: through a service, the service decides "
                          "(see kprobegen unload --help)")
    sock = _service(args, write=True)
    if sock is not None:
        data = _service_call(sock, "unload", args.module, missing_ok=True)
        if data is not None:
            gone = data.get("gone_reason")
            if data.get("results") is None:
                raise LoadError(f"module {args.module} had left the kernel ({gone or 'gone'}) and its final counts "
                                "were not in the kernel log; the service has forgotten it")
            if gone:
                print(f"kprobegen: note: module {args.module} had left the kernel before ({gone}): these are the "
                      "final counts the service kept", file=sys.stderr)
            return _print_report(_results(data["results"]), args)
        _unknown_to_service(sock, args.module)
    elif args.no_service and (owner := _owned_by_service(args.module)) is not None:
        if not args.force:
            raise LoadError(f"module {args.module} is owned by the kprobegen service ({owner}): unload it through "
                            "the service (without --no-service), or add --force to remove it behind its back")
        _warn([f"module {args.module} is owned by the service at {owner}: removing it behind its back "
               "(--force); the service will find it gone"])
    from kprobegen import host  # 0.04 s under TCG, for the host-mode commands only

    return _print_report(host.unload(args.module), args)


def cmd_serve(args) -> int:
    from kprobegen import service  # the service's modules and pydantic: only `serve` needs them

    if args.schema:
        _print_json(service.json_schema())
        return 0
    return service.serve(socket_dir=args.socket_dir, state_dir=args.state_dir, group=args.group or None)


# ------------------------------------------------------------------------------- full guest

def cmd_image_build(args) -> int:
    from kprobegen.vm import guest  # 0.35 s under TCG (with the vm package)

    image = guest.build_image(args.suite, rebuild=args.rebuild, progress=_progress(args))
    if args.json:
        _print_json({"suite": image.suite, "release": image.release, "rootfs": str(image.rootfs),
                     "vmlinuz": str(image.vmlinuz), "initrd": str(image.initrd), "inputs": image.inputs,
                     "built_at": image.built_at})
    else:
        print(f"{image.suite}: kernel {image.release}, {image.rootfs} (built {image.built_at})")
    return 0


def cmd_image_box(args) -> int:
    from kprobegen.vm import guest  # 0.35 s under TCG (with the vm package)

    box = guest.build_box(args.suite, Path(args.output) if args.output else None, rebuild=args.rebuild,
                          progress=_progress(args))
    if args.json:
        _print_json({"box": str(box.path), "suite": box.suite, "release": box.release, "inputs": box.inputs,
                     "virtual_size": box.virtual_size, "size": box.path.stat().st_size, "provider": "libvirt"})
    else:
        print(f"{box.path}: libvirt box, Debian {box.suite}, kernel {box.release}; add it with: "
              f"vagrant box add --name kprobegen/{box.suite} {box.path}")
    return 0


def cmd_vm(args) -> int:
    cmd = list(args.cmd)
    if not cmd:
        raise KprobegenError("no command given: put it after --, e.g. kprobegen vm --image bookworm -- uname -r")
    from kprobegen.vm import guest  # 0.35 s under TCG (with the vm package)

    say = _progress(args)
    image = guest.build_image(args.image, progress=say)
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def forward(stream):
        def write(chunk: bytes) -> None:
            stream.write(chunk)
            stream.flush()
        return write

    sys.stdout.flush()
    run = guest.run(image, cmd, add=_add_pairs(args.add), timeout=args.timeout, accel=args.accel,
                    memory_mb=args.memory, stdout=forward(out), stderr=forward(err), progress=say)
    run.raise_for_status()
    if run.exit_code is None:
        raise KprobegenError("the guest finished without the command's exit code")
    return run.exit_code


def _add_pairs(items: list[str]) -> list[tuple[Path, str]]:
    """--add HOST[:GUEST] values as (host path, guest path); the host path must exist."""
    pairs = []
    for item in items:
        host, _, guest = item.partition(":")
        if not Path(host).exists():
            raise KprobegenError(f"--add {item}: {host} does not exist")
        pairs.append((Path(host), guest or f"/{Path(host).name}"))
    return pairs


# ------------------------------------------------------------------------------- doctor

def cmd_doctor(args) -> int:
    from kprobegen.vm import qemu  # 0.27 s under TCG (with the vm package)

    if args.reset_kvm:
        had = qemu.clear_kvm_verdict()
        print("KVM verdict forgotten: the next auto boot tries KVM again" if had else "no KVM verdict was recorded")
        return 0
    report = _doctor_report()
    if args.json:
        _print_json(report)
    else:
        for item in report["checks"]:
            print(f"{'ok  ' if item['ok'] else 'FAIL'}  {item['name']:16} {item['detail']}")
        print(f"cache: {report['cache']}")
    return 0 if all(item["ok"] for item in report["checks"]) else 1


def _doctor_report() -> dict:
    """What `run` needs on this machine, each as {name, ok, detail}: qemu, busybox, the
    accelerator (with the recorded KVM verdict), the default kernel, its headers and profile."""
    import subprocess  # 0.05 s under TCG, and host mode does without it

    from kprobegen.kernels import toolchain  # imports subprocess
    from kprobegen.kernels.symbols import profile_cached  # 0.15 s under TCG
    from kprobegen.vm import qemu  # 0.27 s under TCG (with the vm package)
    from kprobegen.vm.initramfs import find_busybox  # 0.23 s under TCG (the vm package)

    checks = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"name": name, "ok": ok, "detail": detail})

    path = shutil.which(qemu.QEMU)
    if path is None:
        check("qemu", False, f"{qemu.QEMU} not found: apt-get install qemu-system-x86")
    else:
        try:
            version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
            check("qemu", True, f"{path} ({version.splitlines()[0] if version else 'version unknown'})")
        except (OSError, subprocess.SubprocessError) as exc:
            check("qemu", False, f"{path} does not run: {exc}")
    try:
        check("busybox", True, f"{find_busybox()} (static)")
    except VMError as exc:
        check("busybox", False, str(exc))
    try:
        accel = qemu.default_accel()
        accel_ok = True
    except VMError as exc:
        accel, accel_ok = str(exc), False
    source = f"{qemu.ACCEL_ENV}={os.environ[qemu.ACCEL_ENV]}" if os.environ.get(qemu.ACCEL_ENV) else \
        f"{qemu.ACCEL_ENV} unset"
    check("accel", accel_ok, f"{accel} ({source}); --accel overrides it per command")
    verdict = qemu.cached_kvm_verdict()
    if not qemu.kvm_usable():
        kvm = "/dev/kvm missing or not writable: every boot uses TCG"
    elif verdict is None:
        kvm = "/dev/kvm usable; not tried since this host booted: the next auto boot tries it (4 s at most)"
    elif verdict.verdict == "works":
        kvm = f"works (seen {verdict.at}): auto boots use KVM"
    else:
        kvm = (f"broken (seen {verdict.at}: {verdict.reason}): auto boots use TCG until the host reboots; "
               "`kprobegen doctor --reset-kvm` tries again")
    check("kvm", True, kvm)  # KVM is never required: TCG always works
    try:
        kernel = find_kernel(None)
    except KernelError as exc:
        check("kernel", False, str(exc))
        kernel = None
    if kernel is not None:
        check("kernel", True, f"{kernel.release} ({kernel.origin}), the default for build and run")
        problem = toolchain.build_problem(kernel)
        check("headers", problem is None, problem or f"{kernel.build_dir}")
        check("profile", True, "cached" if profile_cached(kernel.release) else
              "not captured yet: the first run or check --kernel boots the kernel once to capture it (10-30 s)")
    return {"checks": checks, "cache": str(cache_dir()),
            "kvm_verdict": None if verdict is None else {"verdict": verdict.verdict, "reason": verdict.reason,
                                                         "at": verdict.at}}


# ------------------------------------------------------------------------------- kernels

def cmd_kernels_list(args) -> int:
    from kprobegen.kernels import toolchain  # imports subprocess: 0.05 s under TCG

    kernels = list_kernels()
    if args.json:
        _print_json([{"release": k.release, "image": str(k.image), "build_dir": str(k.build_dir) if k.build_dir else None,
                      "origin": k.origin, "build_problem": toolchain.build_problem(k)} for k in kernels])
        return 0
    if not kernels:
        print("no kernels found: apt-get install linux-image-cloud-amd64 linux-headers-cloud-amd64, "
              "or kprobegen kernels fetch bookworm")
        return 1
    try:
        default = find_kernel(None).release
    except KernelError:
        default = None
    print(f"  {'RELEASE':36} {'ORIGIN':28} {'HEADERS':10} NOTE")
    for k in kernels:
        problem = toolchain.build_problem(k)
        mark = "*" if k.release == default else " "
        print(f"{mark} {k.release:36} {k.origin:28} {'yes' if k.build_dir else 'no':10} {problem or ''}".rstrip())
    if default:
        print("(* the default kernel for build and run; pick another with --kernel RELEASE or SUITE)")
    return 0


def cmd_kernels_fetch(args) -> int:
    from kprobegen.kernels import toolchain  # imports subprocess: 0.05 s under TCG
    from kprobegen.kernels.debian import fetch_kernel  # 0.09 s under TCG

    kernel = fetch_kernel(args.suite, progress=_progress(args), refresh=args.refresh)
    problem = toolchain.build_problem(kernel)
    if args.json:
        _print_json({"release": kernel.release, "image": str(kernel.image), "build_dir": str(kernel.build_dir),
                     "origin": kernel.origin, "build_problem": problem})
    else:
        print(f"{kernel.release} ({kernel.origin}): image {kernel.image}, headers {kernel.build_dir}")
        if problem:
            print(f"note: {problem}")
    return 0


# ------------------------------------------------------------------------------- parser

RUN_EPILOG = """\
The guest: Debian's cloud kernel with a busybox initramfs written by kprobegen (no network
device, no disk). CMD runs as root under busybox's sh, with busybox's applets: they are not
GNU coreutils and may take other kernel paths (busybox `cat` copies with sendfile(2), so a
vfs_read hook filtered to comm `cat` counts 0; `dd if=FILE of=/dev/null` reads with read(2)).
Bring your own programs with --add: a statically linked binary (gcc -static) or a script for
busybox sh, e.g. --add ./mybench:/bin/mybench. The workload's stdout and stderr are passed
through as they are, then the counts are printed. The exit status is CMD's.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other kprobegen error."""

    def error(self, message: str):
        self.exit(2, f"kprobegen: error: {self.prog.removeprefix('kprobegen').strip() or 'arguments'}: "
                     f"{_one_line(message)} (see {self.prog} --help)\n")


class _OneCommand:
    """The subcommands of ``parser(command)``: that one built, the others skipped. Building
    and using the whole parser takes 0.12 s in a fresh process under TCG in the full guest,
    with one subcommand 0.02 s (medians of 9); nothing else differs, since the command line
    has already chosen the subcommand (main() passes only a command that comes first) and the
    top level is built the same."""

    def __init__(self, subparsers, command: str):
        self._subparsers, self._command, self.found = subparsers, command, False

    def add_parser(self, name: str, **kwargs):
        if name != self._command:
            return _SKIPPED
        self.found = True
        return self._subparsers.add_parser(name, **kwargs)


class _Skipped:
    """A skipped subcommand: takes its arguments (and subcommands) and drops them."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self


_SKIPPED = _Skipped()


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``command``, only that subcommand is built (see _OneCommand), or
    all of them when it names none."""
    top = _Parser(prog="kprobegen", description="YAML hook specs → kprobe kernel modules → exact counts.")
    top.add_argument("--version", action="version", version=f"kprobegen {__version__}")
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command is not None:
        sub = _OneCommand(sub, command)

    def spec_arg(p):
        p.add_argument("spec", type=Path, help="the hook spec (YAML)")

    def json_arg(p, what="the result"):
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")

    def accel_arg(p):
        p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None,
                       help="how every VM boot of this command runs, the kernel-profile capture included: "
                            "auto tries KVM and falls back to TCG whenever KVM fails, hangs or aborts; "
                            "default: $KPROBEGEN_ACCEL, else auto")

    p = sub.add_parser("schema", help="print the JSON Schema of a spec")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("check", help="validate a spec, and its symbols against a kernel's profile")
    spec_arg(p)
    p.add_argument("--kernel", help="check symbols against this kernel (release or suite); its profile is captured "
                                    "once if needed. Without it, the default kernel's profile is used when cached")
    accel_arg(p)
    json_arg(p, "the verdict and the hooks")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("render", help="write the module's C, Makefile, .stp and .bt")
    spec_arg(p)
    p.add_argument("-o", "--output", type=_path, help="output folder (without it: the C to stdout)")
    p.add_argument("--kernel", help="expand symbol globs and check symbols against this kernel")
    accel_arg(p)
    p.add_argument("--emit-c", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("stap", help="print the equivalent SystemTap script")
    spec_arg(p)
    p.set_defaults(func=cmd_stap)
    p = sub.add_parser("bpftrace", help="print the equivalent bpftrace script")
    spec_arg(p)
    p.set_defaults(func=cmd_bpftrace)

    p = sub.add_parser("build", help="render and build the .ko with Kbuild")
    spec_arg(p)
    p.add_argument("-o", "--output", type=_path, required=True, help="output folder")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--kernel", help="a kernel release or suite (see `kprobegen kernels list`); "
                                        "symbols are checked against its profile")
    where.add_argument("--kernel-dir", type=Path, help="an explicit Kbuild tree (headers); no symbol check")
    p.add_argument("--no-cache", action="store_true", help="always run the compiler")
    p.add_argument("--strict", action="store_true", help="fail on compiler warnings")
    p.add_argument("--no-symbol-check", action="store_true", help="do not check symbols against the kernel's profile")
    p.add_argument("--show-command", action="store_true", help="print the make command and exit")
    accel_arg(p)
    json_arg(p, "the module, its .ko and the kernel")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("parse", help="parse module reports out of a kernel log")
    p.add_argument("file", nargs="?", help="a saved kernel log (dmesg, dmesg -r/-x, journalctl -k, /dev/kmsg records, syslog); - or nothing: stdin")
    p.add_argument("--module", help="only this module")
    p.add_argument("--all", action="store_true", help="every report (a time series), not just the latest complete one")
    p.add_argument("--top", type=_positive_int, default=10, help="keys shown per hook in the table (default 10)")
    json_arg(p, "the results (docs/results.md)")
    p.add_argument("--max-bytes", type=_positive_int, default=None, metavar="N",
                   help="read at most N bytes of log (default 4 GiB); more is an error")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("run", help="build, load in a VM, run a workload, print the counts",
                       description="Build the spec's module, boot a disposable VM, load it, run CMD, unload, "
                                   "and print the counts.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    spec_arg(p)
    p.add_argument("--kernel", help="kernel release or suite for the VM (default: the installed Debian cloud kernel)")
    p.add_argument("--add", action="append", default=[], metavar="HOST_PATH[:GUEST_PATH]",
                   help="copy a file or folder into the guest (default guest path: /NAME); repeatable")
    p.add_argument("--timeout", type=_seconds, default=120.0, help="seconds before the VM is killed (default 120)")
    accel_arg(p)
    p.add_argument("--no-symbol-check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep", type=_path, help="keep the built module and sources in this folder")
    p.add_argument("--log", type=_path, metavar="FILE",
                   help="write the run's kernel log to FILE (what `kprobegen parse FILE` reads)")
    p.add_argument("--top", type=_positive_int, default=10, help="keys shown per hook in the table (default 10)")
    json_arg(p, "the results, the workload's exit_code, stdout and stderr")
    p.add_argument("cmd", nargs="*", help="-- CMD [ARGS...]: the workload, run in the guest")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("kernels", help="kernels to build for and boot")
    ksub = p.add_subparsers(dest="kernels_command", required=True, metavar="SUBCOMMAND")
    q = ksub.add_parser("list", help="installed and fetched kernels")
    json_arg(q, "the kernels")
    q.set_defaults(func=cmd_kernels_list)
    q = ksub.add_parser("fetch", help="download a Debian cloud kernel and its headers into the cache")
    q.add_argument("suite", help="bookworm, bookworm-backports, bullseye or trixie (the newest kernel of the suite "
                                 "and its -updates and -security pockets)")
    q.add_argument("--refresh", action="store_true",
                   help="ask the mirror for a newer kernel even when the suite was fetched before")
    json_arg(q, "the fetched kernel")
    q.set_defaults(func=cmd_kernels_fetch)

    def service_args(p, write: bool):
        name = RW_SOCKET_NAME if write else RO_SOCKET_NAME
        via = p.add_mutually_exclusive_group()
        via.add_argument("--socket", type=_path, metavar="PATH",
                         help=f"go through the service at PATH (its socket, or the folder of `serve --socket-dir`: "
                              f"its {name}); an error when no service answers there (default: "
                              f"{SERVICE_DIR / name} when a service answers on it)")
        via.add_argument("--no-service", action="store_true",
                         help="act on the kernel directly, even when a service runs")

    def host_parser(name: str, write: bool, help: str, epilog: str = HOST_EPILOG):
        return sub.add_parser(name, help=help, epilog=epilog.format(
            socket=SERVICE_DIR / (RW_SOCKET_NAME if write else RO_SOCKET_NAME)),
            formatter_class=argparse.RawDescriptionHelpFormatter)

    p = host_parser("load", True, "on this machine: check, build against the running kernel, insmod; it stays loaded")
    p.add_argument("target", metavar="SPEC|DIR|FILE.ko",
                   help="a spec (built here against /lib/modules/$(uname -r)/build), or a kprobegen .ko built "
                        "for this kernel elsewhere (a folder holding one)")
    service_args(p, write=True)
    p.add_argument("--time-limit", type=_time_limit, default=None, metavar="SECONDS",
                   help="through the service only: the service unloads it after SECONDS and keeps its final "
                        "counts (`kprobegen unload NAME` then prints them)")
    json_arg(p, "the loaded module")
    p.set_defaults(func=cmd_load)
    p = host_parser("list", False, "the kprobegen modules loaded on this machine")
    service_args(p, write=False)
    json_arg(p, "the modules")
    p.set_defaults(func=cmd_list)
    p = host_parser("snapshot", False, "live counts of a loaded module (no unload, nothing in the kernel log)")
    p.add_argument("module", help="the module's name")
    p.add_argument("--top", type=_positive_int, default=10, help="keys shown per hook in the table (default 10)")
    service_args(p, write=False)
    json_arg(p, "the results (docs/results.md)")
    p.set_defaults(func=cmd_snapshot)
    p = host_parser("unload", True, "rmmod a kprobegen module and print its final counts", UNLOAD_EPILOG)
    p.add_argument("module", help="the module's name")
    p.add_argument("--top", type=_positive_int, default=10, help="keys shown per hook in the table (default 10)")
    service_args(p, write=True)
    p.add_argument("--force", action="store_true",
                   help="with --no-service: unload even a module that a running service owns")
    json_arg(p, "the final results (docs/results.md)")
    p.set_defaults(func=cmd_unload)
    p = sub.add_parser("serve", help="the manager service: own loaded modules, HTTP/JSON API on Unix sockets "
                                      "(docs/service.md); runs in the foreground",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""\
Runs in the foreground and logs to stderr; SIGTERM stops it, and the modules
it loaded stay loaded (the next start adopts them). Under systemd it is a
Type=notify service: READY=1 once its sockets listen.

To run it under systemd, install the unit from the source tree (it is also
in README.md, "Running the service"):

  install -m 0644 contrib/systemd/kprobegen.service /etc/systemd/system/
  groupadd --system kprobegen      # members may use the read-only socket
  systemctl daemon-reload
  systemctl enable --now kprobegen

The unit runs /usr/local/bin/kprobegen: if kprobegen is elsewhere (the venv
of ./setup.sh: <checkout>/.venv/bin/kprobegen), edit its ExecStart= line
first. It keeps its state in /var/lib/kprobegen, its sockets in
/run/kprobegen and its builds in /var/cache/kprobegen, as root with only
CAP_SYS_MODULE and CAP_SYSLOG; journalctl -u kprobegen shows its log.
""")
    p.add_argument("--socket-dir", metavar="DIR", help="where the sockets go (default /run/kprobegen): "
                   "kprobegen.sock (read-write, root) and kprobegen-ro.sock (read-only, root and --group)")
    p.add_argument("--state-dir", metavar="DIR", help="the service's state (default $STATE_DIRECTORY, "
                   "else /var/lib/kprobegen)")
    p.add_argument("--group", metavar="NAME", default="kprobegen",
                   help="the group that may use the read-only socket (default kprobegen; '' for root only)")
    p.add_argument("--schema", action="store_true", help="print the API's JSON Schema and exit")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("image", help="the full Debian guest image (a real userland, for host mode in a VM)")
    isub = p.add_subparsers(dest="image_command", required=True, metavar="SUBCOMMAND")
    q = isub.add_parser("build", help="build (or reuse) the guest image of a Debian suite in the cache")
    q.add_argument("suite", nargs="?", default="bookworm", choices=("bookworm", "trixie"),
                   help="Debian suite of the image (default bookworm)")
    q.add_argument("--rebuild", action="store_true",
                   help="build again even when the inputs are unchanged (takes the archive's newest packages)")
    json_arg(q, "the image's files and kernel")
    q.set_defaults(func=cmd_image_build)
    q = isub.add_parser("box", help="a libvirt Vagrant box made from the full guest image (for vagrant box add)",
                        description="Build the box variant of the full guest image (provision/debian.sh "
                                    "--role box: ssh, sudo, a vagrant user with Vagrant's insecure key, DHCP), "
                                    "make it a bootable disk (MBR, syslinux, the ext4 root) and pack it as a "
                                    "libvirt box: box.img (qcow2), metadata.json and a Vagrantfile. Needs root.")
    q.add_argument("suite", nargs="?", default="bookworm", choices=("bookworm", "trixie"),
                   help="Debian suite of the box (default bookworm)")
    q.add_argument("-o", "--output", metavar="FILE", help="the .box file to write (default kprobegen-SUITE.box)")
    q.add_argument("--rebuild", action="store_true",
                   help="build the box's image again even when its inputs are unchanged")
    json_arg(q, "the box's file, kernel and size")
    q.set_defaults(func=cmd_image_box)

    p = sub.add_parser("vm", help="run a command as root in the full Debian guest (copy-on-write, no network)",
                       description="Boot the full Debian guest (its own cloud kernel, the image as a "
                                   "copy-on-write root, no network device), run CMD as root, stream its "
                                   "output, and exit with its exit code. The image is built first if "
                                   "needed (minutes, once).")
    p.add_argument("--image", default="bookworm", choices=("bookworm", "trixie"),
                   help="the guest image's suite (default bookworm)")
    p.add_argument("--add", action="append", default=[], metavar="HOST_PATH[:GUEST_PATH]",
                   help="copy a file or folder into the guest (default guest path: /NAME; relative: under /root)")
    p.add_argument("--timeout", type=_seconds, default=600.0, help="seconds before the guest is killed (default 600)")
    p.add_argument("--memory", type=_positive_int, default=1024, help="guest memory in MiB (default 1024)")
    accel_arg(p)
    p.add_argument("cmd", nargs="*", help="-- CMD [ARGS...]: the command, run as root in the guest")
    p.set_defaults(func=cmd_vm)

    p = sub.add_parser("doctor", help="what this machine has for build and run: qemu, KVM, kernels, headers")
    p.add_argument("--reset-kvm", action="store_true",
                   help="forget that KVM was found broken on this host boot (the next auto boot tries it again)")
    json_arg(p, "the checks")
    p.set_defaults(func=cmd_doctor)
    if command is not None and not sub.found:
        return parser()
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the workload, verbatim (argparse's REMAINDER would
    # also swallow options such as --json written between the spec and the "--").
    workload: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, workload = argv[:at], argv[at + 1:]
    # The subcommand, when it comes first (after --debug at most): only its parser is built.
    first = argv[1:2] if argv[:1] == ["--debug"] else argv[:1]
    args = parser(first[0] if first and not first[0].startswith("-") else None).parse_args(argv)
    if hasattr(args, "cmd"):
        args.cmd = list(args.cmd) + workload
    _created_dirs.clear()
    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`): every command answers there
            raise KprobegenError("standard output is closed; redirect it to a file or /dev/null")
        if getattr(args, "accel", "") is None:
            from kprobegen.vm import qemu  # 0.27 s under TCG (with the vm package); host mode has no --accel

            args.accel = qemu.default_accel()  # $KPROBEGEN_ACCEL checked before any work is done
        code = args.func(args)
        sys.stdout.flush()
        return code
    except KprobegenError as exc:
        _remove_created_dirs()
        if args.debug:
            raise
        _error(str(exc), keep_lines=isinstance(exc, BuildError))
        return exc.exit_code
    except KeyboardInterrupt:
        _remove_created_dirs()
        _error("interrupted", prefix="")
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ValueError as exc:
        if "null byte" not in str(exc) or args.debug:  # only os's refusal of a path with a NUL in it
            raise
        _remove_created_dirs()
        _error("a path given holds a NUL byte, which no file name can")
        return 1
    except OSError as exc:  # an output path that went bad under us, a full disk, …
        _remove_created_dirs()
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        if not exc.filename and sys.stdout is not None:  # stdout itself failed: do not flush it again at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _one_line(text: str) -> str:
    """Control characters and line breaks (also \\x85, U+2028) of user input as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _error(message: str, prefix: str = "error: ", keep_lines: bool = False) -> None:
    if sys.stderr is not None:
        # One line, whatever a path or value holds; only Kbuild's diagnostics keep their lines.
        lines = message.split("\n") if keep_lines else [message]
        print(f"kprobegen: {prefix}" + "\n".join(_one_line(line) for line in lines), file=sys.stderr)


def _remove_created_dirs() -> None:
    for folder in reversed(_created_dirs):
        try:
            folder.rmdir()  # only if still empty
        except OSError:
            pass
    _created_dirs.clear()


if __name__ == "__main__":
    sys.exit(main())
