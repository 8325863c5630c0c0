"""capture_profile() against a real boot, and the auto accelerator's KVM probe and cache."""

from __future__ import annotations

import re

import pytest

from kprobegen.errors import VMError
from kprobegen.vm import capture_profile, run
from kprobegen.vm import qemu

pytestmark = [pytest.mark.vm]


def test_capture_profile_returns_the_guest_tables(kernel):
    p = capture_profile(kernel, timeout=240)
    assert set(p) == {"kallsyms", "blacklist", "config"}
    syms = p["kallsyms"].decode().splitlines()
    assert len(syms) > 50_000
    [addr] = re.findall(r"^([0-9a-f]{16}) [Tt] ksys_sync$", p["kallsyms"].decode(), re.M)
    assert int(addr, 16) != 0                                   # read as root: real addresses
    bl = p["blacklist"].decode().splitlines()
    assert len(bl) > 100
    assert all(re.match(r"^0x[0-9a-f]+-0x[0-9a-f]+\t\S+$", ln) for ln in bl)
    assert any(ln.endswith("\tdo_int3") for ln in bl)
    packaged = kernel.config.read_text() if kernel.config else ""
    if "# CONFIG_IKCONFIG is not set" in packaged:
        assert p["config"] == b""                               # no /proc/config.gz
    else:
        assert p["config"].startswith(b"#") or p["config"] == b""


def test_auto_probes_kvm_once_and_caches_the_verdict(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("KPROBEGEN_CACHE", str(tmp_path / "cache"))
    assert qemu.cached_kvm_verdict() is None
    first = run(kernel, [], ["true"], accel="auto", timeout=120).raise_for_status()
    assert first.accel in ("kvm", "tcg")
    if not qemu.kvm_usable():
        assert first.accel == "tcg" and "kvm_probe" not in first.timings
        return
    verdict = qemu.cached_kvm_verdict()
    if first.accel == "tcg":            # KVM hung or failed (these machines): probed once, briefly
        assert verdict.verdict == "broken" and verdict.reason
        assert first.timings["kvm_probe"] <= qemu.KVM_PROBE_SECONDS + 1
    else:
        assert verdict.verdict == "works"
    second = run(kernel, [], ["true"], accel="auto", timeout=120).raise_for_status()
    assert second.accel == first.accel
    assert "kvm_probe" not in second.timings


def test_bad_accel_and_oracle_are_refused_before_booting(kernel):
    with pytest.raises(VMError, match="unknown accel"):
        run(kernel, [], ["true"], accel="hvf")
    from kprobegen.vm import Oracle
    with pytest.raises(VMError, match="not a kernel symbol"):
        Oracle("kprobe", "ksys_sync; reboot")
    with pytest.raises(VMError, match="kprobe or kretprobe"):
        Oracle("uprobe", "ksys_sync")


def test_oracle_on_a_missing_symbol_is_reported(kernel):
    from kprobegen.vm import Oracle
    r = run(kernel, [], ["true"], oracles=[Oracle("kprobe", "no_such_symbol_kpg")], timeout=120)
    assert r.status == "ok"
    assert r.oracle_errors == ["kprobe:no_such_symbol_kpg"]
    assert r.oracle == {}
