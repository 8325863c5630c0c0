#!/usr/bin/env python3
"""VM benchmark against virtme-ng (issue 4): the same job, the same kernel, side by side.

Both paths boot Debian 12's generic kernel (`linux-image-amd64`; virtme-ng cannot mount its
root on the cloud kernel, which has no 9p and no virtiofs root without a working virtiofsd),
under TCG, and do the same job: load sync_counter.ko, run `sync` N times, unload it, read the
kernel log, and get hits == N.

  kprobegen  `python3 -m kprobegen run modules/sync_counter.yaml --kernel REL --accel tcg
             --json -- sh -c 'sync; …'`, end to end as a user runs it (a new process: Python
             start, spec, symbol check against the cached profile, build, VM, parse). The
             first round compiles the module (a private, empty build cache); later rounds hit
             that cache. `--json` gives the VM's own breakdown (`timings`).
  virtme-ng  `vng --run /boot/vmlinuz-REL --disable-kvm --force-9p --exec 'insmod KO && sh -c
             …; rmmod NAME; dmesg'` with the same .ko, prebuilt once before the rounds; the
             counts are read from its dmesg output with kprobegen.report.parse_log.

The rounds alternate which path goes first, so that both see the same machine load. Prints
medians, the ratio virtme-ng / kprobegen (target ≥ 5×), kprobegen's breakdown, and where
virtme-ng's time goes (from the printk timestamps of virtme-ng-init's milestones in the dmesg
each run prints).

virtme-ng flags, and why:
  --disable-kvm  KVM boots hang on these machines; kprobegen runs with --accel tcg too.
  --force-9p     the only virtiofsd here is qemu 7.2's C one, which refuses virtme-ng's
                 arguments; without this flag vng polls for it 3.1 s (0.1+0.2+0.4+0.8+1.6)
                 and then falls back to 9p anyway. --vng-default-fs measures that instead.
  (no --network) virtme-ng 1.42 creates no network device unless asked: its qemu command line
                 has `-net none`; the script checks that with --dry-run before the rounds.
Everything else is virtme-ng's default (q35, -cpu max, 2 vCPUs, 1 GiB, the host's root
filesystem over 9p, udev started by virtme-ng-init).

Times are printed, never asserted. Counts are asserted (exactly N, on both paths).

--vmlinux adds a third path, a projection: kprobegen.vm.run() in this process, booting the same
kernel decompressed once on the host (qemu boots the ELF through PVH) instead of the xz bzImage
that the guest decompresses under TCG for about 4 s. kprobegen does not do that (yet); the row
says how much it would buy, under the same load.

Usage: python3 bench/virtme_bench.py [--rounds N] [--kernel RELEASE] [--syncs N]
                                      [--vng-default-fs] [--vmlinux]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kprobegen.pipeline import build_module  # noqa: E402
from kprobegen.cache import cache_dir  # noqa: E402
from kprobegen.kernels import find_kernel, list_kernels  # noqa: E402
from kprobegen.report import parse_log  # noqa: E402
from kprobegen.spec import load_spec  # noqa: E402

SPEC = REPO / "modules" / "sync_counter.yaml"
HOOK = "sync"
TIMEOUT = 600


def generic_release() -> str:
    """The newest installed Debian generic kernel (linux-image-amd64), e.g. 6.1.0-56-amd64."""
    found = [k.release for k in list_kernels()
             if k.origin == "installed" and re.fullmatch(r"[\d.]+-\d+-amd64", k.release)]
    if not found:
        raise SystemExit("no generic kernel installed: apt-get install linux-image-amd64 "
                         "linux-headers-amd64 (virtme-ng cannot boot the cloud kernel)")
    return max(found, key=lambda r: [int(x) for x in re.findall(r"\d+", r)])


def private_cache(work: Path) -> Path:
    """A KPROBEGEN_CACHE that shares everything with the real cache (kernel profiles, fetched
    kernels, …) except `builds`, so the first kprobegen round really compiles the module."""
    real = cache_dir()
    mine = work / "cache"
    mine.mkdir()
    if real.is_dir():
        for entry in real.iterdir():
            if entry.name != "builds":
                os.symlink(entry, mine / entry.name)
    return mine


def hits_of(log: str, module: str) -> int:
    (results,) = parse_log(log).results(module=module)
    data = results.to_json()
    if not data["complete"]:
        raise AssertionError(f"incomplete report from {module}: {data['problems']}")
    return data["hooks"][HOOK]["hits"]


def run_kprobegen(release: str, workload: str, env: dict) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "kprobegen", "run", str(SPEC), "--kernel", release,
            "--accel", "tcg", "--json", "--", "sh", "-c", workload]
    t = time.monotonic()
    p = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=TIMEOUT)
    secs = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"kprobegen run failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return secs, json.loads(p.stdout)


def vng_argv(image: Path, script: str, *, force_9p: bool, dry_run: bool = False) -> list[str]:
    argv = ["vng", "--run", str(image), "--disable-kvm"]
    if force_9p:
        argv.append("--force-9p")
    if dry_run:
        argv.append("--dry-run")
    return argv + ["--exec", script]


def run_vng(argv: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t = time.monotonic()
    p = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TIMEOUT)
    secs = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"virtme-ng failed (exit {p.returncode}): {shlex.join(argv)}\n"
                         f"stdout tail:\n{p.stdout[-2000:]}\nstderr tail:\n{p.stderr[-3000:]}")
    return secs, p


def check_vng_command_line(image: Path, script: str, cwd: Path, force_9p: bool) -> str:
    """The qemu command line vng would run: no network device, no KVM."""
    p = subprocess.run(vng_argv(image, script, force_9p=force_9p, dry_run=True), cwd=cwd,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    text = p.stdout + p.stderr
    qemu_line = next((ln[ln.index("qemu-system"):] if "qemu-system" in ln else ln
                      for ln in text.splitlines() if "qemu-system" in ln), "")
    if not qemu_line:
        raise SystemExit(f"vng --dry-run printed no qemu command line (exit {p.returncode}):\n{text[-2000:]}")
    if "-net none" not in qemu_line or "-netdev" in qemu_line:
        raise SystemExit(f"vng would create a network device: {qemu_line}")
    if "kvm" in re.sub(r"virtme-ng|kvm-clock", "", qemu_line.split(" -append ")[0]):
        raise SystemExit(f"vng would use KVM: {qemu_line}")
    return qemu_line


GUEST_MARKS = [  # (label of the interval that ends at the mark, regex on dmesg) in boot order
    ("kernel boot → virtme-ng-init", r"virtme-ng-init: "),
    ("init: mounts, systemd-tmpfiles", r"virtme-ng-init: basic initialization done"),
    ("init: udev coldplug + settle", r"virtme-ng-init: udev is done"),
    ("init: start the script", r"virtme-ng-init: starting script"),
    ("script: insmod", r"kprobegen/\d+ \S+ \d+ load "),
    ("script: workload, rmmod", r"kprobegen/\d+ \S+ \d+ end "),
]


def vng_stages(dmesg: str, wall: float) -> dict[str, float]:
    """Where one virtme-ng run's time went, from the printk timestamps of virtme-ng-init's
    milestones in the dmesg the guest printed; the rest of the wall time is host side: vng's
    Python, its initramfs, qemu start, firmware, then dmesg itself, shutdown and qemu exit."""
    out, prev = {}, 0.0
    for label, pattern in GUEST_MARKS:
        m = re.search(r"^\[\s*(\d+\.\d+)\] " + pattern, dmesg, re.M)
        if m is None:
            continue
        ts = float(m.group(1))
        out[label] = ts - prev
        prev = ts
    out["host: vng, initramfs, qemu, firmware; dmesg, shutdown"] = wall - prev
    return out


XZ_MAGIC = b"\xfd7zXZ\x00"
PROJECTION = "kprobegen, vmlinux (in-process)"


def decompress_bzimage(image: Path, out: Path) -> Path:
    """The kernel ELF inside an xz-compressed bzImage (Debian's generic kernel), decompressed
    on the host; qemu boots it through its PVH entry (CONFIG_PVH=y)."""
    import lzma

    data = image.read_bytes()
    at = data.find(XZ_MAGIC)
    if at < 0:
        raise SystemExit(f"{image}: no xz payload (only xz-compressed kernels are handled here)")
    elf = lzma.LZMADecompressor().decompress(data[at:])
    if elf[:4] != b"\x7fELF":
        raise SystemExit(f"{image}: the xz payload at {at} is not an ELF kernel")
    out.write_bytes(elf)
    return out


def run_projection(kernel_elf, spec, workload: str, work: Path) -> tuple[float, int]:
    """What `kprobegen run` would take if it booted a host-decompressed kernel: build (cache
    hit), vm.run, parse, in this process (so without Python's start: about 0.5 s)."""
    from kprobegen import vm

    t = time.monotonic()
    b = build_module(spec, work / "ko-projection", kernel=kernel_elf)
    r = vm.run(kernel_elf, [b.ko], ["sh", "-c", workload], accel="tcg").raise_for_status()
    hits = hits_of(r.kernel_log, b.name)
    return time.monotonic() - t, hits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="kprobegen run vs virtme-ng, same kernel, same job")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kernel", default=None,
                    help="a kernel virtme-ng can boot (default: the newest installed generic -amd64 one)")
    ap.add_argument("--syncs", type=int, default=3)
    ap.add_argument("--vng-default-fs", action="store_true",
                    help="let vng try virtiofsd first (fails here, +3.1 s) instead of --force-9p")
    ap.add_argument("--vmlinux", action="store_true",
                    help="add a third path: kprobegen's VM run booting the kernel decompressed on "
                         "the host (a projection of a change not made in kprobegen/)")
    args = ap.parse_args(argv)

    if shutil.which("vng") is None:
        raise SystemExit("vng not found: pip install virtme-ng")
    kernel = find_kernel(args.kernel or generic_release())
    image = Path(kernel.image)
    workload = "; ".join(["sync"] * args.syncs)
    spec = load_spec(SPEC)
    force_9p = not args.vng_default_fs

    with tempfile.TemporaryDirectory(prefix="kpg-vngbench-") as t:
        # Under /tmp: the guest of virtme-ng sees the host's /tmp (an overlay), so the .ko too.
        work = Path(t)
        env = dict(os.environ, KPROBEGEN_CACHE=str(private_cache(work)))
        built = build_module(spec, work / "ko", kernel=kernel)  # the real cache: not timed
        ko = work / "ko" / built.ko.name
        script = (f"insmod {ko} || exit 90; sh -c {shlex.quote(workload)}; rc=$?; "
                  f"rmmod {built.name} || exit 91; dmesg; exit $rc")
        argv_vng = vng_argv(image, script, force_9p=force_9p)
        qemu_line = check_vng_command_line(image, script, work, force_9p)
        print(f"virtme-ng {subprocess.run(['vng', '--version'], capture_output=True, text=True).stdout.strip()}, "
              f"kernel {kernel.release}, workload: sync × {args.syncs}", flush=True)
        print(f"vng qemu: {qemu_line[:400]}{' …' if len(qemu_line) > 400 else ''}\n", flush=True)

        rows: dict[str, list[float]] = {"kprobegen": [], "virtme-ng": []}
        kernel_elf = None
        if args.vmlinux:
            import dataclasses

            t0 = time.monotonic()
            elf = decompress_bzimage(image, work / f"vmlinux-{kernel.release}")
            print(f"decompressed {image} on the host in {time.monotonic() - t0:.2f}s "
                  f"({elf.stat().st_size / 1e6:.0f} MB ELF), once, not timed\n", flush=True)
            kernel_elf = dataclasses.replace(kernel, image=elf)
            rows[PROJECTION] = []
        timings: list[dict[str, float]] = []
        vng_timings: list[dict[str, float]] = []
        for i in range(args.rounds):
            order = list(rows)
            order = order[i % len(order):] + order[:i % len(order)]
            for who in order:
                if who == "kprobegen":
                    secs, out = run_kprobegen(kernel.release, workload, env)
                    assert out["exit_code"] == 0, out
                    assert out["hooks"][HOOK]["hits"] == args.syncs, out["hooks"]
                    if i == 0:  # the private cache had no builds: this round compiled
                        assert any((Path(env["KPROBEGEN_CACHE"]) / "builds").iterdir())
                    out["timings"]["wall"] = secs
                    timings.append(out["timings"])
                elif who == PROJECTION:
                    secs, hits = run_projection(kernel_elf, spec, workload, work)
                    assert hits == args.syncs, f"the vmlinux run counted {hits}, not {args.syncs}"
                else:
                    secs, p = run_vng(argv_vng, work)
                    hits = hits_of(p.stdout, built.name)
                    assert hits == args.syncs, f"virtme-ng run counted {hits}, not {args.syncs}"
                    vng_timings.append(vng_stages(p.stdout, secs))
                rows[who].append(secs)
            print(f"round {i + 1}/{args.rounds}" + ("" if i else " (kprobegen compiles)") + ": "
                  + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()), flush=True)

    kpg, vng = statistics.median(rows["kprobegen"]), statistics.median(rows["virtme-ng"])
    print(f"\nkernel {kernel.release}, TCG, {args.rounds} rounds alternating, sync × {args.syncs}, "
          f"vng {'--force-9p' if force_9p else 'default fs (virtiofsd tried first)'}")
    print(f"{'path':<34} {'median':>8} {'min':>8} {'max':>8}")
    for k, v in rows.items():
        print(f"{k:<34} {statistics.median(v):>7.2f}s {min(v):>7.2f}s {max(v):>7.2f}s")
    if len(rows["kprobegen"]) > 1:
        warm = rows["kprobegen"][1:]
        print(f"{'kprobegen, cached builds':<34} {statistics.median(warm):>7.2f}s {min(warm):>7.2f}s {max(warm):>7.2f}s")
    print(f"\nvirtme-ng / kprobegen (medians): {vng / kpg:.2f}×   (target ≥ 5×)")
    if PROJECTION in rows:
        proj = statistics.median(rows[PROJECTION])
        print(f"virtme-ng / {PROJECTION} (medians): {vng / proj:.2f}×   (a projection, not `kprobegen run`)")

    print("\nwhere kprobegen run's time goes (median seconds over the rounds; round 1 in brackets):")
    host = [tm["wall"] - tm["total"] for tm in timings]
    print(f"  {'host: python, spec, symbols, build, parse':<54} {statistics.median(host):6.3f}   [{host[0]:6.3f}: compiles]")
    for key in ("initramfs", "boot", "load", "workload", "unload", "collect", "shutdown", "total", "wall"):
        vals = [tm[key] for tm in timings if key in tm]
        if vals:
            label = "VM total" if key == "total" else ("kprobegen run, wall" if key == "wall" else "VM " + key)
            print(f"  {label:<54} {statistics.median(vals):6.3f}   [{vals[0]:6.3f}]")
    print("\nwhere virtme-ng's time goes (median seconds; guest printk timestamps from its dmesg):")
    for label in [m[0] for m in GUEST_MARKS] + ["host: vng, initramfs, qemu, firmware; dmesg, shutdown"]:
        vals = [tm[label] for tm in vng_timings if label in tm]
        if vals:
            print(f"  {label:<54} {statistics.median(vals):6.3f}")
    print(f"  {'virtme-ng, wall':<54} {vng:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
