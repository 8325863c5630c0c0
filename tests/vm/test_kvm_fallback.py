"""`--accel auto` ends on TCG whatever KVM does, and `--accel` reaches every boot of a command.

KVM differs from machine to machine of the same kind: on some a KVM boot hangs after SeaBIOS,
on others qemu aborts at once (``kvm_buf_set_msrs: Assertion ... failed``, status -6), and
elsewhere KVM_CREATE_VM fails. Each of these is played here by a wrapper script put in front of
the real qemu on PATH: it misbehaves only when asked for ``-accel kvm`` and otherwise runs the
real qemu, so the TCG boot that follows is real and the counts are exact. Every qemu start is
logged, so the tests also see which accelerators were tried, and how often.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

MODULES = Path(__file__).resolve().parents[2] / "modules"
SYNC3 = ["sh", "-c", "sync; sync; sync"]

#: What the wrapper does instead of booting under KVM.
MISBEHAVIOUR = {
    # qemu 7.2 on some hosts of this kind: an assertion in its KVM MSR code, SIGABRT at once
    "aborts": 'echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: '
              'Assertion \\`ret == cpu->kvm_msr_buf->nmsrs\' failed." >&2; kill -ABRT $$',
    # others: the boot never reaches the guest's /init (nothing more on the console)
    "hangs": "exec sleep 3600",
    # KVM_CREATE_VM refused: qemu says so and exits 1
    "refuses": 'echo "ioctl(KVM_CREATE_VM) failed: 16 Device or resource busy" >&2; '
               'echo "qemu-system-x86_64: failed to initialize kvm: Device or resource busy" >&2; exit 1',
}


def make_wrapper(tmp_path: Path, behaviour: str) -> tuple[dict, Path]:
    """(environment with the wrapper first on PATH, the log of every boot's -accel; a qemu
    started without -accel, such as `qemu --version`, is not logged)."""
    real = shutil.which("qemu-system-x86_64")
    require(real is not None, "qemu-system-x86_64 not found")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "qemu-starts.log"
    script = bindir / "qemu-system-x86_64"
    script.write_text(
        "#!/bin/sh\n"
        f"# In front of {real}: under -accel kvm it {behaviour}; otherwise it is the real qemu.\n"
        'accel=""\n'
        'prev=""\n'
        'for a in "$@"; do [ "$prev" = "-accel" ] && accel="$a"; prev="$a"; done\n'
        f'[ -n "$accel" ] && echo "$accel" >> "{log}"\n'
        f'if [ "$accel" = kvm ]; then {MISBEHAVIOUR[behaviour]}; fi\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    env.pop("KPROBEGEN_ACCEL", None)
    return env, log


def private_cache(tmp_path: Path, *, with_profiles: bool) -> Path:
    """A cache of its own (so no KVM verdict is recorded yet) that shares the kernels, boot
    images and, with ``with_profiles``, the kernel profiles of the user's cache."""
    from kprobegen.cache import cache_dir

    shared = cache_dir()
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("kernels", "vmlinux", "apt") + (("profiles",) if with_profiles else ()):
        if (shared / name).is_dir():
            (cache / name).symlink_to(shared / name)
    return cache


def kprobegen(env: dict, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kprobegen", *args], capture_output=True, text=True,
                          timeout=900, env=dict(env, KPROBEGEN_CACHE=str(cache)))


