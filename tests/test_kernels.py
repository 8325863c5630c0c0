"""Kernels: apt sources parsing, listing/finding the installed 6.1, and real fetches.

The fetch tests download Debian's cloud kernels for bullseye (5.10), bookworm-backports (6.12)
and trixie (6.12, gcc-14) from the system's configured mirror, build a tiny hand-written
kprobe module against each fetched tree with Kbuild, and boot each image under qemu (TCG):
the module is loaded, `sync` runs three times, and the module's own count comes back.
Each suite is fetched once per session into $KPROBEGEN_CACHE (a fresh temporary cache when
that is not set, so the download path really runs).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kprobegen import kernels
from kprobegen.cache import cache_dir
from kprobegen.errors import KernelError
from kprobegen.kernels import SUITES, Kernel, debian, find_kernel, list_kernels, toolchain
from kprobegen.kernels.debian import debian_mirror, fetch_kernel, parse_deb822_sources, parse_one_line_sources
from kprobegen.kernels.toolchain import installed_headers_hint

IN_CI = bool(os.environ.get("CI"))

# -- apt sources ------------------------------------------------------------------------------

# The deb822 file of the machines here (/etc/apt/sources.list.d/debian.sources).
DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_parse_deb822():
    srcs = parse_deb822_sources(DEBIAN_SOURCES, "debian.sources")
    assert [(s.uris, s.suites, s.components, s.signed_by) for s in srcs] == [
        (("http://deb.debian.org/debian",), ("bookworm", "bookworm-updates"), ("main",),
         "/usr/share/keyrings/debian-archive-keyring.gpg"),
        (("http://deb.debian.org/debian-security",), ("bookworm-security",), ("main",),
         "/usr/share/keyrings/debian-archive-keyring.gpg"),
    ]
    # the security stanza comes first in this file: the main archive is still picked
    security_first = "\n\n".join(reversed(DEBIAN_SOURCES.split("\n\n")))
    assert debian_mirror(parse_deb822_sources(security_first), "bookworm") == (
        "http://deb.debian.org/debian", "/usr/share/keyrings/debian-archive-keyring.gpg")


def test_parse_deb822_disabled_and_inline_key():
    text = ("Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
            "Types: deb deb-src\nURIs: http://b.example/debian/\nSuites: bookworm\nComponents: main contrib\n"
            "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\n")
    srcs = parse_deb822_sources(text)
    assert len(srcs) == 1
    assert srcs[0].types == ("deb", "deb-src") and srcs[0].signed_by is None
    assert debian_mirror(srcs, "bookworm") == ("http://b.example/debian", None)


def test_parse_one_line():
    text = """# comment
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://m.example/debian bookworm main contrib
deb-src http://m.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb https://packages.example/apt cloud-sdk-bookworm main
"""
    srcs = parse_one_line_sources(text, "sources.list")
    assert [(s.types, s.uris[0], s.suites, s.components) for s in srcs] == [
        (("deb",), "http://m.example/debian", ("bookworm",), ("main", "contrib")),
        (("deb-src",), "http://m.example/debian", ("bookworm",), ("main",)),
        (("deb",), "http://security.example/debian-security", ("bookworm-security",), ("main",)),
        (("deb",), "https://packages.example/apt", ("cloud-sdk-bookworm",), ("main",)),
    ]
    assert srcs[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert debian_mirror(srcs, "bookworm")[0] == "http://m.example/debian"
    # no codename known (or another one): any plain Debian codename with main will do
    assert debian_mirror(srcs, None)[0] == "http://m.example/debian"


def test_no_debian_mirror():
    srcs = parse_one_line_sources("deb http://archive.example/ubuntu jammy main\n"
                                  "deb http://m.example/debian bookworm-security main\n")
    with pytest.raises(KernelError, match=r"no Debian archive found in the system's apt sources"):
        debian_mirror(srcs, "jammy")


def test_system_mirror_found():
    """This machine's (and CI's) apt configuration names Debian's main archive."""
    uri, _ = debian_mirror()
    assert uri.startswith(("http://", "https://")) and "security" not in uri


# -- small pieces -----------------------------------------------------------------------------

def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("KPROBEGEN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "kprobegen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "kprobegen"
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path / "kc"))
    assert cache_dir() == tmp_path / "kc"


def test_version_order():
    rels = ["6.12.95+deb12-cloud-amd64", "5.10.0-32-cloud-amd64", "6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64"]
    assert sorted(rels, key=kernels._version_key) == [
        "5.10.0-32-cloud-amd64", "6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.12.95+deb12-cloud-amd64"]


