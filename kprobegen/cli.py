"""`kprobegen` subcommands: each parses arguments, calls the Python API, formats the answer.

User errors print one line to stderr and exit non-zero; --debug shows the traceback.
Progress goes to stderr, and only when stderr is a terminal (never into --json output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import __version__
from .errors import BuildError, KprobegenError, LoadError, SpecError


def _progress(args) -> callable:
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return lambda message: None
    return lambda message: print(f"kprobegen: {message}", file=sys.stderr, flush=True)


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
    if getattr(args, "kernel", None) is None:
        return None
    from .errors import KernelError
    from .kernels import find_kernel

    try:
        return find_kernel(args.kernel)
    except KernelError:
        if args.kernel == os.uname().release:
            # The running kernel without headers: say which package, and whether it could load anyway.
            from .kbuild import missing_tree_error

            raise missing_tree_error(Path(f"/lib/modules/{args.kernel}/build"), args.kernel) from None
        raise


# ------------------------------------------------------------------------------- spec commands

def cmd_schema(args) -> int:
    from .spec import json_schema

    _print_json(json_schema())
    return 0


def cmd_check(args) -> int:
    from .pipeline import prepare

    kernel = _kernel(args)
    spec = prepare(args.spec, kernel, check_symbols=kernel is not None, progress=_progress(args))
    if args.json:
        _print_json({"spec": str(args.spec), "module": spec.module, "valid": True,
                     "hooks": [{"name": h.hook_name, "probe": h.probe, "symbol": h.symbol} for h in spec.hooks]})
    else:
        print(f"{args.spec}: ok: module {spec.module}, {len(spec.hooks)} hook{'s' if len(spec.hooks) != 1 else ''}"
              + (f", symbols checked against {kernel.release}" if kernel else ""))
    return 0


def cmd_render(args) -> int:
    from .pipeline import prepare
    from .render import render, render_c

    kernel = _kernel(args)
    spec = prepare(args.spec, kernel, check_symbols=kernel is not None, progress=_progress(args))
    if args.emit_c or not args.output:
        sys.stdout.write(render_c(spec))
        return 0
    _output_dir(args.output, "-o")
    _warn(_equivalent_warnings(spec))
    for path in render(spec, args.output):
        print(path)
    return 0


def _equivalent_warnings(spec) -> list[str]:
    from .equivalents import render_bpftrace, render_stap

    return [f"SystemTap: {w}" for w in render_stap(spec).warnings] + [f"bpftrace: {w}" for w in render_bpftrace(spec).warnings]


def cmd_stap(args) -> int:
    from .equivalents import render_stap
    from .spec import load_spec

    script = render_stap(load_spec(args.spec))
    _warn(script.warnings)
    sys.stdout.write(script.text)
    return 0


def cmd_bpftrace(args) -> int:
    from .equivalents import render_bpftrace
    from .spec import load_spec

    script = render_bpftrace(load_spec(args.spec))
    _warn(script.warnings)
    sys.stdout.write(script.text)
    return 0


def cmd_build(args) -> int:
    from .kbuild import make_command, resolve_tree

    # Without --kernel the default kernel's tree builds the module, but its profile is not
    # used: no symbol check, no glob expansion, and so never a boot to capture a profile.
    by_profile = args.kernel is not None
    kernel = _kernel(args) if args.kernel_dir is None else None
    if args.kernel_dir is None and kernel is None:
        from .kernels import find_kernel

        kernel = find_kernel(None)
    if args.show_command:
        tree, _, make_vars = resolve_tree(kernel, args.kernel_dir)
        print(" ".join(make_command(tree, Path(args.output).resolve(), make_vars)))
        return 0
    from .pipeline import build_spec

    _output_dir(args.output, "-o")
    built, _ = build_spec(args.spec, args.output, kernel=kernel, kernel_dir=args.kernel_dir, use_profile=by_profile,
                          check_symbols=by_profile and not args.no_symbol_check,
                          use_cache=not args.no_cache, strict=args.strict, progress=_progress(args))
    _warn(built.warnings)
    if args.json:
        _print_json({"module": built.name, "ko": str(built.ko), "kernel": built.kernel_release,
                     "kernel_dir": str(built.kernel_dir), "cached": built.cached, "warnings": list(built.warnings)})
    else:
        print(built.ko)
    return 0


# ------------------------------------------------------------------------------- results

def cmd_parse(args) -> int:
    from .report import format_results, parse_log, results_json

    if args.file in (None, "-"):
        text = sys.stdin.buffer.read()
    else:
        try:
            text = Path(args.file).read_bytes()
        except OSError as exc:
            raise KprobegenError(f"{args.file}: cannot read the log: {exc.strerror}") from None
    log = parse_log(text)
    results = log.results(module=args.module, all=args.all)
    # What the parser could not use is said, never dropped silently (stderr: not in --json).
    _warn(log.problems)
    _warn(f"{count} protocol line{'s' if count != 1 else ''} not understood: {name}"
          for name, count in sorted(log.unrecognised.items()))
    if args.json:
        _print_json(results_json(results))
    else:
        sys.stdout.write(format_results(results, top=args.top))
    return 0


def cmd_run(args) -> int:
    from .pipeline import run_spec
    from .report import format_results

    cmd = list(args.cmd)
    if not cmd:
        raise KprobegenError("no workload given: put the command after --, e.g. kprobegen run spec.yaml -- sync")
    if args.host:
        from .kmod import host_module_support

        supported, why = host_module_support()
        if not supported:
            raise LoadError(f"cannot load modules on this host: {why}; drop --host (the VM is the default here) or pass --vm")
        raise LoadError("loading on the host is not supported yet (it needs a manager that tracks what is loaded); use --vm")
    add = []
    for item in args.add:
        host, _, guest = item.partition(":")
        if not Path(host).exists():
            raise KprobegenError(f"--add {item}: {host} does not exist")
        add.append((Path(host), guest or f"/{Path(host).name}"))
    if args.keep is not None:
        _output_dir(args.keep, "--keep")
    outcome = run_spec(args.spec, cmd, kernel_release=args.kernel, add=add, timeout=args.timeout, accel=args.accel,
                       check_symbols=not args.no_symbol_check, progress=_progress(args), out_dir=args.keep)
    if args.json:
        _print_json(outcome.to_json())
    else:
        if outcome.run.stdout:
            sys.stdout.write(outcome.run.stdout)
        if outcome.run.stderr:
            sys.stderr.write(outcome.run.stderr)
        sys.stdout.write(format_results(outcome.results, top=args.top))
        print(f"workload exit code {outcome.run.exit_code}; kernel {outcome.built.kernel_release} ({outcome.run.accel})")
    return 0 if outcome.run.exit_code == 0 else (outcome.run.exit_code or 1)


# ------------------------------------------------------------------------------- kernels

def cmd_kernels_list(args) -> int:
    from .kernels import list_kernels

    kernels = list_kernels()
    if args.json:
        _print_json([{"release": k.release, "image": str(k.image), "build_dir": str(k.build_dir) if k.build_dir else None,
                      "origin": k.origin, "build_problem": k.build_problem()} for k in kernels])
        return 0
    if not kernels:
        print("no kernels found: apt-get install linux-image-cloud-amd64 linux-headers-cloud-amd64, "
              "or kprobegen kernels fetch bookworm")
        return 1
    from .errors import KernelError
    from .kernels import find_kernel

    try:
        default = find_kernel(None).release
    except KernelError:
        default = None
    print(f"  {'RELEASE':36} {'ORIGIN':28} {'HEADERS':10} NOTE")
    for k in kernels:
        problem = k.build_problem()
        mark = "*" if k.release == default else " "
        print(f"{mark} {k.release:36} {k.origin:28} {'yes' if k.build_dir else 'no':10} {problem or ''}".rstrip())
    if default:
        print(f"(* the default kernel for build and run; pick another with --kernel RELEASE or SUITE)")
    return 0


def cmd_kernels_fetch(args) -> int:
    from .kernels import fetch_kernel

    kernel = fetch_kernel(args.suite, progress=_progress(args))
    problem = kernel.build_problem()
    if args.json:
        _print_json({"release": kernel.release, "image": str(kernel.image), "build_dir": str(kernel.build_dir),
                     "origin": kernel.origin, "build_problem": problem})
    else:
        print(f"{kernel.release} ({kernel.origin}): image {kernel.image}, headers {kernel.build_dir}")
        if problem:
            print(f"note: {problem}")
    return 0


# ------------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other kprobegen error."""

    def error(self, message: str):
        self.exit(2, f"kprobegen: error: {self.prog.removeprefix('kprobegen').strip() or 'arguments'}: "
                     f"{_one_line(message)} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="kprobegen", description="YAML hook specs → kprobe kernel modules → exact counts.")
    top.add_argument("--version", action="version", version=f"kprobegen {__version__}")
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def spec_arg(p):
        p.add_argument("spec", type=Path, help="the hook spec (YAML)")

    p = sub.add_parser("schema", help="print the JSON Schema of a spec")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("check", help="validate a spec (and its symbols, with --kernel)")
    spec_arg(p)
    p.add_argument("--kernel", help="check symbols against this kernel's profile")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("render", help="write the module's C, Makefile, .stp and .bt")
    spec_arg(p)
    p.add_argument("-o", "--output", type=_path, help="output folder (without it: the C to stdout)")
    p.add_argument("--kernel", help="expand symbol globs and check symbols against this kernel")
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
    where.add_argument("--kernel", help="a kernel release or suite (see `kprobegen kernels list`)")
    where.add_argument("--kernel-dir", type=Path, help="an explicit Kbuild tree (headers)")
    p.add_argument("--no-cache", action="store_true", help="always run the compiler")
    p.add_argument("--strict", action="store_true", help="fail on compiler warnings")
    p.add_argument("--no-symbol-check", action="store_true", help="do not check symbols against the kernel's profile")
    p.add_argument("--show-command", action="store_true", help="print the make command and exit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("parse", help="parse module reports out of a kernel log")
    p.add_argument("file", nargs="?", help="kernel log (dmesg, journalctl -k, /dev/kmsg, syslog); - or nothing: stdin")
    p.add_argument("--module", help="only this module")
    p.add_argument("--all", action="store_true", help="every report (a time series), not just the latest complete one")
    p.add_argument("--top", type=_positive_int, default=10, help="keys shown per hook (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("run", help="build, load in a VM, run a workload, print the counts")
    spec_arg(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--vm", action="store_true", help="load in a disposable VM (the default)")
    mode.add_argument("--host", action="store_true", help="load on this host")
    p.add_argument("--kernel", help="kernel release or suite for the VM (default: Debian 12 cloud)")
    p.add_argument("--add", action="append", default=[], metavar="HOST_PATH[:GUEST_PATH]", help="copy a file into the guest")
    p.add_argument("--timeout", type=_seconds, default=120.0, help="seconds before the VM is killed (default 120)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--no-symbol-check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep", type=_path, help="keep the built module and sources in this folder")
    p.add_argument("--top", type=_positive_int, default=10)
    p.add_argument("--json", action="store_true", help="results as JSON, with the workload's exit_code")
    p.add_argument("cmd", nargs="*", help="-- CMD [ARGS...]: the workload, run in the guest")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("kernels", help="kernels to build for and boot")
    ksub = p.add_subparsers(dest="kernels_command", required=True, metavar="SUBCOMMAND")
    q = ksub.add_parser("list", help="installed and fetched kernels")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_kernels_list)
    q = ksub.add_parser("fetch", help="download a Debian cloud kernel and its headers into the cache")
    q.add_argument("suite", help="bookworm, bookworm-backports, bullseye or trixie")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_kernels_fetch)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the workload, verbatim (argparse's REMAINDER would
    # also swallow options such as --json written between the spec and the "--").
    workload: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, workload = argv[:at], argv[at + 1:]
    args = parser().parse_args(argv)
    if hasattr(args, "cmd"):
        args.cmd = list(args.cmd) + workload
    _created_dirs.clear()
    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`): every command answers there
            raise KprobegenError("standard output is closed; redirect it to a file or /dev/null")
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
