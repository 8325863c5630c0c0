"""Kernel profiles: the symbol table, kprobe blacklist and config of one kernel.

A profile is captured once per kernel by booting it (the caller passes the capture, e.g.
kprobegen.vm.capture_profile, which returns the raw texts of /proc/kallsyms,
/sys/kernel/debug/kprobes/blacklist and the config) and is cached gzip-compressed in cache_dir()/profiles/<release>/. Debian's /boot/System.map-* is a
stub, so the guest's /proc/kallsyms is the symbol table.

What counts as a probe-able function (see docs/kernels.md):

* a kallsyms text symbol of vmlinux: type ``t``, ``T`` or ``W`` (a weak function that was
  kept); symbols of loaded modules (``name [mod]``) are left out, since the modules that
  happened to be loaded while the profile was captured are not those loaded at run time;
* whose address lies in the kernel's text, ``[_stext, _etext)``: init code (``_sinittext`` ..)
  is freed after boot and cannot be probed;
* that is an entry point: ``foo.cold`` (the cold part of ``foo``) and the ``__pfx_`` / ``__cfi_``
  padding symbols (6.2+) are not; ``foo.isra.0``, ``foo.constprop.0``, ``foo.part.0`` are;
* and is not in the kprobe blacklist (``register_kprobe`` refuses those with -EINVAL).
"""

from __future__ import annotations

import difflib
import fnmatch
import gzip
import pickle
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kprobegen.cache import atomic_write, cache_dir, lock
from kprobegen.errors import KernelError, SymbolError
from kprobegen.kernels.toolchain import parse_config
from kprobegen.progress import Notice

if TYPE_CHECKING:
    from kprobegen.kernels import Kernel

TEXT_TYPES = frozenset("tTW")
RAW_NAMES = ("kallsyms", "blacklist", "config")

_KALLSYMS_LINE = re.compile(r"^([0-9a-fA-F]+)\s+(\S)\s+(\S+)(?:\s+\[(\S+)\])?\s*$")
_BLACKLIST_LINE = re.compile(r"^0x([0-9a-fA-F]+)-0x([0-9a-fA-F]+)\s+(\S+)")
_GLOB_CHARS = re.compile(r"[*?\[]")


def _not_entry(name: str) -> str | None:
    """Why a text symbol is not a function entry point, or None."""
    if ".cold" in name:
        base = name.split(".cold", 1)[0]
        return f"{name} is the cold (out-of-line) part of {base}, not an entry point: probe {base}"
    if name.startswith("__pfx_"):
        return f"{name} is the padding before {name[6:]}, not a function: probe {name[6:]}"
    if name.startswith("__cfi_"):
        return f"{name} is the CFI preamble of {name[6:]}, not a function: probe {name[6:]}"
    return None