def test_headers_missing_problem():
    k = Kernel("6.1.0-99-cloud-amd64", Path("/boot/vmlinuz-6.1.0-99-cloud-amd64"), None, "installed", None)
    assert installed_headers_hint(k.release) == (
        "install linux-headers-6.1.0-99-cloud-amd64 (apt-get install linux-headers-6.1.0-99-cloud-amd64)")
    assert toolchain.build_problem(k) == ("no kernel headers for 6.1.0-99-cloud-amd64: install linux-headers-6.1.0-99-"
                                 "cloud-amd64 (apt-get install linux-headers-6.1.0-99-cloud-amd64)")
    assert toolchain.make_vars(k) == {}


def test_fetch_unknown_suite():
    with pytest.raises(KernelError, match=r"^unknown suite 'sid': choose one of bookworm, bookworm-backports, "
                                          r"bullseye, trixie$"):
        fetch_kernel("sid")


def test_fetch_unreachable_mirror(monkeypatch, tmp_path):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(KernelError) as e:
        fetch_kernel("bullseye", mirror="http://kprobegen-test.invalid/debian")
    msg = str(e.value)
    assert msg.startswith("fetching bullseye: `apt-get -o Dir::Etc::SourceList=")
    assert "--error-on=any update` failed (exit 100)" in msg
    assert "kprobegen-test.invalid" in msg
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "kernels" / "5.10.0-32-cloud-amd64").exists()


def test_fetch_apt_timeout(monkeypatch, tmp_path):
    """apt that does not finish in time is killed (with its download methods) and named."""
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(debian, "APT_UPDATE_TIMEOUT", 0.05)
    with pytest.raises(KernelError, match=r"^fetching bullseye: `apt-get .*--error-on=any update` did not "
                                          r"finish within 0\.05 s: is the mirror .* reachable\?$"):
        fetch_kernel("bullseye")
    assert not (tmp_path / "kernels" / "5.10.0-32-cloud-amd64").exists()


def test_makefile_include_follows_the_cache(tmp_path):
    """A fetched tree's one-line top Makefile names the cache; when the cache moves it is
    repaired on load."""
    root = tmp_path / "kernels" / "9.9.9-1-cloud-amd64"
    build = root / "usr/src/linux-headers-9.9.9-1-cloud-amd64"
    build.mkdir(parents=True)
    (root / "boot").mkdir()
    (root / "boot/vmlinuz-9.9.9-1-cloud-amd64").write_bytes(b"x")
    (build / "Makefile").write_text("include /old/place/usr/src/linux-headers-9.9.9-1-common/Makefile\n")
    (root / kernels.META_NAME).write_text('{"release": "9.9.9-1-cloud-amd64", "suite": "trixie"}')
    k = kernels.fetched_kernel(root)
    assert k.origin == "fetched:trixie" and k.suite == "trixie" and k.build_dir == build and k.config is None
    assert (build / "Makefile").read_text() == f"include {root}/usr/src/linux-headers-9.9.9-1-common/Makefile\n"


def test_relativise_links(tmp_path):
    (tmp_path / "usr/src/linux-headers-1").mkdir(parents=True)
    (tmp_path / "lib/modules/1").mkdir(parents=True)
    os.symlink("/usr/src/linux-headers-1", tmp_path / "lib/modules/1/build")
    os.symlink("../../x/scripts", tmp_path / "usr/src/linux-headers-1/scripts")
    assert debian._relativise_links(tmp_path) == 1
    assert os.readlink(tmp_path / "lib/modules/1/build") == "../../../usr/src/linux-headers-1"
    assert os.readlink(tmp_path / "usr/src/linux-headers-1/scripts") == "../../x/scripts"


# -- the installed 6.1 ------------------------------------------------------------------------

def _installed_cloud_releases() -> list[str]:
    """Releases of the installed Debian cloud kernels (image in /boot), oldest first: whatever
    ABI number the archive has moved on to."""
    rels = [p.name[len("vmlinuz-"):] for p in Path("/boot").glob("vmlinuz-*-cloud-amd64")]
    return sorted(rels, key=kernels._version_key)


@pytest.fixture
def installed_cloud() -> str:
    """The newest installed cloud kernel's release (linux-image-cloud-amd64)."""
    rels = _installed_cloud_releases()
    if not rels:
        if IN_CI:
            pytest.fail("CI must install linux-image-cloud-amd64 linux-headers-cloud-amd64 (./setup.sh)")
        pytest.skip("install linux-image-cloud-amd64 linux-headers-cloud-amd64 to run this")
    return rels[-1]


