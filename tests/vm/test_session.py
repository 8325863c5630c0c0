"""A guest session's saved boot (kprobegen.vm.session): the first session saves its booted
guest, later ones resume it, and each resumed guest is its own (clock, random pool, disk)
while exact counts come from the same real kernel. A damaged saved boot is thrown away and
the session boots; ``resume=False`` always boots and saves nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from .conftest import qemu_processes_with, require

pytestmark = [pytest.mark.vm, pytest.mark.build, pytest.mark.slow]

MODULES = Path(__file__).resolve().parents[2] / "modules"


def saved_boots(image) -> list[Path]:
    root = image.directory / "sessions"
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def start(image, notes: list[str] | None = None, **kw):
    from kprobegen.vm.session import Session

    return Session(image, progress=(notes.append if notes is not None else None), **kw).start()


def facts(session) -> dict[str, str]:
    """The boot, the clock, a fresh random uuid, and whether a file from an earlier session is there."""
    out = session.exec("cat /proc/sys/kernel/random/boot_id; date +%s; cat /proc/sys/kernel/random/uuid; "
                       "test -e /root/left-by-a-session && echo marker || echo clean").check()
    boot_id, clock, uuid, marker = out.stdout.decode().split()
    return {"boot_id": boot_id, "clock": clock, "uuid": uuid, "marker": marker}


@pytest.fixture(scope="module")
def fresh(image):
    require(shutil.which("qemu-img") is not None, "apt-get install qemu-utils (saved boots need qemu-img)")
    for old in saved_boots(image):
        shutil.rmtree(old)
    return image


def test_later_sessions_resume_the_saved_boot_each_its_own(fresh, tmp_path):
    from kprobegen.kernels import find_kernel
    from kprobegen.pipeline import build_spec
    from kprobegen.spec import load_spec

    first = start(fresh)
    try:
        assert first.started_as == "booted+saved" and first.service
        booted = facts(first)
        first.exec("touch /root/left-by-a-session").check()
    finally:
        first.close()
    assert [p.name for p in saved_boots(fresh)] != [] and (saved_boots(fresh)[0] / "state").stat().st_size > 0

    seen = []
    for _ in range(2):
        notes: list[str] = []
        session = start(fresh, notes)
        try:
            assert session.started_as == "saved", notes
            assert any("resuming" in n for n in notes), notes
            got = facts(session)
            # the same boot of the kernel, resumed: and yet this session's own clock, pool and disk
            assert got["boot_id"] == booted["boot_id"]
            assert abs(int(got["clock"]) - time.time()) < 30, got
            assert got["marker"] == "clean"
            seen.append(got["uuid"])
            # exact counts from the resumed kernel, through the service, as the plugin loads
            spec = load_spec(MODULES / "sync_counter.yaml")
            built, _ = build_spec(spec, tmp_path / "build", kernel=find_kernel(session.release))
            status, body = session.request("PUT", "/v1/modules/sync_counter", Path(built.ko).read_bytes(),
                                           content_type="application/octet-stream")
            assert status == 200, body
            session.exec("sync; sync; sync").check()
            status, body = session.request("DELETE", "/v1/modules/sync_counter")
            assert status == 200 and body["results"]["hooks"]["sync"]["hits"] == 3, body
        finally:
            session.close()
        assert qemu_processes_with(str(session._dir)) == []
    assert seen[0] != seen[1], "two resumed guests drew the same random uuid: the pool was not reseeded"


def test_a_damaged_saved_boot_is_thrown_away_and_the_session_boots(fresh):
    boots = saved_boots(fresh)
    if not boots:                      # run alone: make one
        start(fresh).close()
        boots = saved_boots(fresh)
    state = boots[0] / "state"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size // 2)
    notes: list[str] = []
    session = start(fresh, notes)
    try:
        assert session.started_as == "booted+saved", notes
        assert any("did not resume" in n and "booting afresh" in n for n in notes), notes
        assert session.exec("true").returncode == 0
    finally:
        session.close()
    again = start(fresh)               # the boot saved in its place resumes
    try:
        assert again.started_as == "saved"
    finally:
        again.close()


def test_resume_false_boots_and_saves_nothing(fresh):
    for old in saved_boots(fresh):
        shutil.rmtree(old)
    session = start(fresh, resume=False)
    try:
        assert session.started_as == "booted" and session.exec("true").returncode == 0
    finally:
        session.close()
    assert saved_boots(fresh) == []
