#!/usr/bin/env python3
"""Build the kprobegen service image (issue #15), with no registry and no network in the build.

    .venv/bin/python container/build.py [--tag kprobegen:latest] [--rebuild] [--rebuild-base] [--json]
    .venv/bin/python container/build.py --base debian:bookworm-slim     # where a registry is reachable

Two images, each kept while its inputs are unchanged (docker's own image store is the cache,
so it lasts as long as the daemon's data root: across CI runs on one machine):

1. the base, ``kprobegen-base:<suite>-<hash>``: ``debootstrap --variant=minbase`` of the suite
   from the system's Debian mirror with every package of container/packages.txt installed in
   the root (kprobegen.vm.guest's steps, reused), then ``tar | docker import``. Its hash covers
   the suite, the package list and BASE_FORMAT: the archive's newer packages come in with
   ``--rebuild-base``. Minutes; needs root, debootstrap and the mirror.
2. the service image, ``kprobegen:<hash>`` and ``--tag``: container/Dockerfile on a context
   assembled here (kprobegen's source files, the wheels of its requirements downloaded with
   pip for the base's Python, the package list, the example specs), built with
   ``docker build --network=none``. Its hash covers the base image's id, the Dockerfile, the
   package list, the source, the examples and the requirements; an image of that hash is
   tagged again without a build (no wheel download either).

With ``--base IMAGE`` (e.g. ``debian:bookworm-slim`` from a registry) no base is made: the
Dockerfile installs the packages from the archive, so that build needs the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kprobegen.cache import cache_dir, lock  # noqa: E402
from kprobegen.errors import KprobegenError  # noqa: E402
from kprobegen.kernels.debian import debian_mirror, suite_pockets  # noqa: E402
from kprobegen.vm import guest  # noqa: E402

#: Changes whenever the way the base is made changes (not its package list: that is hashed).
BASE_FORMAT = 1
BASE_REPO = "kprobegen-base"
IMAGE_REPO = "kprobegen"
DEFAULT_TAG = "kprobegen:latest"
SUITES = ("bookworm", "trixie")
#: The suite's python3, for which the wheels are downloaded ("311" = CPython 3.11).
SUITE_PYTHON = {"bookworm": "311", "trixie": "313"}
#: Seconds a docker step may take (the base import, the image build).
DOCKER_TIMEOUT = 3600
LABEL = "org.kprobegen.inputs"


class BuildError(Exception):
    pass


def say(message: str) -> None:
    print(f"container/build.py: {message}", file=sys.stderr, flush=True)


def packages(path: Path = HERE / "packages.txt") -> list[str]:
    """container/packages.txt without its comments, in order."""
    out = []
    for line in path.read_text().splitlines():
        out += line.split("#", 1)[0].split()
    return out


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def docker(*args: str, timeout: float = 300, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    except FileNotFoundError:
        raise BuildError("docker is not installed (apt-get install docker.io; container/dockerd.sh starts the "
                         "daemon)") from None
    if check and proc.returncode != 0:
        raise BuildError(f"docker {' '.join(args[:2])} failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def image_id(ref: str) -> str | None:
    proc = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def prune(repo: str, pattern: str, keep: str) -> list[str]:
    """Remove the tags of ``repo`` whose tag matches ``pattern`` (earlier builds), but ``keep``:
    an image that another tag (``kprobegen:latest``) or a container still uses stays."""
    import re

    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", repo).stdout.split()
    old = [t for t in tags if re.fullmatch(pattern, t.partition(":")[2]) and t != keep]
    return [t for t in old if docker("rmi", t, check=False).returncode == 0]


# -- the base image: debootstrap -> docker import ------------------------------------------

def base_inputs(suite: str) -> str:
    return _hash(json.dumps([BASE_FORMAT, suite, packages()]))


def make_base(suite: str, *, rebuild: bool = False) -> str:
    """The tag of the local base image of ``suite``, made now unless one of its inputs exists."""
    tag = f"{BASE_REPO}:{suite}-{base_inputs(suite)}"
    if not rebuild and image_id(tag):
        say(f"base {tag}: up to date")
        docker("tag", tag, f"{BASE_REPO}:{suite}")
        return tag
    if os.geteuid() != 0:
        raise BuildError("making the base image needs root (debootstrap, chroot and mounts): run it as root")
    work = cache_dir() / "container"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with lock(work / f".lock-base-{suite}"):
        tmp = Path(tempfile.mkdtemp(prefix=f"base-{suite}-", dir=work))
        root, log = tmp / "root", work / f"base-{suite}.log"
        log.unlink(missing_ok=True)
        try:
            pkgs = packages()
            mirror, _ = debian_mirror()
            say(f"base {tag}: debootstrap {suite} from {mirror} (log: {log})")
            guest._run(["debootstrap", "--variant=minbase", "--include=ca-certificates", suite, str(root), mirror],
                       "debootstrap", log)
            lines = [f"deb {uri} {name} main\n" for uri, name in [(mirror, suite), *suite_pockets(suite, mirror)]]
            (root / "etc" / "apt" / "sources.list").write_text("".join(lines))
            say(f"base {tag}: installing {len(pkgs)} packages and what they need "
                f"({time.monotonic() - t0:.0f} s)")
            guest._run(guest._in_root(root, "apt-get", "update", "-q"), "apt-get update", log)
            guest._run(guest._in_root(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs),
                       "apt-get install", log)
            # Not needed in a container: apt's lists and caches (the image build has no network),
            # the initrd (the VM boots kprobegen's own initramfs), temporary files.
            for junk in ("var/lib/apt/lists", "var/cache/apt", "tmp", "var/tmp"):
                for child in (root / junk).iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            for initrd in (root / "boot").glob("initrd.img-*"):
                initrd.unlink()
            say(f"base {tag}: docker import ({time.monotonic() - t0:.0f} s)")
            _import(root, tag, suite, log)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    docker("tag", tag, f"{BASE_REPO}:{suite}")
    say(f"base {tag}: made in {time.monotonic() - t0:.0f} s")
    for gone in prune(BASE_REPO, rf"{suite}-[0-9a-f]{{16}}", tag):
        say(f"removed the earlier base {gone}")
    return tag


def _import(root: Path, tag: str, suite: str, log: Path) -> None:
    """``tar -C root -c . | docker import`` with the few settings an imported image lacks."""
    changes = ['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', "ENV LANG=C.UTF-8",
               'CMD ["/bin/bash"]', f"LABEL {LABEL}.base={tag.rsplit('-', 1)[1]} org.kprobegen.suite={suite}"]
    argv = ["docker", "import", *[a for c in changes for a in ("--change", c)],
            "--message", f"debootstrap --variant=minbase {suite} + container/packages.txt", "-", tag]
    with open(log, "ab") as out:
        tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(root),
                                "-cf", "-", "."], stdout=subprocess.PIPE, stderr=out)
        try:
            imp = subprocess.run(argv, stdin=tar.stdout, stdout=out, stderr=subprocess.PIPE, timeout=DOCKER_TIMEOUT)
        finally:
            tar.stdout.close()
            tar_rc = tar.wait()
    if tar_rc != 0 or imp.returncode != 0:
        raise BuildError(f"docker import of {root} failed (tar exit {tar_rc}, docker exit {imp.returncode}): "
                         f"{imp.stderr.decode(errors='replace').strip()[-2000:]} (log: {log})")


# -- the service image ---------------------------------------------------------------------

def _context_files() -> dict[str, Path | bytes]:
    """Build-context name -> file (or its bytes), everything but the wheels. The README is the
    guest image's stand-in, so that editing the project's README does not rebuild the image."""
    tree = guest.source_tree()
    files: dict[str, Path | bytes] = {"Dockerfile": HERE / "Dockerfile", "packages.txt": HERE / "packages.txt",
                                      "src/README.md": guest.README_STAND_IN}
    files.update({f"src/{rel}": tree / rel for rel in guest._source_files(tree)})
    files.update({f"modules/{p.name}": p for p in sorted((tree / "modules").glob("*.yaml"))})
    return files


def image_inputs(base_id: str, python: str) -> str:
    parts: list[bytes | str] = [base_id, python, json.dumps(sorted(guest._requirements(guest.source_tree())))]
    for name, content in sorted(_context_files().items()):
        parts += [name, content if isinstance(content, bytes) else content.read_bytes()]
    return _hash(*parts)


def build_image(*, tag: str = DEFAULT_TAG, base: str | None = None, suite: str = "bookworm",
                rebuild: bool = False, rebuild_base: bool = False) -> dict:
    t0 = time.monotonic()
    if suite not in SUITES:
        raise BuildError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    local_base = base is None
    if local_base:
        base = make_base(suite, rebuild=rebuild_base)
    base_id = image_id(base) or base          # a registry base not pulled yet: keyed by its name
    python = SUITE_PYTHON[suite]
    inputs = image_inputs(base_id, python)
    hashed = f"{IMAGE_REPO}:{inputs}"
    if not rebuild and image_id(hashed):
        docker("tag", hashed, tag)
        say(f"image {tag} = {hashed}: up to date")
        return {"image": tag, "hashed": hashed, "base": base, "built": False, "seconds": round(time.monotonic() - t0, 1)}
    work = cache_dir() / "container"
    work.mkdir(parents=True, exist_ok=True)
    with lock(work / ".lock-image"):            # one build at a time; the one that waited may find it done
        if not rebuild and image_id(hashed):
            docker("tag", hashed, tag)
            say(f"image {tag} = {hashed}: built meanwhile by another build")
            return {"image": tag, "hashed": hashed, "base": base, "built": False,
                    "seconds": round(time.monotonic() - t0, 1)}
        return _build(tag, base, local_base, python, inputs, hashed, work, t0)


def _build(tag: str, base: str, local_base: bool, python: str, inputs: str, hashed: str, work: Path,
           t0: float) -> dict:
    ctx = Path(tempfile.mkdtemp(prefix="context-", dir=work))
    try:
        for name, content in _context_files().items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (ctx / name).write_bytes(content)
            else:
                shutil.copy2(content, ctx / name)
        requirements = guest._requirements(guest.source_tree())
        (ctx / "wheels").mkdir()
        (ctx / "wheels" / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
        say(f"image {tag}: downloading wheels for CPython {python[0]}.{python[1:]} ({len(requirements)} requirements)")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(ctx / "wheels"),
                               "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                               "--platform", "manylinux_2_28_x86_64", *requirements],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise BuildError(f"pip download failed: {proc.stderr.strip()[-2000:]}")
        say(f"image {tag}: docker build on {base} ({'--network=none' if local_base else 'with the network'})")
        argv = ["build", "--build-arg", f"BASE={base}", "--label", f"{LABEL}={inputs}", "-t", hashed, "-t", tag]
        if local_base:
            argv.append("--network=none")
        log = work / "image.log"
        with open(log, "w") as out:
            proc = subprocess.run(["docker", *argv, str(ctx)], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=DOCKER_TIMEOUT)
        if proc.returncode != 0:
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-15:]
            raise BuildError(f"docker build failed (exit {proc.returncode}; log: {log}):\n" + "\n".join(tail))
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    seconds = round(time.monotonic() - t0, 1)
    say(f"image {tag} = {hashed}: built in {seconds:.0f} s")
    for gone in prune(IMAGE_REPO, "[0-9a-f]{16}", hashed):
        say(f"removed the earlier image {gone}")
    return {"image": tag, "hashed": hashed, "base": base, "built": True, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="container/build.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"the image's name (default {DEFAULT_TAG})")
    p.add_argument("--base", help="a base image from a registry (e.g. debian:bookworm-slim) instead of the local "
                                  "debootstrap base; the build then installs the packages with the network")
    p.add_argument("--suite", default="bookworm", choices=SUITES, help="Debian suite of the local base (bookworm)")
    p.add_argument("--base-only", action="store_true", help="make (or find) the local base image only")
    p.add_argument("--rebuild", action="store_true", help="build the service image even if one of its inputs exists")
    p.add_argument("--rebuild-base", action="store_true", help="make the base again (the archive's newest packages)")
    p.add_argument("--json", action="store_true", help="print what was built as JSON on stdout")
    args = p.parse_args(argv)
    try:
        if args.base_only:
            result = {"base": make_base(args.suite, rebuild=args.rebuild_base)}
        else:
            result = build_image(tag=args.tag, base=args.base, suite=args.suite, rebuild=args.rebuild,
                                 rebuild_base=args.rebuild_base)
    except (BuildError, KprobegenError) as exc:
        print(f"container/build.py: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else result.get("image", result["base"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
