"""kprobegen: YAML hook specs → kprobe/kretprobe kernel modules → exact counts."""

__version__ = "0.1.0"