def _config_gcc_major(release: str) -> int:
    """The gcc major version the packaged config of ``release`` names (CONFIG_GCC_VERSION)."""
    text = Path(f"/lib/modules/{release}/build/include/config/auto.conf").read_text()
    return int(re.search(r"^CONFIG_GCC_VERSION=(\d+)$", text, re.M).group(1)) // 10000


def test_find_default_kernel(installed_cloud, monkeypatch, tmp_path):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))  # nothing fetched
    release = installed_cloud
    on_boot = {p.name[len("vmlinuz-"):] for p in Path("/boot").glob("vmlinuz-*")}
    assert {k.release for k in list_kernels()} == on_boot
    assert all(k.origin == "installed" for k in list_kernels())
    k = find_kernel(release)
    assert k == Kernel(
        release=release,
        image=Path(f"/boot/vmlinuz-{release}"),
        build_dir=Path(f"/lib/modules/{release}/build"),
        origin="installed",
        config=Path(f"/boot/config-{release}"),
    )
    assert toolchain.build_problem(k) is None and toolchain.make_vars(k) == {}
    text, major = toolchain.compiler(k)
    # "gcc-12 (Debian 12.2.0-14…) 12.2.0" on Debian 12, "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0" on 13
    assert major == _config_gcc_major(release) and re.search(rf"\bgcc-{major} \(", text), text
    assert find_kernel() == k  # the newest installed cloud kernel is the default


def test_find_kernel_errors(installed_cloud, monkeypatch, tmp_path):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    with pytest.raises(KernelError) as e:
        find_kernel("4.19.0-1-amd64")
    # Every kernel the machine has is listed (others may be installed, e.g. the generic one).
    known = ", ".join(f"{k.release} (installed)" for k in list_kernels() if k.origin == "installed")
    assert f"{installed_cloud} (installed)" in known
    assert str(e.value) == (f"kernel '4.19.0-1-amd64' not found; known kernels: {known}; suites for "
                            "`kprobegen kernels fetch`: bookworm, bookworm-backports, bullseye, trixie")
    with pytest.raises(KernelError, match=r"^no kernel fetched for suite bullseye: run `kprobegen kernels fetch "
                                          r"bullseye`$"):
        find_kernel("bullseye")
    if kernels.os_codename() == "bookworm":
        # the machine's own suite, not fetched: its installed cloud kernel
        assert find_kernel("bookworm") == find_kernel()


def test_no_kernel_at_all(monkeypatch, tmp_path):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_installed_kernels", lambda: [])  # a machine with no kernel installed
    with pytest.raises(KernelError, match=r"^no kernel found; install linux-image-cloud-amd64 "
                                          r"linux-headers-cloud-amd64 or run `kprobegen kernels fetch bookworm`$"):
        find_kernel()


# -- real fetches -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def fetch_cache(tmp_path_factory) -> Path:
    return Path(os.environ["KPROBEGEN_CACHE"]) if os.environ.get("KPROBEGEN_CACHE") \
        else tmp_path_factory.mktemp("kprobegen-cache")


_fetched: dict[str, tuple[Kernel, float, list[str]]] = {}


def fetched(suite: str, cache: Path) -> tuple[Kernel, float, list[str]]:
    """Fetch `suite` once per session into `cache`: (kernel, seconds, progress messages)."""
    if suite not in _fetched:
        said: list[str] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KPROBEGEN_CACHE", str(cache))
            t0 = time.monotonic()
            k = fetch_kernel(suite, progress=said.append)
            _fetched[suite] = (k, time.monotonic() - t0, said)
    return _fetched[suite]


TINY_MODULE = r"""// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/atomic.h>
static atomic_long_t hits = ATOMIC_LONG_INIT(0);
static int pre(struct kprobe *p, struct pt_regs *regs) { atomic_long_inc(&hits); return 0; }
static struct kprobe kp = { .symbol_name = "ksys_sync", .pre_handler = pre };
static int __init kpg_tiny_init(void) { return register_kprobe(&kp); }
static void __exit kpg_tiny_exit(void)
{
	unregister_kprobe(&kp);
	pr_info("kpg_tiny: hits=%ld\n", atomic_long_read(&hits));
}
module_init(kpg_tiny_init);
module_exit(kpg_tiny_exit);
MODULE_LICENSE("GPL");
"""


