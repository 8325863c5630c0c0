"""Kernel profiles: parsing, check(), expand(), suggestions, System.map, the profile cache.

The unit tests run on real excerpts of /proc/kallsyms and the kprobe blacklist captured from
Debian's 6.1 and 6.12 cloud kernels (tests/fixtures/profile/, headers say how). The last test
captures a full profile by booting the installed 6.1 kernel with kprobegen.vm.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pytest

from kprobegen.errors import KernelError, SymbolError
from kprobegen.pipeline import profile_capture
from kprobegen.kernels.symbols import (
    Profile,
    load_profile,
    parse_blacklist,
    parse_kallsyms,
    profile_dir,
    profile_from_raw,
    save_raw_profile,
)

FIX = Path(__file__).parent / "fixtures" / "profile"
# The kernels the fixture profiles were captured from: data named by release, not the kernels
# installed here (Debian replaces those every few weeks).
R61 = "6.1.0-56-cloud-amd64"
R612 = "6.12.95+deb12-cloud-amd64"


def raw(release: str) -> dict[str, bytes]:
    return {k: (FIX / f"{release}.{k}").read_bytes()
            for k in ("kallsyms", "blacklist", "config") if (FIX / f"{release}.{k}").is_file()}


@pytest.fixture(scope="module")
def p61() -> Profile:
    return profile_from_raw(R61, raw(R61))


@pytest.fixture(scope="module")
def p612() -> Profile:
    return profile_from_raw(R612, raw(R612))


# -- parsing -----------------------------------------------------------------------------------

def test_parse_counts(p61):
    # 142 symbol lines in the excerpt (its 6 '#' header lines are skipped)
    assert len(parse_kallsyms((FIX / f"{R61}.kallsyms").read_text())) == 142
    assert len(p61.entries) == 142
    # text symbols minus .cold parts, init code and markers outside [_stext, _etext)
    assert len(p61.functions) == 123
    # 396 blacklist lines name 346 distinct symbols
    assert len(parse_blacklist((FIX / f"{R61}.blacklist").read_text())) == 346
    assert len(p61.blacklist) == 346
    assert p61.config == {
        "CONFIG_CC_VERSION_TEXT": "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0",
        "CONFIG_GCC_VERSION": "120200",
        "CONFIG_LOCALVERSION": "",
        "CONFIG_LOG_BUF_SHIFT": "17",
        "CONFIG_KPROBES": "y",
        "CONFIG_OPTPROBES": "y",
        "CONFIG_KPROBES_ON_FTRACE": "y",
        "CONFIG_KRETPROBES": "y",
        "CONFIG_MODULES": "y",
        "CONFIG_MODULE_SIG": "y",
    }


def test_text_types_and_exclusions(p61):
    assert "ksys_sync" in p61.functions  # T
    assert "do_sys_openat2" in p61.functions  # t
    assert "calibration_delay_done" in p61.functions  # W: a weak function that was kept
    assert p61.types["jiffies"] == "D" and "jiffies" not in p61.functions
    assert "name_to_dev_t.cold" not in p61.functions
    assert "start_kernel" not in p61.functions  # init text
    assert "match_id.isra.0" in p61.functions and "topa_alloc.constprop.0" in p61.functions
    assert "vfs_statfs.part.0.isra.0" in p61.functions
    # xen_mc_batch appears twice in kallsyms (two static functions): one name, probe-able
    assert sum(1 for _, _, n in p61.entries if n == "xen_mc_batch") == 2
    assert "xen_mc_batch" in p61.functions


def test_gzip_and_str_input_same_profile(p61):
    r = raw(R61)
    gz = {k: gzip.compress(v) for k, v in r.items()}
    p = profile_from_raw(R61, gz)
    assert p.functions == p61.functions and p.blacklist == p61.blacklist and p.config == p61.config
    p = profile_from_raw(R61, {k: v.decode() for k, v in r.items()})
    assert p.functions == p61.functions


def test_missing_parts():
    with pytest.raises(KernelError, match="holds no kallsyms lines"):
        profile_from_raw(R61, {"kallsyms": b"", "blacklist": b""})
    p = profile_from_raw(R61, {"kallsyms": (FIX / f"{R61}.kallsyms").read_bytes()})
    assert p.blacklist == frozenset() and p.config == {}
    assert len(p.functions) == 123


# -- check -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ksys_sync", "__x64_sys_sync", "vfs_read", "match_id.isra.0",
                                  "calibration_delay_done"])
def test_check_ok(p61, name):
    p61.check(name)


@pytest.mark.parametrize("name, suggested", [
    ("match_id", ["match_id.isra.0"]),
    ("topa_alloc", ["topa_alloc.constprop.0"]),
    ("sys_sync", ["__x64_sys_sync", "ksys_sync", "__do_sys_sync"]),
    ("vfs_raed", ["vfs_read", "vfs_readv", "vfs_write"]),
    ("ksys_synq", ["ksys_sync", "__do_sys_sync", "__x64_sys_sync"]),
])
def test_check_absent_suggests(p61, name, suggested):
    assert p61.suggestions(name) == suggested
    with pytest.raises(SymbolError) as e:
        p61.check(name)
    msg = str(e.value)
    assert msg == (f"symbol {name} does not exist in kernel {R61}; did you mean {', '.join(suggested)}?")


def test_check_absent_without_suggestion(p61):
    with pytest.raises(SymbolError, match=r"^symbol zzqqxx does not exist in kernel 6\.1\.0-56-cloud-amd64$"):
        p61.check("zzqqxx")


@pytest.mark.parametrize("name", ["do_int3", "exc_int3", "kprobe_int3_handler", "exc_page_fault"])
def test_check_blacklisted(p61, name):
    assert name in p61.functions
    with pytest.raises(SymbolError, match=rf"^symbol {name} is in the kprobe blacklist of kernel {R61} "
                                          r"\(register_kprobe refuses it with -EINVAL\)"):
        p61.check(name)


def test_check_not_probeable(p61):
    with pytest.raises(SymbolError, match=r"name_to_dev_t\.cold is the cold .* probe name_to_dev_t$"):
        p61.check("name_to_dev_t.cold")
    with pytest.raises(SymbolError, match=r"start_kernel is init code, freed after boot"):
        p61.check("start_kernel")
    with pytest.raises(SymbolError, match=r"symbol jiffies in kernel .* is not a function \(kallsyms type D\)"):
        p61.check("jiffies")


def test_module_symbols_are_not_probeable():
    # kallsyms lists symbols of loaded modules as `addr t name\t[module]`; a profile keeps only
    # vmlinux's (the fixture's capture had no module loaded, so one such line is appended here).
    text = (FIX / f"{R61}.kallsyms").read_text() + "ffffffffc0a01000 t ext4_fill_super\t[ext4]\n"
    p = profile_from_raw(R61, {"kallsyms": text})
    assert "ext4_fill_super" not in p.functions
    assert p.module_symbols == {"ext4_fill_super": "ext4"}
    with pytest.raises(SymbolError, match="belongs to module ext4"):
        p.check("ext4_fill_super")


def test_pfx_padding_612(p612):
    assert sorted(p612.functions) == ["__x64_sys_sync", "_stext", "do_int3", "exc_int3", "ksys_sync",
                                      "vfs_read", "vfs_write"]
    with pytest.raises(SymbolError, match=r"__pfx_ksys_sync is the padding before ksys_sync, not a function"):
        p612.check("__pfx_ksys_sync")
    assert p612.expand("*ksys_sync") == ["ksys_sync"]
    assert p612.expand("vfs_*") == ["vfs_read", "vfs_write"]
    with pytest.raises(SymbolError, match="kprobe blacklist"):
        p612.check("exc_int3")


# -- expand ------------------------------------------------------------------------------------

def test_expand_vfs(p61):
    names = p61.expand("vfs_*")
    assert len(names) == 75
    assert names == sorted(names)
    assert "vfs_kern_mount.part.0" in names and "vfs_read" in names
    assert "vfs_get_tree.cold" not in names  # not an entry point
    assert "vfs_caches_init" not in names  # init code
    assert p61.expand("vfs_re*") == ["vfs_read", "vfs_readlink", "vfs_readv", "vfs_removexattr", "vfs_rename"]
    assert p61.expand("vfs_read?") == ["vfs_readv"]
    assert p61.expand("vfs_[rw]rite*") == ["vfs_write", "vfs_writev"]


def test_expand_plain_name(p61):
    assert p61.expand("ksys_sync") == ["ksys_sync"]
    with pytest.raises(SymbolError, match="blacklist"):
        p61.expand("do_int3")
    with pytest.raises(SymbolError, match="did you mean match_id.isra.0"):
        p61.expand("match_id")


def test_expand_excludes_blacklisted(p61):
    assert sorted(n for n in p61.functions if "int3" in n) == ["do_int3", "exc_int3", "kprobe_int3_handler"]
    with pytest.raises(SymbolError, match=r"blacklist: do_int3, exc_int3, kprobe_int3_handler$"):
        p61.expand("*int3*")
    assert "exc_page_fault" not in p61.expand("*")
    assert len(p61.expand("*")) == 123 - 25  # 25 of the excerpt's functions are blacklisted
    with pytest.raises(SymbolError) as e:
        p61.expand("exc_*")
    assert str(e.value) == (
        f"No functions matched by pattern 'exc_*' in kernel {R61}: the only matches are in the kprobe "
        "blacklist: exc_alignment_check, exc_bounds, exc_coproc_segment_overrun, exc_coprocessor_error, "
        "exc_debug, exc_device_not_available, exc_divide_error, exc_double_fault, exc_general_protection, "
        "exc_int3, … (22 in all)"
    )


def test_expand_nothing(p61):
    with pytest.raises(SymbolError, match=r"^No functions matched by pattern 'nosuch_\*' in kernel "):
        p61.expand("nosuch_*")


# -- System.map --------------------------------------------------------------------------------

def test_system_map(p61):
    text = p61.system_map()
    lines = text.splitlines()
    assert len(lines) == 142
    assert all(re.fullmatch(r"[0-9a-f]{16} [A-Za-z] \S+", ln) for ln in lines)
    addrs = [int(ln.split()[0], 16) for ln in lines]
    assert addrs == sorted(addrs)
    assert "ffffffff8e391360 T ksys_sync" in lines  # the kallsyms address, kept
    assert "ffffffff8e000000 T _stext" in lines


def test_system_map_without_addresses():
    # what an unprivileged reader of /proc/kallsyms gets: every address zero
    text = re.sub(r"^[0-9a-f]{16}", "0" * 16, (FIX / f"{R61}.kallsyms").read_text(), flags=re.M)
    p = profile_from_raw(R61, {"kallsyms": text})
    with pytest.raises(KernelError, match="captured without addresses"):
        p.system_map()


# -- the cache ---------------------------------------------------------------------------------

def test_profile_cache_roundtrip(tmp_path, monkeypatch, p61):
    from kprobegen.kernels import Kernel

    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    k = Kernel(R61, Path(f"/boot/vmlinuz-{R61}"), None, "installed", FIX / f"{R61}.config")
    with pytest.raises(KernelError, match=f"no kernel profile cached for {R61}"):
        load_profile(k)
    r = raw(R61)
    r["config"] = b""  # the capture of a kernel without /proc/config.gz
    d = save_raw_profile(R61, r)
    assert d == tmp_path / "profiles" / R61 == profile_dir(R61)
    assert sorted(f.name for f in d.iterdir()) == ["blacklist.gz", "config.gz", "kallsyms.gz"]
    assert gzip.decompress((d / "kallsyms.gz").read_bytes()) == r["kallsyms"]
    p = load_profile(k)
    assert p.functions == p61.functions and p.blacklist == p61.blacklist
    assert p.config == p61.config  # fell back to the packaged config
    (d / "kallsyms.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(KernelError, match="is damaged"):
        load_profile(k)


def _capture_available() -> str | None:
    try:
        from kprobegen.vm import capture_profile  # noqa: F401
    except ImportError as e:
        return f"kprobegen.vm.capture_profile is not importable ({e})"
    if not list(Path("/boot").glob("vmlinuz-*-cloud-amd64")):
        return "install linux-image-cloud-amd64 linux-headers-cloud-amd64 to run it"
    return None


def test_capture_real_profile_61(tmp_path, monkeypatch):
    """Boot the installed cloud kernel once (kprobegen.vm), cache its profile, and (when it is
    the release the fixture was captured from) find the same symbol table."""
    why = _capture_available()
    if why and not os.environ.get("CI"):
        pytest.skip(why)
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    from kprobegen.kernels import find_kernel

    from kprobegen.progress import Notice

    kernel = find_kernel()  # the default: the newest installed cloud kernel
    said: list[str] = []
    p = load_profile(kernel, capture=profile_capture(progress=said.append), progress=said.append)
    # the start and the end of the capture are Notices: shown even when stderr is not a terminal
    assert said[0].startswith(f"capturing the kernel profile of {kernel.release} ") and isinstance(said[0], Notice)
    assert re.fullmatch(rf"kernel profile of {re.escape(kernel.release)} captured in \d+\.\d s, cached in .*",
                        said[-1]) and isinstance(said[-1], Notice)
    assert (tmp_path / "profiles" / kernel.release / "kallsyms.gz").is_file()
    assert p.config["CONFIG_KPROBES"] == "y"  # from the packaged config: no /proc/config.gz
    for name in ("ksys_sync", "__x64_sys_sync", "vfs_read"):
        p.check(name)
    for name in ("do_int3", "exc_int3", "kprobe_int3_handler"):
        assert name in p.blacklist
    if kernel.release == R61:  # only on the release of the fixture
        # the same kernel gives the same table as the fixture's capture (addresses differ: KASLR)
        assert len(p.functions) == 41290
        assert len(p.blacklist) == 346
        fixture = profile_from_raw(R61, raw(R61))
        assert fixture.functions <= p.functions and fixture.blacklist == p.blacklist
        assert len(p.expand("vfs_*")) == 75
    # second time: from the cache, no boot
    again = load_profile(kernel)
    assert again.functions == p.functions


def test_parsed_profile_is_kept_beside_the_raw_files(tmp_path, monkeypatch):
    """A second process reads the parsed profile back instead of parsing kallsyms again;
    a changed raw file invalidates it."""
    from kprobegen.kernels import symbols

    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    raw = {"kallsyms": b"ffffffff81000000 T _stext\nffffffff81000010 T ksys_sync\nffffffff82000000 T _etext\n",
           "blacklist": b"", "config": b"CONFIG_KPROBES=y\n"}
    symbols.save_raw_profile("9.9.9-test", raw)
    kernel = type("K", (), {"release": "9.9.9-test", "config": None})()
    first = symbols.load_profile(kernel)
    assert (symbols.profile_dir("9.9.9-test") / "parsed.pickle").is_file()
    symbols._MEMO.clear()
    assert symbols.load_profile(kernel) == first
    symbols._MEMO.clear()
    raw["kallsyms"] = raw["kallsyms"].replace(b"ksys_sync", b"ksys_sync2")
    symbols.save_raw_profile("9.9.9-test", raw)
    assert "ksys_sync2" in symbols.load_profile(kernel).functions


def test_ambiguous_names_are_known():
    """Several vmlinux functions with one name (static functions of different files): a name
    register_kprobe resolves to the first of them (lines as in the 6.12 kallsyms)."""
    text = ("ffffffff81000000 T _stext\n"
            "ffffffff8167bb70 T apei_exec_read_register\n"
            "ffffffff8167c490 T __apei_exec_read_register\n"
            "ffffffff81884ab0 T apei_exec_read_register\n"
            "ffffffff818855b0 t default_read_file\n"
            "ffffffff818855f0 t default_read_file.cold\n"
            "ffffffff82000000 T _etext\n")
    p = profile_from_raw("x", {"kallsyms": text})
    assert p.ambiguous == {"apei_exec_read_register"}
    assert p.expand("*apei_exec_read_register") == ["__apei_exec_read_register", "apei_exec_read_register"]


def test_a_missing_profile_is_captured_by_the_function_passed_in(tmp_path, monkeypatch, p61):
    """The kernels layer boots nothing itself: the capture comes from the caller, is called
    once for a kernel whose profile is not cached, and its texts are cached and parsed."""
    from kprobegen.kernels import Kernel

    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    k = Kernel(R61, Path(f"/boot/vmlinuz-{R61}"), None, "installed", FIX / f"{R61}.config")
    calls, said = [], []

    def capture(kernel):
        calls.append(kernel)
        return raw(R61)  # the texts a real boot of this kernel returned

    first = load_profile(k, capture=capture, progress=said.append)
    again = load_profile(k, capture=capture)
    assert calls == [k]
    assert first.functions == again.functions == p61.functions
    assert any("capturing the kernel profile" in str(s) for s in said)


def test_a_parsed_profile_of_an_older_layout_is_parsed_again(tmp_path, monkeypatch, p61):
    """A parsed.pickle naming a module that no longer exists (Profile moved) is not an error."""
    from kprobegen.kernels import Kernel

    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path))
    k = Kernel(R61, Path(f"/boot/vmlinuz-{R61}"), None, "installed", FIX / f"{R61}.config")
    d = save_raw_profile(R61, raw(R61))
    (d / "parsed.pickle").write_bytes(b"ckprobegen.no_such_module\nProfile\n.")
    assert load_profile(k).functions == p61.functions