@dataclass(frozen=True)
class Profile:
    release: str
    functions: frozenset[str]  # probe-able text symbols of vmlinux, blacklisted ones included
    blacklist: frozenset[str]  # names in /sys/kernel/debug/kprobes/blacklist
    config: dict[str, str]  # CONFIG_* -> value (strings unquoted; unset options absent)
    # name -> kallsyms type of every vmlinux symbol (first occurrence), for precise messages
    types: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # names of text symbols that are not probe-able, with the reason
    not_probeable: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # module symbol -> module name, of modules loaded during the capture
    module_symbols: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # (address, type, name) of every vmlinux symbol, in address order, for system_map()
    entries: tuple[tuple[int, str, str], ...] = field(default=(), repr=False, compare=False)
    # probe-able names that several vmlinux functions share (static functions of different
    # files): register_kprobe attaches to the first of them only
    ambiguous: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    # -- queries ----------------------------------------------------------------------------

    @property
    def probeable(self) -> frozenset[str]:
        return self.functions - self.blacklist

    def suggestions(self, symbol: str, n: int = 3) -> list[str]:
        """Up to n existing probe-able names close to `symbol`: the same name with a compiler
        suffix (.isra.0, .constprop.0, .part.0), syscall wrappers, then difflib's nearest."""
        probeable = self.probeable
        out: list[str] = []

        def add(name: str) -> None:
            if name in probeable and name not in out and name != symbol:
                out.append(name)

        for name in sorted(f for f in probeable if f.startswith(symbol + ".")):
            add(name)
        base = symbol.split(".", 1)[0]
        if base != symbol:
            add(base)
        bare = re.sub(r"^(__x64_sys_|__ia32_sys_|__se_sys_|__do_sys_|ksys_|sys_)", "", base)
        for pre in ("__x64_sys_", "ksys_", "__do_sys_", "do_sys_"):
            add(pre + bare)
        if len(out) < n:
            for name in difflib.get_close_matches(symbol, probeable, n=n, cutoff=0.6):
                add(name)
        return out[:n]

    def _hint(self, symbol: str) -> str:
        s = self.suggestions(symbol)
        return f"; did you mean {', '.join(s)}?" if s else ""

    def check(self, symbol: str) -> None:
        """SymbolError unless `symbol` is a function of this kernel that kprobes can probe."""
        where = f"kernel {self.release}"
        if symbol in self.blacklist:
            raise SymbolError(
                f"symbol {symbol} is in the kprobe blacklist of {where} (register_kprobe refuses it "
                "with -EINVAL): probe a caller or callee instead"
            )
        if symbol in self.functions:
            return
        if symbol in self.not_probeable:
            raise SymbolError(f"symbol {symbol} cannot be probed in {where}: {self.not_probeable[symbol]}")
        if symbol in self.types:
            raise SymbolError(
                f"symbol {symbol} in {where} is not a function (kallsyms type {self.types[symbol]}): "
                f"kprobes need a function{self._hint(symbol)}"
            )
        if symbol in self.module_symbols:
            raise SymbolError(
                f"symbol {symbol} belongs to module {self.module_symbols[symbol]}, not to the {where} "
                f"image: kprobegen probes built-in functions only{self._hint(symbol)}"
            )
        raise SymbolError(f"symbol {symbol} does not exist in {where}{self._hint(symbol)}")

    def expand(self, pattern: str) -> list[str]:
        """The probe-able functions matched by the fnmatch glob `pattern`, sorted. A name with no
        glob characters is checked and returned alone. SymbolError when nothing remains."""
        if not _GLOB_CHARS.search(pattern):
            self.check(pattern)
            return [pattern]
        rx = re.compile(fnmatch.translate(pattern))
        matched = [f for f in self.functions if rx.match(f)]
        ok = sorted(f for f in matched if f not in self.blacklist)
        if ok:
            return ok
        black = sorted(f for f in matched if f in self.blacklist)
        msg = f"No functions matched by pattern {pattern!r} in kernel {self.release}"
        if black:
            shown = ", ".join(black[:10]) + (f", … ({len(black)} in all)" if len(black) > 10 else "")
            msg += f": the only matches are in the kprobe blacklist: {shown}"
        else:
            msg += ": check the pattern against `grep` of the kernel's /proc/kallsyms"
        raise SymbolError(msg)

    def system_map(self) -> str:
        """System.map-format text (`address type name`, address order) of vmlinux's symbols,
        with the addresses of the booted kernel (KASLR: valid for that boot's layout only)."""
        if not self.entries:
            raise KernelError(f"the profile of {self.release} holds no symbols: capture it again")
        if all(a == 0 for a, _, _ in self.entries[:1000]):
            raise KernelError(
                f"the kallsyms of {self.release} was captured without addresses (kptr_restrict or "
                "not root): capture the profile again as root"
            )
        return "".join(f"{a:016x} {t} {n}\n" for a, t, n in self.entries)


# --------------------------------------------------------------------------------------------
# Parsing


