"""The full Debian guest: a real Debian userland on a disk image, booted copy-on-write.

The busybox VM (runner.py) is disposable and tiny; this guest is what host mode, the manager
service and the pytest plugin are tested in, since the machines here cannot load modules
themselves. ``build_image(suite)`` makes it once:

1. ``debootstrap --variant=minbase`` of the suite from the system's Debian mirror, with the
   suite's -updates and -security pockets in its apt sources;
2. ``apt-get install`` in the root of Debian's cloud kernel and its headers (so the guest
   builds modules against its running kernel), the Kbuild toolchain, kmod and python3;
3. this kprobegen, installed from its source tree into ``/opt/kprobegen`` (a venv) with wheels
   downloaded on the host for the guest's Python, offline in the root;
4. ``/usr/local/sbin/kpg-guest-init`` (templates/guest-init.sh) as the boot's init, and a
   unit that runs it under systemd for ``run(init="systemd")``;
5. the root packed into an ext4 image with ``mkfs.ext4 -d``, the kernel and initrd beside it.

It lands in ``cache_dir()/images/<suite>/`` with a manifest written last, keyed by a hash of
its inputs (suite, packages, kprobegen's source, the init script): unchanged inputs reuse it.
``run(image, cmd)`` boots it with the image as a copy-on-write root disk (qemu's snapshot
mode: nothing written in the guest survives the boot), no network device, and the command
and its files on a second, read-only disk; stdout and stderr stream back over serial ports.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kprobegen import templates_dir
from kprobegen.errors import VMError
from kprobegen.cache import atomic_write, cache_dir, lock
from kprobegen.kernels.debian import debian_mirror, suite_pockets
from kprobegen.progress import Notice
from kprobegen.vm import qemu as _qemu
from kprobegen.vm.runner import boot, console_lines, guest_path, meaningful_line, new_workdir

#: Suites an image can be built from.
IMAGE_SUITES = ("bookworm", "trixie")
#: Changes whenever the layout of an image changes, so that older images are rebuilt.
IMAGE_FORMAT = 1
#: What the guest has beyond minbase: the cloud kernel and its headers (build against the
#: running kernel), what Kbuild runs (make, gcc via the headers' compiler package, pahole for
#: module BTF), kmod, python3 with venv and headers (kprobegen and its C scanner), libudev.
PACKAGES = (
    "linux-image-cloud-amd64", "linux-headers-cloud-amd64",
    "make", "gcc", "libc6-dev", "dwarves", "kmod", "procps", "zstd",
    "python3", "python3-venv", "python3-dev",
    "libudev1",     # pyudev (the service's module watcher) loads it with ctypes
    "systemd",      # PID 1 of run(init="systemd"): the service's unit tested as installed
)
INIT = "/usr/local/sbin/kpg-guest-init"
#: How ``run(init="systemd")`` runs the command: the init above says BOOT, then execs systemd
#: (kpg.init=systemd on the kernel command line); systemd runs this unit, pulled in by
#: systemd.wants=, after multi-user.target, and the unit runs the same init script again,
#: which, not being PID 1, goes straight to the command (and powers off after it).
RUN_UNIT = "kpg-guest-run.service"
_RUN_UNIT_TEXT = f"""\
[Unit]
Description=kprobegen guest: run the boot's command, then power off
After=multi-user.target
ConditionKernelCommandLine=kpg.init=systemd

[Service]
Type=simple
ExecStart={INIT}
StandardInput=null
"""
#: The kernel command line of a systemd boot, beyond the custom init's: no getty (the one
#: systemd would start on the console, ttyS0, writes a login prompt there).
SYSTEMD_CMDLINE = ("kpg.init=systemd", f"systemd.wants={RUN_UNIT}", "systemd.mask=serial-getty@ttyS0.service",
                   "systemd.mask=getty.target")
#: Free room in the image beyond its files (sparse: it costs no disk until the guest writes).
FREE_BYTES = 2 << 30
#: Seconds the build steps may take each.
STEP_TIMEOUT = 1800

Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class GuestImage:
    """A built image: the ext4 root, and the kernel and initrd installed in it."""

    suite: str
    directory: Path
    release: str          # the kernel release installed in the image (what the guest runs)
    inputs: str           # hash of what the image was built from
    built_at: str

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.ext4"

    @property
    def vmlinuz(self) -> Path:
        return self.directory / f"vmlinuz-{self.release}"

    @property
    def initrd(self) -> Path:
        return self.directory / f"initrd.img-{self.release}"


@dataclass
class GuestRun:
    """One boot of the guest: how it ended and what the command did."""

    status: str                   # ok | panic | oops | timeout | lost
    accel: str
    exit_code: int | None
    reason: str
    console_tail: str
    timings: dict[str, float] = field(default_factory=dict)

    def raise_for_status(self) -> "GuestRun":
        if self.status != "ok":
            raise VMError(f"guest run {self.status} ({self.accel}): "
                          f"{self.reason or meaningful_line(self.console_tail) or 'no console output'}")
        return self


def image_dir(suite: str) -> Path:
    return cache_dir() / "images" / suite


def _say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


# -- inputs --------------------------------------------------------------------------------

def source_tree() -> Path:
    """The kprobegen source tree this code runs from (a checkout: pyproject.toml beside it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "setup.py").is_file():
        raise VMError(f"an image installs kprobegen from its source tree, and {root} is not one "
                      "(no pyproject.toml/setup.py): run kprobegen from a checkout")
    return root


