"""Fetching Debian's cloud kernels with apt's own tools: a private sources list, lists and
cache (nothing is installed system-wide), the system's mirror, the suite plus its -updates and
-security pockets; extracted with ``dpkg-deb -x`` into ``cache_dir()/kernels/<release>/``."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kprobegen.cache import cache_dir, lock
from kprobegen.errors import KernelError
from kprobegen.kernels import (SUITES, META_NAME, DEBIAN_CODENAMES, Kernel, fetched_for_suite, fetched_kernel, fix_top_makefile,
                               kernels_dir, merged_usr_lib, os_codename)
from kprobegen.progress import Notice

Progress = Callable[[str], None] | None

# The packaged keyring that holds the bullseye, bookworm and trixie archive keys.
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

APT_UPDATE_TIMEOUT = 300  # seconds; the Packages index of one suite is ~10 MB
APT_DOWNLOAD_TIMEOUT = 900  # seconds; image + headers are ~35 MB (bullseye) to ~80 MB (6.12)
APT_QUERY_TIMEOUT = 120


# --------------------------------------------------------------------------------------------
# The system's apt configuration


@dataclass(frozen=True)
class AptSource:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None
    origin: str  # file it came from


def parse_one_line_sources(text: str, origin: str = "") -> list[AptSource]:
    """`deb [opt=val ...] URI SUITE COMPONENT...` lines (sources.list format)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opts: dict[str, str] = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if m:
            typ, optstr, rest = m.groups()
            for opt in optstr.split():
                k, _, v = opt.partition("=")
                opts[k.lower()] = v
        else:
            typ, _, rest = line.partition(" ")
        parts = rest.split()
        if typ not in ("deb", "deb-src") or len(parts) < 2:
            continue
        out.append(AptSource(
            types=(typ,), uris=(parts[0],), suites=(parts[1],), components=tuple(parts[2:]),
            signed_by=opts.get("signed-by"), origin=origin,
        ))
    return out


def parse_deb822_sources(text: str, origin: str = "") -> list[AptSource]:
    """deb822 `.sources` stanzas (Types/URIs/Suites/Components/Signed-By/Enabled)."""
    out = []
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last: str | None = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                stanzas.append(cur)
            cur, last = {}, None
            continue
        if raw[0] in " \t" and last is not None:  # continuation (e.g. an inline Signed-By key)
            cur[last] += "\n" + raw.strip()
            continue
        key, sep, val = raw.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        cur[last] = val.strip()
    for st in stanzas:
        if st.get("enabled", "yes").lower() == "no":
            continue
        signed = st.get("signed-by")
        if signed and "\n" in signed:  # an inline key block: not a path we can pass on
            signed = None
        out.append(AptSource(
            types=tuple(st.get("types", "").split()),
            uris=tuple(st.get("uris", "").split()),
            suites=tuple(st.get("suites", "").split()),
            components=tuple(st.get("components", "").split()),
            signed_by=signed or None,
            origin=origin,
        ))
    return out


def system_apt_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every source configured in the system's apt: sources.list and sources.list.d/*.list|*.sources."""
    out: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        out += parse_one_line_sources(main.read_text(errors="replace"), str(main))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".list" and f.is_file():
                out += parse_one_line_sources(f.read_text(errors="replace"), str(f))
            elif f.suffix == ".sources" and f.is_file():
                out += parse_deb822_sources(f.read_text(errors="replace"), str(f))
    return out



def debian_mirror(sources: list[AptSource] | None = None, codename: str | None = None) -> tuple[str, str | None]:
    """(URI, Signed-By) of the source serving Debian's main archive for the system's suite.

    Picks a `deb` entry with component `main` whose suite is the system's codename (e.g.
    bookworm, not bookworm-security/-updates); failing that, any entry for a plain Debian
    codename. KernelError when the system has none."""
    if sources is None:
        sources = system_apt_sources()
    if codename is None:
        codename = os_codename()
    debs = [s for s in sources if "deb" in s.types and "main" in s.components and s.uris]
    for wanted in ([codename] if codename in DEBIAN_CODENAMES else []) + [None]:
        for s in debs:
            for suite in s.suites:
                if (suite == wanted) if wanted else (suite in DEBIAN_CODENAMES):
                    return s.uris[0].rstrip("/"), s.signed_by
    raise KernelError(
        "no Debian archive found in the system's apt sources (/etc/apt/sources.list, "
        "/etc/apt/sources.list.d/): add Debian's main archive for "
        f"{codename or 'your release'} (component main) so that `kprobegen kernels fetch` can use its mirror"
    )


def suite_pockets(suite: str, mirror: str, sources: list[AptSource] | None = None) -> list[tuple[str, str]]:
    """(URI, suite) of the pockets that carry a release's newer kernels: ``<suite>-updates`` on
    ``mirror`` and ``<suite>-security`` on the system's security mirror (the URI of its first
    ``*-security`` source; none configured, no security pocket). Only plain release codenames
    have pockets: bookworm-backports has none."""
    if suite not in DEBIAN_CODENAMES:
        return []
    if sources is None:
        sources = system_apt_sources()
    pockets = [(mirror, f"{suite}-updates")]
    security = next((s.uris[0].rstrip("/") for s in sources
                     if "deb" in s.types and s.uris and any(x.endswith("-security") for x in s.suites)), None)
    if security:
        pockets.append((security, f"{suite}-security"))
    return pockets



