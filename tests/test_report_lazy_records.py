"""Instance.records of a load seen as one rising run is built on first read: same dict as
the general path gives, and the frames found from the run are the same."""

from kprobegen.report import parse_log

LINES = [
    "kprobegen/1 m 0 load kernel=6.1.0 hooks=1 protocol=1",
    "kprobegen/1 m 1 begin report=0 reason=unload ts_ns=5 lines=1",
    "kprobegen/1 m 2 hook name=h probe=kprobe symbol=s hits=0 missed=0 dropped=0 disarmed=0 by=- keys=0 hist=0",
    "kprobegen/1 m 3 end report=0 lines=1",
]


def test_one_run_records_dict_is_built_on_read():
    p = parse_log("\n".join(LINES) + "\n")
    (inst,) = p.instances
    assert inst.kernel == "6.1.0" and inst.hooks == 1
    recs = inst.records
    assert type(recs) is dict
    assert list(recs) == [0, 1, 2, 3]
    assert recs[2] == (2, "hook", LINES[2].split(" ", 4)[4], 3)
    assert inst.records is recs          # built once
    (f,) = p.frames
    assert f.complete and f.records == [recs[2]]


def test_lazy_instance_equals_general_path_instance():
    one = parse_log("\n".join(LINES) + "\n").instances[0]
    # the same lines twice: two runs, the general (dict) path, duplicates dropped
    p = parse_log("\n".join(LINES + LINES) + "\n")
    assert p.duplicates == 4
    (two,) = p.instances
    assert type(two.records) is dict
    assert one == two


def test_records_can_be_replaced():
    inst = parse_log("\n".join(LINES) + "\n").instances[0]
    inst.records = {}
    assert inst.records == {}