def starts(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def needs_kvm_device():
    from kprobegen.vm import qemu

    if not qemu.kvm_usable():
        pytest.skip("needs a read-write /dev/kvm so that auto tries a KVM boot first "
                    "(on a machine without one every boot is TCG from the start)")


@pytest.mark.parametrize("behaviour", ["aborts", "hangs", "refuses"])
def test_auto_falls_back_to_tcg_and_counts_exactly(behaviour, kernel_61, tmp_path):
    needs_kvm_device()
    env, log = make_wrapper(tmp_path, behaviour)
    cache = private_cache(tmp_path, with_profiles=True)
    done = kprobegen(env, cache, "run", str(MODULES / "sync_counter.yaml"), "--json", "--", *SYNC3)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["hooks"]["sync"]["hits"] == 3 and result["complete"] is True
    assert result["accel"] == "tcg"
    assert starts(log) == ["kvm", "tcg"]                 # one KVM try, then TCG
    assert "falling back to tcg" in done.stderr          # said, though stderr is not a terminal
    # The verdict is kept for this boot of the host: the next run goes straight to TCG.
    doctor = json.loads(kprobegen(env, cache, "doctor", "--json").stdout)
    assert doctor["kvm_verdict"]["verdict"] == "broken"
    reason = doctor["kvm_verdict"]["reason"]
    if behaviour == "aborts":
        assert "status -6" in reason and "kvm_buf_set_msrs" in reason
    elif behaviour == "hangs":
        assert "did not reach the guest's /init" in reason
    else:
        assert "status 1" in reason and "failed to initialize kvm" in reason
    again = kprobegen(env, cache, "run", str(MODULES / "sync_counter.yaml"), "--json", "--", *SYNC3)
    assert json.loads(again.stdout)["hooks"]["sync"]["hits"] == 3
    assert starts(log) == ["kvm", "tcg", "tcg"]
    # Forgetting the verdict makes auto try KVM again.
    assert kprobegen(env, cache, "doctor", "--reset-kvm").returncode == 0
    assert json.loads(kprobegen(env, cache, "doctor", "--json").stdout)["kvm_verdict"] is None


def test_profile_capture_falls_back_too(kernel_61, tmp_path):
    """The first command on a new machine captures the kernel profile: that boot falls back
    like any other, and says what it is doing although stderr is not a terminal."""
    needs_kvm_device()
    env, log = make_wrapper(tmp_path, "aborts")
    cache = private_cache(tmp_path, with_profiles=False)
    done = kprobegen(env, cache, "check", str(MODULES / "sync_counter.yaml"), "--kernel", kernel_61.release)
    assert done.returncode == 0, done.stderr
    assert f"symbols checked against {kernel_61.release}" in done.stdout
    assert starts(log) == ["kvm", "tcg"]
    assert f"capturing the kernel profile of {kernel_61.release}" in done.stderr
    assert "cached in" in done.stderr


def test_accel_tcg_never_starts_a_kvm_boot(kernel_61, tmp_path):
    """KPROBEGEN_ACCEL=tcg reaches the profile capture and the run; --accel beats it."""
    env, log = make_wrapper(tmp_path, "aborts")
    cache = private_cache(tmp_path, with_profiles=False)
    done = kprobegen(dict(env, KPROBEGEN_ACCEL="tcg"), cache, "run", str(MODULES / "sync_counter.yaml"),
                     "--json", "--", *SYNC3)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hooks"]["sync"]["hits"] == 3
    assert starts(log) == ["tcg", "tcg"]                 # the profile capture, then the run
    done = kprobegen(dict(env, KPROBEGEN_ACCEL="kvm"), cache, "run", str(MODULES / "sync_counter.yaml"),
                     "--accel", "tcg", "--json", "--", *SYNC3)
    assert done.returncode == 0, done.stderr
    assert starts(log) == ["tcg", "tcg", "tcg"]
    bad = kprobegen(dict(env, KPROBEGEN_ACCEL="hvf"), cache, "run", str(MODULES / "sync_counter.yaml"),
                    "--", *SYNC3)
    assert bad.returncode == 1 and bad.stderr == "kprobegen: error: KPROBEGEN_ACCEL='hvf': use auto, kvm or tcg\n"
    assert starts(log) == ["tcg", "tcg", "tcg"]


SESSION = """
import json, sys
from kprobegen.vm import guest
from kprobegen.vm.session import Session

session = Session(guest.find_image("bookworm"), accel="auto", resume=sys.argv[1] == "resume").start()
try:
    out = session.exec("echo ok").stdout.decode().strip()
    print(json.dumps({"started_as": session.started_as, "out": out, "service": session.service}))
finally:
    session.close()
"""


@pytest.mark.parametrize("behaviour", ["aborts", "hangs"])
def test_a_guest_session_falls_back_too(behaviour, image, tmp_path):
    """The pytest plugin's session under auto: a boot whose KVM qemu fails is booted again
    under TCG on the same channel, and the session connects again; a saved boot names its
    accelerator, so resuming one made under TCG tries no KVM at all."""
    needs_kvm_device()
    env, log = make_wrapper(tmp_path, behaviour)
    cache = private_cache(tmp_path, with_profiles=False)
    (cache / "images").symlink_to(image.directory.parent)
    script = tmp_path / "session.py"
    script.write_text(SESSION)

    def session(mode: str) -> dict:
        done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=900,
                              env=dict(env, KPROBEGEN_CACHE=str(cache)))
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    assert session("boot") == {"started_as": "booted", "out": "ok", "service": True}
    assert starts(log) == ["kvm", "tcg"]
    assert kprobegen(env, cache, "doctor", "--reset-kvm").returncode == 0
    session("resume")                   # resumes the saved boot, or boots (KVM tried) and saves one
    assert kprobegen(env, cache, "doctor", "--reset-kvm").returncode == 0
    before = len(starts(log))
    assert session("resume") == {"started_as": "saved", "out": "ok", "service": True}
    assert starts(log)[before:] == ["tcg"]
