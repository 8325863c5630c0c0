"""The boot image: the kernel's ELF, decompressed once on the host, when it has a PVH entry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kprobegen.vm.image import boot_image


def test_pvh_kernel_boots_from_its_cached_elf(kernel, tmp_path, monkeypatch):
    monkeypatch.delenv("KPROBEGEN_BOOT_BZIMAGE", raising=False)
    elf = boot_image(kernel, cache=tmp_path)
    assert elf.parent == tmp_path and elf.read_bytes()[:4] == b"\x7fELF"
    assert elf.stat().st_size > 3 * Path(kernel.image).stat().st_size  # it was compressed
    assert boot_image(kernel, cache=tmp_path) == elf  # cached, not decompressed again
    assert [p.name for p in tmp_path.iterdir()] == [elf.name], "no temporary file left behind"


def test_falls_back_to_the_bzimage(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("KPROBEGEN_BOOT_BZIMAGE", "1")
    assert boot_image(kernel, cache=tmp_path) == Path(kernel.image)
    monkeypatch.delenv("KPROBEGEN_BOOT_BZIMAGE")
    no_config = dataclasses.replace(kernel, config=None)  # PVH unknown: never guess
    assert boot_image(no_config, cache=tmp_path) == Path(kernel.image)
    assert not list(tmp_path.iterdir())


def test_both_images_boot_and_count_the_same(kernel, monkeypatch):
    from kprobegen.vm import Oracle, run

    counts = {}
    for force_bzimage in ("1", ""):
        monkeypatch.setenv("KPROBEGEN_BOOT_BZIMAGE", force_bzimage)
        result = run(kernel, [], ["sh", "-c", "sync; sync"], oracles=[Oracle("kprobe", "ksys_sync")], timeout=120)
        result.raise_for_status()
        booted = Path(result.argv[result.argv.index("-kernel") + 1])
        assert (booted == Path(kernel.image)) == bool(force_bzimage)
        counts[booted.name] = result.oracle["kprobe:ksys_sync"]
    assert list(counts.values()) == [(2, 0), (2, 0)]
