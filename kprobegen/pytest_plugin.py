"""Kernel counters in tests: kprobegen's pytest plugin (registered through ``pytest11``).

    def test_fsync_per_write(kprobes):
        with kprobes("specs/fsync.yaml") as probe:
            probe.run("my-db-bench --writes 100")
        assert probe.results.hooks["fsync"].hits == 100

``kprobes(spec)`` takes a spec file, a YAML string or a dict. Inside the ``with`` block the
module is loaded and counting; ``probe.run(cmd)`` runs a shell command where the module is
(the guest, or this machine), ``probe.add(here, there)`` copies a file there first, and
``probe.snapshot()`` gives live counts. When the block ends the module is unloaded and
``probe.results`` holds its final counts: the same ``kprobegen.report.Results`` that
``kprobegen parse`` gives. Whatever the test does, every module it loaded is unloaded at its
end.

Where modules load (``--kprobegen-target``):

- ``guest`` (the default): the full Debian guest image (``kprobegen image build``), booted
  once per test session (once per xdist worker) with ``kprobegen serve`` inside, reused by
  every test (kprobegen.vm.session). A spec is built here against the guest kernel's headers
  when this machine has them, and uploaded; otherwise the service builds it in the guest.
- ``host``: this machine's running kernel, through its manager service when one runs
  (the module's lifetime is this pytest process), else host mode directly.

A test that uses ``kprobes`` is marked ``kprobegen`` (``-m "not kprobegen"`` leaves them
out). Where no target is available the test is skipped with the reason and how to enable it;
under ``CI=true`` it fails instead. When such a test fails, the counts of its probes are in
the report (a "kprobegen counts" section), and a comparison of Results shows their tables.

Only pytest and the standard library are imported when pytest starts; the rest on first use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

TARGETS = ("guest", "host")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("kprobegen", "kernel counters with kprobegen (the kprobes fixture)")
    group.addoption("--kprobegen-target", choices=TARGETS, default=os.environ.get("KPROBEGEN_TARGET", "guest"),
                    help="where modules load: guest (the full Debian guest, booted once per session; "
                         "default, or $KPROBEGEN_TARGET) or host (this machine's kernel)")
    group.addoption("--kprobegen-image", default="bookworm", metavar="SUITE",
                    help="the guest image's Debian suite (kprobegen image build SUITE); default: bookworm")
    group.addoption("--kprobegen-kernel", default=None, metavar="RELEASE",
                    help="the kernel release the target must run (uname -r); a different one fails the "
                         "session's first kprobes test; default: whatever it runs")
    group.addoption("--kprobegen-timeout", type=float, default=600.0, metavar="SECONDS",
                    help="the longest one load, unload or probe.run may take; default: 600")
    group.addoption("--kprobegen-accel", choices=("auto", "kvm", "tcg"), default=None,
                    help="how the guest boots (auto: KVM when it works, else TCG); default: $KPROBEGEN_ACCEL, "
                         "else auto")
    group.addoption("--kprobegen-fresh-boot", action="store_true", default=False,
                    help="boot the guest afresh instead of resuming its saved boot (a session saves the "
                         "guest once its service answers, and later sessions start from that in about a "
                         "second: see docs/pytest.md)")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "kprobegen: loads kernel modules through kprobegen (uses the kprobes "
                                       "fixture); deselect with -m 'not kprobegen'")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "kprobes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kprobegen)


def _unavailable(reason: str, enable: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"kprobegen: {reason} -- under CI this is a failure", pytrace=False)
    pytest.skip(f"kprobegen: {reason}; to enable: {enable}")


class ProbeError(Exception):
    """A module could not be loaded, unloaded or read: the kernel's or the service's reason."""


# -- targets ---------------------------------------------------------------------------------

class GuestTarget:
    """The full Debian guest, up for the whole session, with the service inside."""

    name = "guest"

    def __init__(self, config):
        from kprobegen.errors import KprobegenError
        from kprobegen.vm import guest
        from kprobegen.vm.session import Session

        suite = config.getoption("--kprobegen-image")
        self.timeout = config.getoption("--kprobegen-timeout")
        if shutil.which("qemu-system-x86_64") is None:
            _unavailable("qemu-system-x86_64 is not installed", "apt-get install qemu-system-x86")
        if os.geteuid() == 0 and shutil.which("debootstrap"):   # reused, or (re)built for this kprobegen
            try:
                image = guest.build_image(suite, progress=_say)
            except KprobegenError as exc:
                _unavailable(f"building the {suite} guest image failed: {exc}", f"kprobegen image build {suite}")
        else:
            image = guest.find_image(suite)
            if image is None:
                _unavailable(f"no {suite} guest image, and building one needs root and debootstrap",
                             f"sudo kprobegen image build {suite}")
        self.session = Session(image, accel=config.getoption("--kprobegen-accel"), progress=_say,
                               resume=not config.getoption("--kprobegen-fresh-boot"))
        try:
            self.session.start()
        except KprobegenError as exc:
            _unavailable(f"the guest did not come up: {exc}", "kprobegen doctor; kprobegen vm --image true")
        self.release = self.session.release
        self._work = Path(tempfile.mkdtemp(prefix="kpg-pytest-"))
        self._kernel = self._local_kernel()

    def _local_kernel(self):
        """This machine's Kernel for the guest's release, if it has its headers (builds run here)."""
        from kprobegen.errors import KernelError
        from kprobegen.kernels import find_kernel

        try:
            kernel = find_kernel(self.release)
        except KernelError:
            return None
        return kernel if kernel.build_dir and Path(kernel.build_dir, "Makefile").is_file() else None

    def close(self) -> None:
        self.session.close()
        shutil.rmtree(self._work, ignore_errors=True)

    def _api(self, method: str, path: str, body=None, content_type: str = "application/json") -> dict:
        status, answer = self.session.request(method, path, body, content_type=content_type, timeout=self.timeout)
        if status != 200:
            raise ProbeError(f"{method} {path}: {status}: {answer.get('error', answer)}")
        return answer

    def load(self, spec, text: str) -> str:
        from kprobegen.pipeline import build_spec

        if self._kernel is not None:    # build here (fast), check the symbols against its profile, upload
            built, _ = build_spec(spec, self._work / spec.module, kernel=self._kernel, note=_say)
            self._api("PUT", f"/v1/modules/{spec.module}", self._upload_bytes(Path(built.ko)),
                      content_type="application/octet-stream")
        else:                           # the service builds it in the guest
            self._api("POST", "/v1/modules", {"spec": text})
        return spec.module

    def _upload_bytes(self, ko: Path) -> bytes:
        """The module as uploaded: without its DWARF (objcopy --strip-debug), which the kernel
        does not load: a 300 KB .ko is 20 KB then, less to send, to check and to insmod. The
        module as built stays as it is; without objcopy it goes whole."""
        import subprocess

        stripped = self._work / "upload" / f"{ko.stem}-{ko.stat().st_mtime_ns}.ko"
        if not stripped.exists():
            stripped.parent.mkdir(exist_ok=True)
            try:
                done = subprocess.run(["objcopy", "--strip-debug", str(ko), str(stripped)], capture_output=True)
            except OSError:
                return ko.read_bytes()
            if done.returncode != 0:
                stripped.unlink(missing_ok=True)
                return ko.read_bytes()
        return stripped.read_bytes()

    def unload(self, name: str) -> dict:
        return self._api("DELETE", f"/v1/modules/{name}")["results"]

    def snapshot(self, name: str) -> dict:
        return self._api("GET", f"/v1/modules/{name}/snapshot")["results"]

    def run(self, command: str, timeout: float | None):
        return self.session.exec(command, timeout=timeout or self.timeout)

    def add(self, here: str | Path, there: str) -> None:
        self.session.add(here, there)


class HostTarget:
    """This machine's kernel: through its manager service when one runs, else host mode."""

    name = "host"

    def __init__(self, config):
        from kprobegen import host

        self.timeout = config.getoption("--kprobegen-timeout")
        why = host.cannot_load()
        if why:
            _unavailable(f"this machine cannot load modules ({why})", "run on a machine that can, as root, "
                                                                       "or use --kprobegen-target=guest")
        self.release = host.release()
        self._work = Path(tempfile.mkdtemp(prefix="kpg-pytest-"))
        from kprobegen.client import RW_SOCKET

        self.client = None
        if RW_SOCKET.exists():
            from kprobegen.client import Client

            self.client = Client(RW_SOCKET, timeout=self.timeout)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        shutil.rmtree(self._work, ignore_errors=True)

    def load(self, spec, text: str) -> str:
        from kprobegen.errors import KprobegenError

        try:
            if self.client is not None:   # the service unloads it if this pytest dies
                self.client.load(spec=text, lifetime="client")
            else:
                from kprobegen.pipeline import load_on_host

                path = self._work / f"{spec.module}.yaml"
                path.write_text(text)
                load_on_host(path)
        except KprobegenError as exc:
            raise ProbeError(str(exc)) from None
        return spec.module

    def unload(self, name: str):
        from kprobegen import host
        from kprobegen.errors import KprobegenError

        try:
            if self.client is not None:
                return self.client.unload(name)["results"]
            return host.unload(name)
        except KprobegenError as exc:
            raise ProbeError(str(exc)) from None

    def snapshot(self, name: str):
        from kprobegen import host

        if self.client is not None:
            return self.client.snapshot(name)["results"]
        return host.snapshot(name)

    def run(self, command: str, timeout: float | None):
        from kprobegen.vm.session import Completed

        proc = subprocess.run(command, shell=True, capture_output=True, timeout=timeout or self.timeout)
        return Completed(command, proc.returncode, proc.stdout, proc.stderr)

    def add(self, here: str | Path, there: str) -> None:
        src = Path(here)
        if src.is_dir():
            shutil.copytree(src, there, dirs_exist_ok=True)
        else:
            Path(there).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, there)