def _raw_bytes(data: bytes | str) -> bytes:
    """A raw text's bytes: a str encoded, gzip-compressed bytes decompressed."""
    if isinstance(data, str):
        return data.encode()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return _raw_bytes(data).decode("utf-8", errors="replace")


def parse_kallsyms(text: str):
    """[(address, type, name, module or None)] of the well-formed lines; others are skipped."""
    out = []
    for line in text.splitlines():
        m = _KALLSYMS_LINE.match(line)
        if m:
            out.append((int(m.group(1), 16), m.group(2), m.group(3), m.group(4)))
    return out


def parse_blacklist(text: str) -> frozenset[str]:
    """Names of /sys/kernel/debug/kprobes/blacklist lines: `0xSTART-0xEND<TAB>name [module]`."""
    return frozenset(m.group(3) for m in map(_BLACKLIST_LINE.match, text.splitlines()) if m)


def profile_from_raw(release: str, raw: Mapping[str, bytes | str]) -> Profile:
    """Build a Profile from the raw texts {"kallsyms", "blacklist", "config"} (bytes, plain or
    gzip-compressed; "blacklist" and "config" may be missing or empty)."""
    syms = parse_kallsyms(_text(raw.get("kallsyms")))
    if not syms:
        raise KernelError(f"the kernel profile of {release} holds no kallsyms lines: capture it again")
    blacklist = parse_blacklist(_text(raw.get("blacklist")))
    config = parse_config(_text(raw.get("config")))

    bounds = {n: a for a, _, n, mod in syms
              if mod is None and n in ("_stext", "_etext", "_sinittext", "_einittext")}
    lo, hi = bounds.get("_stext"), bounds.get("_etext")
    init_lo, init_hi = bounds.get("_sinittext"), bounds.get("_einittext")
    have_addrs = any(a for a, _, _, _ in syms[:1000])
    types: dict[str, str] = {}
    text_count: dict[str, int] = {}
    functions: set[str] = set()
    not_probeable: dict[str, str] = {}
    modules: dict[str, str] = {}
    entries = []
    for addr, typ, name, mod in syms:
        if mod is not None:
            modules.setdefault(name, mod)
            continue
        entries.append((addr, typ, name))
        types.setdefault(name, typ)
        if typ not in TEXT_TYPES:
            continue
        text_count[name] = text_count.get(name, 0) + 1
        why = _not_entry(name)
        if why is None and have_addrs and lo is not None and hi is not None and not lo <= addr < hi:
            if init_lo is not None and init_hi is not None and init_lo <= addr < init_hi:
                why = f"{name} is init code, freed after boot"
            else:
                why = f"{name} lies outside the kernel's text [_stext, _etext)"
        if why is None:
            functions.add(name)
        elif name not in functions:
            not_probeable.setdefault(name, why)
    for name in functions:  # a duplicate name with one probe-able copy is probe-able
        not_probeable.pop(name, None)
    entries.sort(key=lambda e: e[0])
    return Profile(
        release=release,
        functions=frozenset(functions),
        blacklist=blacklist,
        config=config,
        types=types,
        not_probeable=not_probeable,
        module_symbols=modules,
        entries=tuple(entries),
        ambiguous=frozenset(n for n in functions if text_count.get(n, 0) > 1),
    )


# --------------------------------------------------------------------------------------------
# The cache


def profile_dir(release: str) -> Path:
    return cache_dir() / "profiles" / release


def profile_cached(release: str) -> bool:
    """Whether the profile of ``release`` is in the cache (loading it boots nothing)."""
    return (profile_dir(release) / "kallsyms.gz").is_file()


# Part of the parsed profile's cache key: bumped when Profile gains or changes a field.
PARSED_FORMAT = 2


#: Boots a kernel once and returns the raw texts of its profile (``RAW_NAMES``); the load
#: stage provides it (``kprobegen.vm.capture_profile``), so this module never imports a VM.
Capture = Callable[["Kernel"], Mapping[str, "bytes | str"]]


