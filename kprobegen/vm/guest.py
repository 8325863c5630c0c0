"""The full Debian guest: a real Debian userland on a disk image, booted copy-on-write.

The busybox VM (runner.py) is disposable and tiny; this guest is what host mode, the manager
service and the pytest plugin are tested in, since the machines here cannot load modules
themselves. ``build_image(suite)`` makes it once:

1. ``debootstrap --variant=minbase`` of the suite from the system's Debian mirror, with the
   suite's -updates and -security pockets in its apt sources;
2. ``provision/debian.sh --role image`` run in the root (chroot, where the mirror and PyPI are
   still reachable): the one provisioning script that also sets up the development machine
   (setup.sh) and a Vagrant VM (Vagrantfile). It installs Debian's cloud kernel and its headers
   (so the guest builds modules against its running kernel), the Kbuild toolchain, kmod and
   python3, this kprobegen into ``/opt/kprobegen`` (a venv, with pip from PyPI), the service's
   unit, and ``/usr/local/sbin/kpg-guest-init`` (templates/guest-init.sh) as the boot's init;
3. a unit that runs that init under systemd for ``run(init="systemd")``;
4. a self-test in the root, before it becomes a disk: ``kprobegen check``, ``render`` and
   ``build`` of modules/sync_counter.yaml against the headers the script installed (the
   host-mode commands that load nothing), recorded in the manifest and kept in ``selftest/``;
5. the root packed into an ext4 image with ``mkfs.ext4 -d``, the kernel and initrd beside it.

The ``box`` variant (``build_image(variant="box")``, for ``kprobegen image box``) is the same
with ``--role box`` (ssh, sudo, a ``vagrant`` user, DHCP), cached beside the image;
``build_box`` turns it into a bootable disk and a Vagrant box.

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
#: Changes whenever the layout of an image changes, so that older images are rebuilt.
IMAGE_FORMAT = 2
#: Image variants: the test guest, and the Vagrant box's root (provision/debian.sh's roles).
VARIANTS = ("image", "box")
#: The provisioning script, relative to the source tree: what the guest has beyond minbase is
#: its --role image (or box) packages and steps (``provision/debian.sh --role image --list``).
PROVISION = "provision/debian.sh"
#: The spec the self-test checks, renders and builds in the root.
SELFTEST_SPEC = "modules/sync_counter.yaml"
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


def image_dir(suite: str, variant: str = "image") -> Path:
    return cache_dir() / "images" / (suite if variant == "image" else f"{suite}-{variant}")


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


# pip needs the README that pyproject.toml names, but only as the package's long description:
# the image gets this stand-in, so that editing the project's README does not rebuild an image.
README_STAND_IN = b"kprobegen, installed in a guest image. The project's README.md says how to use it.\n"


def _source_files(root: Path) -> list[Path]:
    """The files a kprobegen install is made of, relative to the tree, sorted (README.md is
    not among them: the image gets README_STAND_IN in its place)."""
    files = [Path(n) for n in ("pyproject.toml", "setup.py", PROVISION,
                               "contrib/systemd/kprobegen.service", SELFTEST_SPEC)]
    for sub, patterns in (("kprobegen", ("*.py", "*.c")), ("templates", ("*.j2", "*.sh"))):
        for pattern in patterns:
            files += [p.relative_to(root) for p in (root / sub).rglob(pattern) if "__pycache__" not in p.parts]
    return sorted(set(files))


def _init_script() -> bytes:
    return (templates_dir() / "guest-init.sh").read_bytes()


def image_inputs(suite: str, variant: str = "image") -> str:
    """A hash of everything an image of ``suite`` is made from (not the archive's state:
    ``build_image(rebuild=True)`` takes the archive's newest packages): the provisioning
    script (provision/debian.sh, in the source files) among them, so a change rebuilds."""
    h = hashlib.sha256()
    h.update(json.dumps([IMAGE_FORMAT, suite, variant, _RUN_UNIT_TEXT]).encode())
    h.update(_init_script())
    h.update(README_STAND_IN)
    root = source_tree()
    for rel in _source_files(root):
        h.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def find_image(suite: str = "bookworm", variant: str = "image") -> GuestImage | None:
    """The image of ``suite`` in the cache, whatever its inputs (None if there is none)."""
    d = image_dir(suite, variant)
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


def _root_is_a_mount() -> bool:
    """Whether this process's / is a mount point. It is not in a plain chroot, and there
    ``unshare --propagation private`` (which marks / private) fails with EINVAL."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return True                     # cannot tell: let unshare decide
    return any(len(fields) > 4 and fields[4] == "/" for fields in map(str.split, mountinfo.splitlines()))


def _in_root(root: Path, *argv: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc", _IN_ROOT, "sh", str(root), *argv]


def _requirements(tree: Path) -> list[str]:
    """kprobegen's runtime and build requirements, and its ``pytest`` extra, as pyproject.toml
    states them (container/build.py downloads their wheels; the image's pip fetches them)."""
    meta = tomllib.loads((tree / "pyproject.toml").read_text())
    return (list(meta["project"]["dependencies"]) + list(meta["project"]["optional-dependencies"]["pytest"])
            + list(meta["build-system"]["requires"]) + ["wheel"])


def build_image(suite: str = "bookworm", *, rebuild: bool = False, progress: Progress = None,
                variant: str = "image") -> GuestImage:
    """The image of ``suite`` from the cache when its inputs are unchanged, else built anew
    (minutes: debootstrap, ~700 MB of packages, mkfs). Needs root, debootstrap, mkfs.ext4, the
    system's Debian mirror and PyPI (pip in the root). ``variant="box"``: the Vagrant box's
    root (provision/debian.sh --role box), cached apart from the test guest's."""
    if suite not in IMAGE_SUITES:
        raise VMError(f"unknown image suite {suite!r}: choose one of {', '.join(IMAGE_SUITES)}")
    if variant not in VARIANTS:
        raise VMError(f"unknown image variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    inputs = image_inputs(suite, variant)
    final = image_dir(suite, variant)
    name = final.name
    final.parent.mkdir(parents=True, exist_ok=True)
    with lock(final.parent / f".lock-{name}"):
        old = find_image(suite, variant)
        if old is not None and old.inputs == inputs and not rebuild:
            _say(progress, f"image {name}: up to date in {final} (kernel {old.release})")
            return old
        if os.geteuid() != 0:
            raise VMError("image build needs root (debootstrap, chroot and mounts): run it as root")
        if not _root_is_a_mount():
            raise VMError("image build: / is not a mount point here (a chroot?), so the build's mounts cannot be "
                          "kept in a private mount namespace: bind-mount the chroot onto itself before entering "
                          "it (mount --rbind DIR DIR), as tests/newcomer.sh does")
        t0 = time.monotonic()
        tmp = final.parent / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        root = tmp / "root"
        root.mkdir(parents=True)
        log = tmp / "build.log"
        try:
            release, selftest = _make_root(suite, variant, root, tmp, log, progress, t0)
            _say(progress, Notice(f"image {name}: packing the root into an ext4 image (mkfs.ext4 -d) "
                                  f"({time.monotonic() - t0:.0f} s)"))
            shutil.copy2(root / "boot" / f"vmlinuz-{release}", tmp / f"vmlinuz-{release}")
            shutil.copy2(root / "boot" / f"initrd.img-{release}", tmp / f"initrd.img-{release}")
            used = int(_run(["du", "-sb", str(root)], "measuring the root", log).split()[0])
            size = (used * 12 // 10 + FREE_BYTES) // (1 << 20)
            _run(["mkfs.ext4", "-q", "-F", "-L", "kpgroot", "-d", str(root), str(tmp / "rootfs.ext4"), f"{size}M"],
                 "mkfs.ext4", log)
            shutil.rmtree(root)
            built_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            atomic_write(tmp / "manifest.json", json.dumps({
                "suite": suite, "variant": variant, "release": release, "inputs": inputs, "built_at": built_at,
                "provision": {"script": PROVISION, "role": variant,
                              "sha256": hashlib.sha256((source_tree() / PROVISION).read_bytes()).hexdigest()},
                "selftest": selftest, "format": IMAGE_FORMAT}, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            if root.exists():
                shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            if tmp.exists() and not (tmp / "manifest.json").exists():
                keep = final.parent / f"failed-{name}.log"
                if log.exists():
                    shutil.copy(log, keep)
                shutil.rmtree(tmp, ignore_errors=True)
        image = find_image(suite, variant)
        assert image is not None
        _say(progress, f"image {name}: kernel {release}, built in {time.monotonic() - t0:.0f} s: {final}")
        return image


def image_manifest(image: GuestImage) -> dict:
    """The manifest of a built image: what built it, and its self-test."""
    return json.loads((image.directory / "manifest.json").read_text())


#: The self-test in the root: the host-mode commands that load nothing, as a user types them,
#: against the headers the provisioning script installed (the default kernel: the image's).
_SELFTEST = """
set -eu
export KPROBEGEN_CACHE=/tmp/kpg-selftest/cache
cd /tmp/kpg-selftest
spec=/tmp/kpg-src/{spec}
kprobegen check "$spec" > check.out 2>&1
kprobegen render "$spec" -o render > render.out 2>&1
kprobegen build "$spec" -o build --json > build.json
"""


def _make_root(suite: str, variant: str, root: Path, tmp: Path, log: Path, progress: Progress,
               t0: float) -> tuple[str, dict]:
    """debootstrap + provision/debian.sh + the run unit + the self-test into ``root``; the
    kernel release installed, and the self-test's record (its files copied to ``tmp/selftest``)."""
    name = image_dir(suite, variant).name

    def step(message: str) -> None:
        _say(progress, Notice(f"image {name}: {message} ({time.monotonic() - t0:.0f} s)"))

    mirror, _ = debian_mirror()
    step(f"debootstrap from {mirror}")
    _run(["debootstrap", "--variant=minbase", "--include=ca-certificates", suite, str(root), mirror],
         "debootstrap", log)
    lines = [f"deb {uri} {pocket} main\n" for uri, pocket in [(mirror, suite), *suite_pockets(suite, mirror)]]
    (root / "etc" / "apt" / "sources.list").write_text("".join(lines))

    # The source tree the script installs kprobegen from (and the script itself), and, for
    # pip only, this machine's CA bundle: its network may need CAs the root's bundle lacks.
    # Both are in /tmp, emptied below: nothing of this machine's trust stays in the image.
    tree = source_tree()
    src = root / "tmp" / "kpg-src"
    for rel in _source_files(tree):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / rel, src / rel)
    (src / "README.md").write_bytes(README_STAND_IN)
    env = []
    for bundle in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if bundle and Path(bundle).is_file():
            shutil.copy(bundle, root / "tmp" / "kpg-ca.crt")
            env = ["PIP_CERT=/tmp/kpg-ca.crt"]
            break
    step(f"provisioning: {PROVISION} --role {variant} (apt-get, pip)")
    out = _run(_in_root(root, "env", *env, "bash", f"/tmp/kpg-src/{PROVISION}", "--role", variant,
                        "--src", "/tmp/kpg-src"), f"{PROVISION} --role {variant}", log)
    (tmp / "provision.log").write_text(out)
    releases = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
    if len(releases) != 1 or not (root / "boot" / f"initrd.img-{releases[0]}").is_file():
        raise VMError(f"image build: expected one kernel and its initrd in {root / 'boot'}, found {releases}")
    release = releases[0]
    if not (root / INIT.lstrip("/")).is_file():
        raise VMError(f"image build: {PROVISION} --role {variant} did not install {INIT}")
    (root / "etc" / "systemd" / "system" / RUN_UNIT).write_text(_RUN_UNIT_TEXT)

    step(f"self-test in the root: kprobegen check, render, build of {SELFTEST_SPEC}")
    (root / "tmp" / "kpg-selftest").mkdir()
    _run(_in_root(root, "sh", "-c", _SELFTEST.format(spec=SELFTEST_SPEC)), "the self-test (check, render, build)",
         log)
    st = root / "tmp" / "kpg-selftest"
    built = json.loads((st / "build.json").read_text())
    if built.get("kernel") != release:
        raise VMError(f"image build: the self-test built for {built.get('kernel')!r}, not the image's kernel {release}")
    keep = tmp / "selftest"
    keep.mkdir()
    for f in ("check.out", "render.out", "build.json"):
        shutil.copy2(st / f, keep / f)
    rendered = sorted(p.name for p in (st / "render").iterdir())
    for f in rendered:
        shutil.copy2(st / "render" / f, keep / f)
    ko = st / "build" / Path(built["ko"]).name
    shutil.copy2(ko, keep / ko.name)
    selftest = {"spec": SELFTEST_SPEC, "check": (st / "check.out").read_text().strip(), "rendered": rendered,
                "built": {"module": built.get("module"), "kernel": built.get("kernel"), "ko": ko.name,
                          "sha256": hashlib.sha256(ko.read_bytes()).hexdigest()}}

    # What the guest does not need: package caches, lists (it has no network), the sources.
    for junk in (root / "tmp", root / "var" / "cache" / "apt", root / "var" / "lib" / "apt" / "lists"):
        for child in junk.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    return release, selftest


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


@dataclass(frozen=True)
class Resume:
    """How ``run`` boots a session that can be saved and resumed (kprobegen.vm.session)."""

    overlay: Path                 # qcow2, backed by the image's rootfs.ext4: the root disk's writes
    qmp: Path                     # qemu's QMP socket
    incoming: str | None = None   # the saved state to start from (a qemu migration URI)
    nonce: str | None = None      # the boot's data-channel nonce (a saved boot's, when resuming)
    accel: str | None = None      # the accelerator it was saved under (resuming)


def run(image: GuestImage, cmd: Sequence[str], *, add: Sequence[tuple[Path, str]] = (), timeout: float = 600.0,
        accel: str | None = None, memory_mb: int = 1024, stdout: Callable[[bytes], None] | None = None,
        stderr: Callable[[bytes], None] | None = None, progress: Progress = None,
        init: str = "plain", channels: Sequence[tuple[str, Path]] = (),
        on_start: Callable[[str], None] | None = None, resume: "Resume | None" = None) -> GuestRun:
    """Boot ``image``, run ``cmd`` as root in it (``sh``-quoted), stream its stdout and stderr
    to the callables as the bytes arrive, power off. The root disk is copy-on-write: every
    boot starts from the clean image. ``timeout`` covers the whole boot.

    ``init="plain"``: the command runs from the image's own init script, PID 1, with nothing
    else running (the quick boot). ``init="systemd"``: systemd is PID 1 and the command runs
    from a unit (``RUN_UNIT``) once multi-user.target is reached, with journald and everything
    a unit needs, so that ``systemctl`` works in it (some seconds more under TCG).

    ``channels`` (name, socket path): virtio-serial ports, each a Unix socket here that qemu
    listens on; ``on_start(accel)`` is called when qemu has started (kprobegen.vm.session).

    ``resume``: a session's boot that is saved or resumed (kprobegen.vm.session): the root
    disk's writes go to its qcow2 overlay, qemu answers QMP on its socket, and with
    ``incoming`` the machine starts from a saved state, booted with ``nonce`` (the saved
    boot's) under ``accel``, instead of booting."""
    if not cmd:
        raise VMError("no command given for the guest")
    if init not in ("plain", "systemd"):
        raise VMError(f"unknown guest init {init!r}: use plain or systemd")
    t0 = time.monotonic()
    workdir = new_workdir()
    try:
        payload = workdir / "payload.tar"
        payload.write_bytes(_payload(cmd, add))
        nonce = resume.nonce if resume is not None and resume.nonce else secrets.token_hex(8)
        append = _qemu.kernel_cmdline("root=/dev/vda", "rw", f"init={INIT}", f"kpg.nonce={nonce}",
                                      "8250.nr_uarts=4", *(SYSTEMD_CMDLINE if init == "systemd" else ()))
        sinks = (stdout or (lambda b: None), stderr or (lambda b: None))
        s = boot(image.vmlinuz, image.initrd, workdir, nonce, timeout=timeout, accel=accel, progress=progress,
                  memory_mb=memory_mb, append=append, disks=((image.rootfs, True), (payload, False)),
                  streams=2, on_output=lambda i, chunk: sinks[i](chunk), report=False,
                  channels=tuple(channels), on_start=on_start,
                  root_overlay=resume.overlay if resume else None, qmp=resume.qmp if resume else None,
                  incoming=resume.incoming if resume else None)
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


# -- the Vagrant box -----------------------------------------------------------------------

#: syslinux's MBR boot code (Debian's syslinux-common): it boots the active partition.
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
#: The box's Vagrantfile: defaults for the libvirt provider; the project's Vagrantfile (or the
#: user's) sets the rest.
_BOX_VAGRANTFILE = """\
# A kprobegen box (kprobegen image box): Debian's cloud kernel, kprobegen in /opt/kprobegen,
# its service enabled. Boots from its own disk (syslinux, root=LABEL=kpgroot).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "kvm"
    libvirt.disk_bus = "virtio"
    libvirt.memory = 1024
  end
end
"""
#: The boot loader's configuration: the kernel on ttyS0 too, for a console without a screen.
_SYSLINUX_CFG = """\
SERIAL 0 115200
DEFAULT kprobegen
TIMEOUT 10
PROMPT 0
LABEL kprobegen
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND root=LABEL=kpgroot rw console=tty0 console=ttyS0,115200n8
"""
_MIB = 1 << 20
_GIB = 1 << 30


@dataclass(frozen=True)
class Box:
    """A built box: the .box file and what went into it."""

    path: Path
    suite: str
    release: str
    inputs: str
    virtual_size: int     # GiB, as metadata.json says


def _box_tools() -> None:
    missing = [tool for tool, pkg in (("sfdisk", "fdisk"), ("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"),
                                      ("syslinux", "syslinux"), ("qemu-img", "qemu-utils"), ("dd", "coreutils"))
               if shutil.which(tool) is None]
    if missing or not MBR_BIN.is_file():
        pkgs = "syslinux syslinux-common mtools dosfstools qemu-utils fdisk"
        raise VMError(f"image box: {', '.join(missing) or MBR_BIN} not found: apt-get install {pkgs} "
                      "(provision/debian.sh --role dev installs them)")


def boot_disk(image: GuestImage, out: Path, log: Path) -> int:
    """A raw disk at ``out`` that boots ``image`` with no loop mount: an MBR (syslinux's
    mbr.bin), partition 1 a FAT file system with syslinux, the kernel and the initrd (active),
    partition 2 the image's ext4 root (label kpgroot); its size rounded up to whole GiB."""
    work = out.parent
    fat = work / "boot.fat"
    fat_mib = (image.vmlinuz.stat().st_size + image.initrd.stat().st_size) // _MIB + 16
    _run(["mkfs.vfat", "-n", "KPGBOOT", "-C", str(fat), str(fat_mib * 1024)], "mkfs.vfat", log)
    cfg = work / "syslinux.cfg"
    cfg.write_text(_SYSLINUX_CFG)
    for host, name in ((image.vmlinuz, "vmlinuz"), (image.initrd, "initrd.img"), (cfg, "syslinux.cfg")):
        _run(["mcopy", "-i", str(fat), str(host), f"::/{name}"], f"mcopy {name}", log)
    _run(["syslinux", "--install", str(fat)], "syslinux --install", log)
    root_bytes = image.rootfs.stat().st_size
    root_start = 1 + fat_mib                      # MiB; partition 1 starts at 1 MiB
    total = -(-((root_start << 20) + root_bytes) // _GIB) * _GIB
    with open(out, "wb") as f:
        f.truncate(total)
    layout = (f"label: dos\nstart={1 << 11}, size={fat_mib << 11}, type=c, bootable\n"
              f"start={root_start << 11}, size={root_bytes // 512}, type=83\n")
    try:
        with open(log, "ab") as lf:
            subprocess.run(["sfdisk", "-q", str(out)], input=layout.encode(), stdout=lf, stderr=lf, check=True,
                           timeout=STEP_TIMEOUT)
    except subprocess.CalledProcessError as e:
        raise VMError(f"image box: sfdisk failed (exit {e.returncode}; log: {log})") from None
    _run(["dd", f"if={MBR_BIN}", f"of={out}", "bs=440", "count=1", "conv=notrunc", "status=none"],
         "dd mbr.bin", log)
    _run(["dd", f"if={fat}", f"of={out}", "bs=1M", "seek=1", "conv=notrunc", "status=none"], "dd the FAT", log)
    _run(["dd", f"if={image.rootfs}", f"of={out}", "bs=1M", f"seek={root_start}", "conv=notrunc,sparse",
          "status=none"], "dd the root", log)
    fat.unlink()
    cfg.unlink()
    return total // _GIB


def build_box(suite: str = "bookworm", out: Path | None = None, *, rebuild: bool = False,
              progress: Progress = None) -> Box:
    """``kprobegen image box``: a libvirt Vagrant box (a tar of ``box.img``, qcow2,
    ``metadata.json`` and a ``Vagrantfile``) made from the box variant of the full guest
    image, written to ``out`` (default ``kprobegen-SUITE.box`` here)."""
    _box_tools()
    out = Path(out or f"kprobegen-{suite}.box").absolute()
    if out.is_dir():
        raise VMError(f"image box: {out} is a folder: name the .box file to write")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise VMError(f"image box: cannot write into {out.parent}: choose another -o")
    image = build_image(suite, rebuild=rebuild, progress=progress, variant="box")
    t0 = time.monotonic()
    work = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    log = out.with_name(out.name + ".log")     # kept when a step fails (the errors name it)
    log.unlink(missing_ok=True)
    try:
        _say(progress, Notice(f"image box {suite}: a bootable disk (MBR, syslinux, FAT /boot, the ext4 root)"))
        raw = work / "disk.raw"
        gib = boot_disk(image, raw, log)
        _say(progress, Notice(f"image box {suite}: qcow2 ({time.monotonic() - t0:.0f} s)"))
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "box.img")], "qemu-img convert", log)
        raw.unlink()
        (work / "metadata.json").write_text(json.dumps({"provider": "libvirt", "format": "qcow2",
                                                        "virtual_size": gib}) + "\n")
        (work / "Vagrantfile").write_text(_BOX_VAGRANTFILE)
        (work / "info.json").write_text(json.dumps({"suite": suite, "kernel": image.release,
                                                    "inputs": image.inputs, "built_at": image.built_at}) + "\n")
        _say(progress, Notice(f"image box {suite}: packing {out.name} ({time.monotonic() - t0:.0f} s)"))
        part = work / "box.tar"
        with tarfile.open(part, "w", format=tarfile.GNU_FORMAT) as tf:
            for name in ("metadata.json", "Vagrantfile", "info.json", "box.img"):
                tf.add(str(work / name), arcname=name)
        os.replace(part, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.unlink(missing_ok=True)
    _say(progress, f"image box {suite}: {out} (kernel {image.release}, {time.monotonic() - t0:.0f} s)")
    return Box(out, suite, image.release, image.inputs, gib)