def build_tiny(k: Kernel, d: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    d.mkdir(parents=True, exist_ok=True)
    (d / "kpg_tiny.c").write_text(TINY_MODULE)
    (d / "Kbuild").write_text("obj-m := kpg_tiny.o\n")
    mv = {**toolchain.make_vars(k), **(extra or {})}
    argv = ["make", "-C", str(k.build_dir), f"M={d}", *(f"{a}={b}" for a, b in mv.items()), "modules"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def boot(k: Kernel, work: Path, ko: Path | None) -> str:
    """Boot k's image under qemu (TCG, no network) with a busybox initramfs that prints the
    running release and, given a module, loads it, runs sync 3 times and unloads it."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    ird = work / "ird"
    for sub in ("bin", "proc", "sys", "dev"):
        (ird / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, ird / "bin/busybox")
    init = ["#!/bin/busybox sh", "/bin/busybox --install -s /bin", "mount -t proc proc /proc",
            'echo "KPG-RELEASE $(uname -r)"']
    if ko is not None:
        shutil.copy(ko, ird / "kpg_tiny.ko")
        init += ['insmod /kpg_tiny.ko; echo "KPG-INSMOD $?"', "sync; sync; sync", "rmmod kpg_tiny",
                 'dmesg | grep -o "kpg_tiny: hits=[0-9]*" | sed "s/^/KPG-/"']
    init += ["poweroff -f"]
    (ird / "init").write_text("\n".join(init) + "\n")
    (ird / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=ird, capture_output=True, text=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=ird, input=files.encode(),
                          capture_output=True, check=True).stdout
    initrd = work / "initrd.cpio.gz"
    initrd.write_bytes(gzip.compress(cpio, 1))
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-reboot", "-nographic", "-serial", "stdio",
            "-m", "512", "-accel", "tcg",
            # Debian 12's qemu 7.2 TCG mis-emulates CMPXCHG16B: the 6.12 kernels' SLUB fast path
            # (cmpxchg16b %gs:...) then crashes at boot in ~40% of boots here (double faults,
            # NULL dereferences; 6.1 and 5.10: 0/25). Without cx16 SLUB takes its other path:
            # 0/25 crashes for 6.12, and 6.1/5.10/trixie boot as before. See docs/kernels.md.
            "-cpu", "qemu64,-cx16",
            "-kernel", str(k.image), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet"]
    res = subprocess.run(argv, capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    return res.stdout.decode("latin-1").replace("\r", "")


def check_fetched_tree(k: Kernel, suite: str, cache: Path) -> None:
    root = cache / "kernels" / k.release
    assert k.origin == f"fetched:{suite}"
    assert k.image == root / "boot" / f"vmlinuz-{k.release}"
    assert k.build_dir == root / "usr" / "src" / f"linux-headers-{k.release}"
    assert k.config == root / "boot" / f"config-{k.release}"
    assert k.image.read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage
    # no absolute link is left, and the kept-relative ones resolve inside the cache
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                assert not os.readlink(p).startswith("/"), p
    assert (root / "lib/modules" / k.release / "build").resolve() == k.build_dir
    assert (k.build_dir / "scripts").resolve().is_dir()
    assert str((k.build_dir / "scripts").resolve()).startswith(str(root))
    assert (k.build_dir / "Makefile").read_text().startswith(f"include {root}/usr/src/linux-headers-")


@pytest.mark.parametrize("suite, release_re, make_vars", [
    ("bullseye", r"5\.10\.\d+-\d+-cloud-amd64", {"CC": "gcc-12"}),
    ("bookworm-backports", r"6\.\d+\.\d+\+deb12-cloud-amd64", {}),
])
def test_fetch_build_boot(suite, release_re, make_vars, fetch_cache, tmp_path):
    k, secs, said = fetched(suite, fetch_cache)
    print(f"\n{suite}: fetched {k.release} in {secs:.1f} s")
    assert re.fullmatch(release_re, k.release)
    check_fetched_tree(k, suite, fetch_cache)
    assert said[-1].startswith(f"{suite}: {k.release} ready in ") or said == [
        f"{suite}: {k.release} already in {fetch_cache / 'kernels' / k.release}"]
    assert toolchain.build_problem(k) is None
    # The tree's own gcc when this machine has it, else the next newer one (gcc-12 for
    # bullseye's gcc-10 tree on Debian 12; gcc-14 for every older tree on Debian 13).
    wanted = toolchain.compiler(k)[1]
    have = toolchain.installed_gcc_versions()
    expected = {} if wanted in have else {"CC": f"gcc-{min(v for v in have if v > wanted)}"}
    assert toolchain.make_vars(k) == expected
    if suite == "bullseye" and have == {12}:
        assert expected == make_vars   # what was tried here: Debian 12's gcc-12 builds 5.10

    t0 = time.monotonic()
    res = build_tiny(k, tmp_path / "mod")
    print(f"{suite}: built the tiny module in {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    ko = tmp_path / "mod" / "kpg_tiny.ko"
    vermagic = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], capture_output=True, text=True,
                              check=True).stdout
    assert vermagic.split()[0] == k.release

    t0 = time.monotonic()
    console = boot(k, tmp_path / "vm", ko)
    print(f"{suite}: booted, loaded, counted in {time.monotonic() - t0:.1f} s")
    assert f"KPG-RELEASE {k.release}" in console, console[-3000:]
    assert "KPG-INSMOD 0" in console, console[-3000:]
    assert "KPG-kpg_tiny: hits=3" in console, console[-3000:]

    # the same kernel is found by release and by suite name, and listed
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KPROBEGEN_CACHE", str(fetch_cache))
        assert find_kernel(k.release) == k
        assert find_kernel(suite) == k
        assert k in list_kernels()
        # a second fetch is instant and does not touch the network
        t0 = time.monotonic()
        again: list[str] = []
        assert fetch_kernel(suite, progress=again.append) == k
        assert time.monotonic() - t0 < 1.0
        assert again == [f"{suite}: {k.release} already in {fetch_cache / 'kernels' / k.release}"]


def test_fetch_trixie_needs_gcc14(fetch_cache, tmp_path):
    k, secs, _ = fetched("trixie", fetch_cache)
    print(f"\ntrixie: fetched {k.release} in {secs:.1f} s")
    assert re.fullmatch(r"6\.12\.\d+\+deb13-cloud-amd64", k.release)
    check_fetched_tree(k, "trixie", fetch_cache)
    problem = toolchain.build_problem(k)
    assert toolchain.compiler(k)[1] == 14
    assert toolchain.make_vars(k) == {}
    if 14 in toolchain.installed_gcc_versions():  # a trixie machine
        assert problem is None
    else:
        assert problem is not None and "gcc-14" in problem, problem
        assert problem.startswith(f"kernel {k.release} was built with gcc-14 (")
        assert problem.endswith("build on a machine (or in a chroot) with gcc-14, e.g. Debian trixie")
        if max(toolchain.installed_gcc_versions()) < 14:
            assert "rejects the tree's -fmin-function-alignment=16 (a gcc-14 flag)" in problem
        # the problem is real: this machine's gcc-12 rejects the tree's flags
        res = build_tiny(k, tmp_path / "mod", {"CC": "gcc-12"})
        assert res.returncode != 0
        assert "-fmin-function-alignment=16" in res.stderr
    # the image itself boots
    console = boot(k, tmp_path / "vm", None)
    assert f"KPG-RELEASE {k.release}" in console, console[-3000:]


def test_suite_pockets_come_from_the_systems_sources():
    srcs = parse_deb822_sources(DEBIAN_SOURCES)
    main = "http://deb.debian.org/debian"
    assert debian.suite_pockets("bullseye", main, srcs) == [
        (main, "bullseye-updates"), ("http://deb.debian.org/debian-security", "bullseye-security")]
    assert debian.suite_pockets("bookworm-backports", main, srcs) == []  # backports have no pockets
    no_security = [s for s in srcs if not any(x.endswith("-security") for x in s.suites)]
    assert debian.suite_pockets("trixie", main, no_security) == [(main, "trixie-updates")]


def test_fetch_bookworm_is_the_newest_of_its_pockets(installed_cloud, fetch_cache, tmp_path):
    """bookworm's kernel is replaced through bookworm-security: the fetch takes the newest of
    the suite and its pockets, the same kernel apt installs here on a Debian 12 machine (the
    main archive alone holds an older one)."""
    k, _, said = fetched("bookworm", fetch_cache)
    check_fetched_tree(k, "bookworm", fetch_cache)
    assert said[0].startswith("bookworm: reading the package index of bookworm, bookworm-updates") or \
        said == [f"bookworm: {k.release} already in {fetch_cache / 'kernels' / k.release}"]
    if kernels.os_codename() == "bookworm":
        assert k.release == installed_cloud


def test_suites_constant():
    assert SUITES == ("bookworm", "bookworm-backports", "bullseye", "trixie")