# --------------------------------------------------------------------------------------------
# Fetching


def _say(progress: Progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


class _Apt:
    """apt-get/apt-cache with a private sources list, lists, cache and (empty) dpkg status, so
    that neither the system's sources nor its installed packages take part."""

    def __init__(self, suite: str, mirror: str, keyring: str | None, pockets: Iterable[tuple[str, str]] = ()):
        self.suite = suite
        self.base = cache_dir() / "apt" / suite
        self.lists = self.base / "lists"
        self.cache = self.base / "cache"
        self.etc = self.base / "etc"
        for d in (self.lists / "partial", self.cache / "archives" / "partial", self.etc / "preferences.d"):
            d.mkdir(parents=True, exist_ok=True)
        self.status = self.base / "status"
        self.status.touch()
        self.sources = self.etc / "sources.list"
        opts = "arch=amd64" + (f" signed-by={keyring}" if keyring else "")
        self.sources.write_text("".join(f"deb [{opts}] {uri} {name} main\n"
                                        for uri, name in [(mirror, suite), *pockets]))
        self.mirror = mirror

    def options(self) -> list[str]:
        o = {
            "Dir::Etc::SourceList": str(self.sources),
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": str(self.etc / "preferences.d"),
            "Dir::State::Lists": str(self.lists),
            "Dir::State::status": str(self.status),
            "Dir::Cache": str(self.cache),
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "APT::Default-Release": "",
            "Acquire::Languages": "none",
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled": "false",
            "Acquire::Retries": "2",
            "Acquire::http::Timeout": "30",
            "Acquire::https::Timeout": "30",
        }
        out = []
        for k, v in o.items():
            out += ["-o", f"{k}={v}"]
        return out

    def run(self, tool: str, args: list[str], timeout: int, cwd: Path | None = None) -> str:
        argv = [tool, *self.options(), *args]
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        try:
            # own process group: on timeout apt's download methods are killed with it
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError:
            raise KernelError(f"fetching {self.suite}: {tool} is not installed (this needs Debian's apt)") from None
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise KernelError(
                f"fetching {self.suite}: `{shlex.join(argv)}` did not finish within {timeout} s: "
                f"is the mirror {self.mirror} reachable?"
            ) from None
        res = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
        if res.returncode != 0:
            errs = [ln.strip() for ln in (res.stderr + res.stdout).splitlines()
                    if ln.startswith(("E:", "Err:", "W:")) or "Could not" in ln or "Failed" in ln]
            why = "; ".join(errs[:3]) or (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise KernelError(
                f"fetching {self.suite}: `{shlex.join(argv)}` failed (exit {res.returncode}): {why}"
            )
        return res.stdout

    def show(self, package: str) -> dict[str, str]:
        """The candidate's control fields (apt-cache show, newest version first)."""
        out = self.run("apt-cache", ["show", "--no-all-versions", package], APT_QUERY_TIMEOUT)
        fields: dict[str, str] = {}
        for line in out.splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            if line[0] in " \t":
                continue
            k, sep, v = line.partition(":")
            if sep:
                fields[k.strip()] = v.strip()
        if "Package" not in fields:
            raise KernelError(f"fetching {self.suite}: package {package} not found on {self.mirror}")
        return fields


def _deps(fields: dict[str, str]) -> list[tuple[str, str | None]]:
    """Depends as [(name, exact version or None)], alternatives reduced to their first name."""
    out = []
    for dep in fields.get("Depends", "").split(","):
        dep = dep.split("|")[0].strip()
        m = re.match(r"^([a-z0-9][a-z0-9+.\-]*)(?::\S+)?\s*(?:\(\s*(=|>=|<=|>>|<<)\s*([^)\s]+)\s*\))?", dep)
        if m:
            out.append((m.group(1), m.group(3) if m.group(2) == "=" else None))
    return out


def resolve_packages(apt: _Apt) -> tuple[str, dict[str, str]]:
    """(release, {package: version}) for the suite's cloud kernel: image, arch headers, the
    common headers and linux-kbuild."""
    meta = apt.show("linux-image-cloud-amd64")
    images = [(n, v) for n, v in _deps(meta) if n.startswith("linux-image-") and n.endswith("-cloud-amd64")]
    if not images:
        raise KernelError(f"fetching {apt.suite}: linux-image-cloud-amd64 depends on no linux-image-*-cloud-amd64 "
                          f"({meta.get('Depends', '')})")
    image_pkg = images[0][0]
    release = image_pkg[len("linux-image-"):]
    if release.endswith("-unsigned"):
        release = release[: -len("-unsigned")]
    image = apt.show(image_pkg)
    headers = apt.show(f"linux-headers-{release}")
    pkgs = {image_pkg: image["Version"], headers["Package"]: headers["Version"]}
    for name, _ in _deps(headers):
        if name.startswith("linux-headers-") or name.startswith("linux-kbuild-"):
            pkgs[name] = apt.show(name)["Version"]
    if not any(n.startswith("linux-kbuild-") for n in pkgs):
        raise KernelError(f"fetching {apt.suite}: linux-headers-{release} names no linux-kbuild-* package")
    return release, pkgs


def _relativise_links(root: Path) -> int:
    """Rewrite every absolute symlink under root (lib/modules/*/build, source, ...) into a
    relative one that points at the same path inside root. Returns how many were fixed."""
    fixed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                continue
            target = os.readlink(p)
            if not target.startswith("/"):
                continue
            inside = os.path.join(str(root), target.lstrip("/"))
            os.unlink(p)
            os.symlink(os.path.relpath(inside, dirpath), p)
            fixed += 1
    return fixed


def fetch_kernel(suite: str, progress: Progress = None, refresh: bool = False,
                 mirror: str | None = None) -> Kernel:
    """Download and extract Debian's cloud kernel (image + headers + headers-common + kbuild)
    for `suite` into cache_dir()/kernels/<release>/. A suite already fetched is returned at
    once without touching the network unless refresh=True (which asks the mirror for a newer
    kernel and fetches it if there is one). The mirror is the system's Debian archive (see
    debian_mirror); `mirror` or $KPROBEGEN_DEBIAN_MIRROR overrides it."""
    if suite not in SUITES:
        raise KernelError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    with lock(kernels_dir() / f".lock-{suite}"):
        if not refresh:
            k = fetched_for_suite(suite)
            if k is not None:
                _say(progress, f"{suite}: {k.release} already in {k.image.parent.parent}")
                return k
        mirror = mirror or os.environ.get("KPROBEGEN_DEBIAN_MIRROR") or None
        signed_by = None
        if mirror is None:
            mirror, signed_by = debian_mirror()
        keyring = str(DEBIAN_KEYRING) if DEBIAN_KEYRING.is_file() else signed_by
        pockets = suite_pockets(suite, mirror)
        apt = _Apt(suite, mirror, keyring, pockets)
        t0 = time.monotonic()
        names = ", ".join([suite, *(name for _, name in pockets)])
        _say(progress, f"{suite}: reading the package index of {names} from {mirror} (apt-get update)")
        try:
            apt.run("apt-get", ["--error-on=any", "update"], APT_UPDATE_TIMEOUT)
        except KernelError as exc:
            if not pockets:
                raise
            # A pocket that is gone (an old release's -updates) must not stop the fetch.
            _say(progress, Notice(f"{suite}: the -updates/-security pockets could not be read ({exc}); "
                                  f"using {suite} alone, which may hold an older kernel"))
            apt = _Apt(suite, mirror, keyring)
            apt.run("apt-get", ["--error-on=any", "update"], APT_UPDATE_TIMEOUT)
        release, pkgs = resolve_packages(apt)
        root = kernels_dir() / release
        if (root / META_NAME).is_file():
            k = fetched_kernel(root)
            if k is not None:
                _say(progress, f"{suite}: {release} already in {root}")
                return k
        _say(progress, f"{suite}: downloading {', '.join(f'{n}={v}' for n, v in pkgs.items())}")
        debs = apt.base / "debs"
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir(parents=True)
        apt.run("apt-get", ["download", *(f"{n}={v}" for n, v in pkgs.items())], APT_DOWNLOAD_TIMEOUT, cwd=debs)
        files = sorted(debs.glob("*.deb"))
        if len(files) != len(pkgs):
            raise KernelError(f"fetching {suite}: apt-get download left {len(files)} .deb files in {debs}, "
                              f"expected {len(pkgs)}")
        tmp = kernels_dir() / f".tmp-{release}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for deb in files:
                _say(progress, f"{suite}: extracting {deb.name}")
                try:
                    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, capture_output=True,
                                   text=True, timeout=600)
                except subprocess.CalledProcessError as e:
                    raise KernelError(f"fetching {suite}: `dpkg-deb -x {deb} {tmp}` failed: "
                                      f"{e.stderr.strip()}") from None
            image = tmp / "boot" / f"vmlinuz-{release}"
            build = tmp / "usr" / "src" / f"linux-headers-{release}"
            if not image.is_file() or not (build / "Makefile").is_file():
                raise KernelError(f"fetching {suite}: the packages of {release} hold no boot/vmlinuz-{release} "
                                  f"or usr/src/linux-headers-{release}/Makefile")
            _say(progress, f"{suite}: fixing the headers' absolute links")
            _relativise_links(tmp)
            merged_usr_lib(tmp)
            fix_top_makefile(root, build)  # names the final root, which tmp becomes below
            (tmp / META_NAME).write_text(json.dumps({
                "release": release,
                "suite": suite,
                "packages": pkgs,
                "mirror": mirror,
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=2) + "\n")
            if root.exists():
                shutil.rmtree(root)
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(debs, ignore_errors=True)
        k = fetched_kernel(root)
        assert k is not None
        _say(progress, f"{suite}: {release} ready in {root} ({time.monotonic() - t0:.1f} s)")
        return k