def _source_files(root: Path) -> list[Path]:
    """The files a kprobegen install is made of, relative to the tree, sorted."""
    files = [Path(n) for n in ("pyproject.toml", "setup.py", "README.md")]
    for sub, patterns in (("kprobegen", ("*.py", "*.c")), ("templates", ("*.j2", "*.sh"))):
        for pattern in patterns:
            files += [p.relative_to(root) for p in (root / sub).rglob(pattern) if "__pycache__" not in p.parts]
    return sorted(set(files))


def _init_script() -> bytes:
    return (templates_dir() / "guest-init.sh").read_bytes()


def image_inputs(suite: str) -> str:
    """A hash of everything an image of ``suite`` is made from (not the archive's state:
    ``build_image(rebuild=True)`` takes the archive's newest packages)."""
    h = hashlib.sha256()
    h.update(json.dumps([IMAGE_FORMAT, suite, PACKAGES]).encode())
    h.update(_init_script())
    root = source_tree()
    for rel in _source_files(root):
        h.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def find_image(suite: str = "bookworm") -> GuestImage | None:
    """The image of ``suite`` in the cache, whatever its inputs (None if there is none)."""
    d = image_dir(suite)
    try:
        meta = json.loads((d / "manifest.json").read_text())
        image = GuestImage(suite, d, meta["release"], meta["inputs"], meta["built_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return image if image.rootfs.is_file() and image.vmlinuz.is_file() and image.initrd.is_file() else None


# -- building ------------------------------------------------------------------------------

def _run(argv: Sequence[str], what: str, log: Path, timeout: float = STEP_TIMEOUT, env=None) -> str:
    """Run one build step; its output goes to ``log``; VMError with the log's tail on failure."""
    try:
        with open(log, "ab") as out:
            out.write(f"\n$ {shlex.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=out, timeout=timeout, env=env)
            out.write(proc.stdout)
    except FileNotFoundError:
        raise VMError(f"image build: {what}: {argv[0]} is not installed "
                      f"(apt-get install {'debootstrap' if argv[0] == 'debootstrap' else 'e2fsprogs'})") from None
    except subprocess.TimeoutExpired:
        raise VMError(f"image build: {what} did not finish within {timeout:g} s (log: {log})") from None
    if proc.returncode != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        raise VMError(f"image build: {what} failed (exit {proc.returncode}): {' | '.join(tail)} (log: {log})")
    return proc.stdout.decode(errors="replace")


#: Runs as root in a private mount namespace (the mounts vanish with it): mounts /proc, /sys and
#: /dev into the root given as $1, then runs the rest of the arguments chrooted there.
_IN_ROOT = """
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
"""


def _in_root(root: Path, *argv: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc", _IN_ROOT, "sh", str(root), *argv]


def _requirements(tree: Path) -> list[str]:
    """kprobegen's runtime and build requirements, and its ``pytest`` extra (the plugin runs in
    the guest too), as pyproject.toml states them."""
    meta = tomllib.loads((tree / "pyproject.toml").read_text())
    return (list(meta["project"]["dependencies"]) + list(meta["project"]["optional-dependencies"]["pytest"])
            + list(meta["build-system"]["requires"]) + ["wheel"])


def build_image(suite: str = "bookworm", *, rebuild: bool = False, progress: Progress = None) -> GuestImage:
    """The image of ``suite`` from the cache when its inputs are unchanged, else built anew
    (minutes: debootstrap, ~700 MB of packages, mkfs). Needs root, debootstrap, mkfs.ext4, the
    system's Debian mirror and PyPI (for the wheels of the guest's Python)."""
    if suite not in IMAGE_SUITES:
        raise VMError(f"unknown image suite {suite!r}: choose one of {', '.join(IMAGE_SUITES)}")
    inputs = image_inputs(suite)
    final = image_dir(suite)
    with lock(final.parent / f".lock-{suite}"):
        old = find_image(suite)
        if old is not None and old.inputs == inputs and not rebuild:
            _say(progress, f"image {suite}: up to date in {final} (kernel {old.release})")
            return old
        if os.geteuid() != 0:
            raise VMError("image build needs root (debootstrap, chroot and mounts): run it as root")
        t0 = time.monotonic()
        tmp = final.parent / f".tmp-{suite}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        root = tmp / "root"
        root.mkdir(parents=True)
        log = tmp / "build.log"
        try:
            release = _make_root(suite, root, log, progress, t0)
            _say(progress, f"image {suite}: packing {root} into an ext4 image (mkfs.ext4 -d)")
            shutil.copy2(root / "boot" / f"vmlinuz-{release}", tmp / f"vmlinuz-{release}")
            shutil.copy2(root / "boot" / f"initrd.img-{release}", tmp / f"initrd.img-{release}")
            used = int(_run(["du", "-sb", str(root)], "measuring the root", log).split()[0])
            size = (used * 12 // 10 + FREE_BYTES) // (1 << 20)
            _run(["mkfs.ext4", "-q", "-F", "-L", "kpgroot", "-d", str(root), str(tmp / "rootfs.ext4"), f"{size}M"],
                 "mkfs.ext4", log)
            shutil.rmtree(root)
            built_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            atomic_write(tmp / "manifest.json", json.dumps({
                "suite": suite, "release": release, "inputs": inputs, "built_at": built_at,
                "packages": list(PACKAGES), "format": IMAGE_FORMAT}, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            if root.exists():
                shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            if tmp.exists() and not (tmp / "manifest.json").exists():
                keep = final.parent / f"failed-{suite}.log"
                if log.exists():
                    shutil.copy(log, keep)
                shutil.rmtree(tmp, ignore_errors=True)
        image = find_image(suite)
        assert image is not None
        _say(progress, f"image {suite}: kernel {release}, built in {time.monotonic() - t0:.0f} s: {final}")
        return image


def _make_root(suite: str, root: Path, log: Path, progress: Progress, t0: float) -> str:
    """debootstrap + packages + kprobegen + init into ``root``; the kernel release installed."""
    def step(message: str) -> None:
        _say(progress, Notice(f"image {suite}: {message} ({time.monotonic() - t0:.0f} s)"))

    mirror, _ = debian_mirror()
    step(f"debootstrap from {mirror}")
    _run(["debootstrap", "--variant=minbase", "--include=ca-certificates", suite, str(root), mirror],
         "debootstrap", log)
    lines = [f"deb {uri} {name} main\n" for uri, name in [(mirror, suite), *suite_pockets(suite, mirror)]]
    (root / "etc" / "apt" / "sources.list").write_text("".join(lines))
    step(f"installing {len(PACKAGES)} packages and what they need (apt-get)")
    _run(_in_root(root, "apt-get", "update", "-q"), "apt-get update", log)
    _run(_in_root(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES),
         "apt-get install", log)
    releases = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    if len(releases) != 1 or not (root / "boot" / f"initrd.img-{releases[0]}").is_file():
        raise VMError(f"image build: expected one kernel and its initrd in {root / 'boot'}, found {releases}")
    release = releases[0]

    step("installing kprobegen into /opt/kprobegen")
    version = _run(_in_root(root, "python3", "-c", "import sys; print('%d%d' % sys.version_info[:2])"),
                   "reading the guest's Python version", log).strip()
    tree = source_tree()
    wheels = root / "tmp" / "kpg-wheels"
    _run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(wheels), "--only-binary=:all:",
          "--python-version", version, "--implementation", "cp", "--platform", "manylinux2014_x86_64",
          "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
          *_requirements(tree)], "downloading wheels for the guest's Python", log)
    src = root / "tmp" / "kpg-src"
    for rel in _source_files(tree):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / rel, src / rel)
    _run(_in_root(root, "python3", "-m", "venv", "/opt/kprobegen"), "python3 -m venv", log)
    _run(_in_root(root, "/opt/kprobegen/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/kpg-wheels",
                  "/tmp/kpg-src[pytest]"), "pip install kprobegen (offline)", log)
    (root / "usr" / "local" / "bin" / "kprobegen").symlink_to("/opt/kprobegen/bin/kprobegen")
    init = root / INIT.lstrip("/")
    init.write_bytes(_init_script())
    init.chmod(0o755)
    (root / "etc" / "systemd" / "system" / RUN_UNIT).write_text(_RUN_UNIT_TEXT)
    # What the guest does not need: package caches, lists (it has no network), the sources.
    for junk in (root / "tmp", root / "var" / "cache" / "apt", root / "var" / "lib" / "apt" / "lists"):
        for child in junk.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    return release


# -- running -------------------------------------------------------------------------------

def _payload(cmd: Sequence[str], add: Sequence[tuple[Path, str]]) -> bytes:
    """The second disk: a tar of /kpg/cmd and the ``add`` files, padded to whole sectors."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        script = ("#!/bin/sh\n" + shlex.join(list(cmd)) + "\n").encode()
        info = tarfile.TarInfo("kpg/cmd")
        info.size, info.mode = len(script), 0o755
        tf.addfile(info, io.BytesIO(script))
        for host, guest in add:
            host = Path(host)
            if not host.exists():
                raise VMError(f"--add {host}: no such file or directory on the host")
            tf.add(str(host), arcname=guest_path(guest).lstrip("/"))
    data = buf.getvalue()
    return data + b"\0" * (-len(data) % 512)


def run(image: GuestImage, cmd: Sequence[str], *, add: Sequence[tuple[Path, str]] = (), timeout: float = 600.0,
        accel: str | None = None, memory_mb: int = 1024, stdout: Callable[[bytes], None] | None = None,
        stderr: Callable[[bytes], None] | None = None, progress: Progress = None,
        init: str = "plain", channels: Sequence[tuple[str, Path]] = (),
        on_start: Callable[[], None] | None = None) -> GuestRun:
    """Boot ``image``, run ``cmd`` as root in it (``sh``-quoted), stream its stdout and stderr
    to the callables as the bytes arrive, power off. The root disk is copy-on-write: every
    boot starts from the clean image. ``timeout`` covers the whole boot.

    ``init="plain"``: the command runs from the image's own init script, PID 1, with nothing
    else running (the quick boot). ``init="systemd"``: systemd is PID 1 and the command runs
    from a unit (``RUN_UNIT``) once multi-user.target is reached, with journald and everything
    a unit needs, so that ``systemctl`` works in it (some seconds more under TCG).

    ``channels`` (name, socket path): virtio-serial ports, each a Unix socket here that qemu
    listens on; ``on_start`` is called when qemu has started (kprobegen.vm.session)."""
    if not cmd:
        raise VMError("no command given for the guest")
    if init not in ("plain", "systemd"):
        raise VMError(f"unknown guest init {init!r}: use plain or systemd")
    t0 = time.monotonic()
    workdir = new_workdir()
    try:
        payload = workdir / "payload.tar"
        payload.write_bytes(_payload(cmd, add))
        nonce = secrets.token_hex(8)
        append = _qemu.kernel_cmdline("root=/dev/vda", "rw", f"init={INIT}", f"kpg.nonce={nonce}",
                                      "8250.nr_uarts=4", *(SYSTEMD_CMDLINE if init == "systemd" else ()))
        sinks = (stdout or (lambda b: None), stderr or (lambda b: None))
        s = boot(image.vmlinuz, image.initrd, workdir, nonce, timeout=timeout, accel=accel, progress=progress,
                  memory_mb=memory_mb, append=append, disks=((image.rootfs, True), (payload, False)),
                  streams=2, on_output=lambda i, chunk: sinks[i](chunk), report=False,
                  channels=tuple(channels), on_start=on_start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    exit_code = next((int(a[0]) for t, a, _ in s.tags if t == "EXIT" and a and a[0].isdigit()), None)
    m = s.marks
    timings = {k: round(m[b] - m[a], 3) for k, a, b in (("boot", "start", "BOOT"), ("command", "running", "DONE"))
               if a in m and b in m}
    timings["total"] = round(time.monotonic() - t0, 3)
    if s.kvm_probe is not None:
        timings["kvm_probe"] = round(s.kvm_probe, 3)
    tail = "\n".join(console_lines(s.console)[-50:])
    return GuestRun(status=s.status, accel=s.accel, exit_code=exit_code,
                    reason=s.reason or ("" if s.status == "ok" else meaningful_line(tail)),
                    console_tail=tail, timings=timings)