def load_profile(kernel: Kernel, capture: Capture | None = None,
                 progress: Callable[[str], None] | None = None) -> Profile:
    """The kernel's profile from the cache; if absent, ``capture`` it once (booting the
    kernel) and cache what it returns; without ``capture``, a KernelError says none is
    cached. The config falls back to the packaged config-<release> when the capture has none
    (the cloud kernels have no /proc/config.gz)."""
    pdir = profile_dir(kernel.release)
    if not profile_cached(kernel.release):
        if capture is None:
            raise KernelError(
                f"no kernel profile cached for {kernel.release} in {pdir}: capture one "
                "(it boots the kernel once, a few seconds)"
            )
        # One capture per kernel at a time: a second process waits, then finds it cached.
        with lock(pdir.parent / f".lock-{kernel.release}"):
            if not profile_cached(kernel.release):
                if progress:
                    progress(Notice(f"capturing the kernel profile of {kernel.release} (symbols, kprobe blacklist): "
                                    "booting it once, typically 10-30 s under TCG; cached afterwards"))
                started = time.monotonic()
                raw = capture(kernel)
                save_raw_profile(kernel.release, raw)
                if progress:
                    progress(Notice(f"kernel profile of {kernel.release} captured in "
                                    f"{time.monotonic() - started:.1f} s, cached in {pdir}"))
    stamp = tuple(_stamp(pdir / f"{n}.gz") for n in RAW_NAMES)
    memo_key = (PARSED_FORMAT, str(pdir), stamp, str(kernel.config))
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    # Parsing kallsyms is the slow part of loading a profile (bench/README.md): keep the parsed
    # profile beside the raw files, valid while their stamps (and the config path) are unchanged.
    parsed = pdir / "parsed.pickle"
    try:
        with open(parsed, "rb") as fh:
            key, profile = pickle.load(fh)
        if key == memo_key and isinstance(profile, Profile):
            _MEMO[memo_key] = profile
            return profile
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
        # ImportError: a pickle of an older kprobegen that kept Profile in another module
        pass
    raw = {}
    for name in RAW_NAMES:
        f = pdir / f"{name}.gz"
        if f.is_file():
            try:
                raw[name] = gzip.decompress(f.read_bytes())
            except (OSError, EOFError) as e:
                raise KernelError(f"the cached kernel profile {f} is damaged ({e}): delete {pdir} "
                                  "and capture it again") from None
    if not raw.get("config") and kernel.config is not None:
        raw["config"] = kernel.config.read_bytes()
    profile = profile_from_raw(kernel.release, raw)
    if len(_MEMO) >= 4:
        _MEMO.clear()
    _MEMO[memo_key] = profile
    try:
        atomic_write(parsed, pickle.dumps((memo_key, profile), protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:
        pass  # a read-only cache only costs the parse next time
    return profile


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# Parsed profiles of this process, keyed by cache folder + file stamps (a CLI run may ask
# several times, and parsing kallsyms is not free).
_MEMO: dict[tuple, Profile] = {}


def save_raw_profile(release: str, raw: Mapping[str, bytes | str]) -> Path:
    """Store the raw texts gzip-compressed in cache_dir()/profiles/<release>/, replacing what
    is there. Safe against concurrent saves and readers: each file is written under a unique
    name and renamed into place, and kallsyms.gz, whose presence marks a complete profile,
    comes last. (Swapping the whole folder would leave readers a moment with no profile.)"""
    pdir = profile_dir(release)
    if not raw.get("kallsyms"):
        raise KernelError(f"the captured profile of {release} has no kallsyms")
    pdir.mkdir(parents=True, exist_ok=True)
    for name in sorted(RAW_NAMES, key=lambda n: n == "kallsyms"):
        data = raw.get(name)
        if data is None:
            (pdir / f"{name}.gz").unlink(missing_ok=True)
            continue
        atomic_write(pdir / f"{name}.gz", gzip.compress(_raw_bytes(data), compresslevel=6, mtime=0))
    return pdir
