"""Instance.records (SEQ → record) is the same whether the load was seen as one rising run of
lines (the fast path, whose dict is built only when read) or through the general path (the
same lines twice: two runs, duplicates dropped); so are the frames found from them."""

from kprobegen.report import Record, parse_log

LINES = [
    "kprobegen/1 m 0 load kernel=6.1.0 hooks=1 protocol=1",
    "kprobegen/1 m 1 begin report=0 reason=unload ts_ns=5 lines=1",
    "kprobegen/1 m 2 hook name=h probe=kprobe symbol=s hits=0 missed=0 dropped=0 disarmed=0 by=- keys=0 hist=0",
    "kprobegen/1 m 3 end report=0 lines=1",
]


def test_records_of_a_load_seen_as_one_run():
    p = parse_log("\n".join(LINES) + "\n")
    (inst,) = p.instances
    assert inst.kernel == "6.1.0" and inst.hooks == 1
    recs = inst.records
    assert isinstance(recs, dict)
    assert list(recs) == [0, 1, 2, 3]
    assert recs[2] == (2, "hook", LINES[2].split(" ", 4)[4], 3)
    assert Record._make(recs[2]).fields == LINES[2].split(" ", 4)[4]
    assert inst.records == recs          # the same when read again
    (f,) = p.frames
    assert f.complete and f.records == [recs[2]]


def test_fast_path_instance_agrees_with_general_path_instance():
    one = parse_log("\n".join(LINES) + "\n")
    p = parse_log("\n".join(LINES + LINES) + "\n")
    assert p.duplicates == 4
    (two,) = p.instances
    assert isinstance(two.records, dict)
    assert one.instances[0] == two
    assert [f.results() for f in one.frames] == [f.results() for f in p.frames]


def test_records_can_be_replaced():
    inst = parse_log("\n".join(LINES) + "\n").instances[0]
    inst.records = {}
    assert inst.records == {}