def _say(message: str) -> None:
    import sys

    print(f"kprobegen: {message}", file=sys.stderr, flush=True)


# -- probes ----------------------------------------------------------------------------------

def _as_results(data):
    from kprobegen.report import Results

    return data if isinstance(data, Results) else Results.from_json(data)


class Probe:
    """One module for the span of a ``with`` block (see the module's docstring)."""

    def __init__(self, target, spec, text: str):
        self.target = target
        self.spec = spec
        self.module: str = spec.module
        self._text = text
        self._results = None
        self.loaded = False

    def __enter__(self) -> "Probe":
        self.target.load(self.spec, self._text)
        self.loaded = True
        return self

    def __exit__(self, *exc) -> None:
        self.unload()

    def unload(self) -> None:
        if self.loaded:
            self.loaded = False
            self._results = _as_results(self.target.unload(self.module))

    def run(self, command: str, *, check: bool = True, timeout: float | None = None):
        """Run a shell command where the module is loaded; with ``check``, a non-zero exit fails."""
        done = self.target.run(command, timeout)
        return done.check() if check else done

    def add(self, here: str | Path, there: str) -> "Probe":
        """Copy a file or folder from this machine to ``there`` where the workload runs."""
        self.target.add(here, there)
        return self

    def snapshot(self):
        """Live counts (Results) while the module is loaded."""
        if not self.loaded:
            raise ProbeError(f"{self.module} is not loaded: its final counts are probe.results")
        return _as_results(self.target.snapshot(self.module))

    @property
    def results(self):
        """The final counts (Results), once the ``with`` block has ended."""
        if self._results is None:
            raise ProbeError(f"{self.module}: the final counts are there once the `with` block ends "
                             "(probe.snapshot() gives live counts)")
        return self._results


class Probes:
    """What the ``kprobes`` fixture gives: call it with a spec to get a Probe."""

    def __init__(self, target):
        self.target = target
        self.probes: list[Probe] = []

    def __call__(self, spec) -> Probe:
        parsed, text = _read_spec(spec)
        probe = Probe(self.target, parsed, text)
        self.probes.append(probe)
        return probe

    def cleanup(self) -> list[str]:
        """Unload whatever is still loaded; the reasons of what could not be."""
        problems = []
        for probe in self.probes:
            try:
                probe.unload()
            except Exception as exc:  # every probe gets its chance
                problems.append(f"{probe.module}: {exc}")
        return problems


def _read_spec(spec):
    """(validated Spec, its YAML text) from a path, a YAML string or a dict. A string is YAML
    when it has a newline or a ``: ``, else a path."""
    from kprobegen.spec import parse_spec

    if isinstance(spec, dict):
        import yaml

        text, source = yaml.safe_dump(spec, sort_keys=False), "<dict>"
    elif isinstance(spec, str) and ("\n" in spec or ": " in spec):
        text, source = spec, "<string>"
    elif isinstance(spec, (str, Path)):
        from kprobegen.specfile import read_spec_bytes

        text, source = read_spec_bytes(spec).decode("utf-8", errors="replace"), str(spec)
    else:
        raise TypeError(f"kprobes() takes a spec path, YAML text or a dict, not {type(spec).__name__}")
    return parse_spec(text, source), text


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kprobegen_target(request):
    """Where the session's modules load: a GuestTarget (booted once) or a HostTarget."""
    config = request.config
    target = (GuestTarget if config.getoption("--kprobegen-target") == "guest" else HostTarget)(config)
    request.addfinalizer(target.close)
    wanted = config.getoption("--kprobegen-kernel")
    if wanted and wanted != target.release:
        pytest.fail(f"kprobegen: the {target.name} runs kernel {target.release}, not {wanted} "
                    "(--kprobegen-kernel)", pytrace=False)
    return target


@pytest.fixture
def kprobes(kprobegen_target):
    """``kprobes(spec)`` → a Probe to use as ``with kprobes(spec) as probe:``; every module a
    test loaded is unloaded at its end."""
    probes = Probes(kprobegen_target)
    yield probes
    problems = probes.cleanup()
    if problems:
        pytest.fail("kprobegen: unloading failed: " + "; ".join(problems), pytrace=False)


# -- reports -----------------------------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    probes = getattr(item, "funcargs", {}).get("kprobes")
    if report.when != "call" or not report.failed or not isinstance(probes, Probes):
        return
    from kprobegen.report.format import format_results

    texts = []
    for probe in probes.probes:
        try:
            results = probe.results if probe._results is not None else (probe.snapshot() if probe.loaded else None)
        except Exception as exc:
            texts.append(f"{probe.module}: counts unavailable ({exc})")
            continue
        if results is not None:
            texts.append(format_results([results]).rstrip())
    if texts:
        report.sections.append(("kprobegen counts", "\n\n".join(texts)))


def pytest_assertrepr_compare(config, op, left, right):
    from kprobegen.report import Results

    if op == "==" and isinstance(left, Results) and isinstance(right, Results):
        from kprobegen.report.format import format_results

        return ["kprobegen results differ:", "left:", *format_results([left]).splitlines(),
                "right:", *format_results([right]).splitlines()]
    return None
