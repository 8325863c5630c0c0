// SPDX-License-Identifier: GPL-2.0
/*
 * The hand-written baseline for bench/build_bench.py: what a kernel engineer writes to count
 * ksys_sync calls (one kprobe, a per-CPU counter, one line at unload).
 */
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/percpu.h>

static DEFINE_PER_CPU(u64, hits);

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	this_cpu_inc(hits);
	return 0;
}

static struct kprobe kp = {
	.symbol_name = "ksys_sync",
	.pre_handler = pre,
};

static int __init sync_count_init(void)
{
	return register_kprobe(&kp);
}

static void __exit sync_count_exit(void)
{
	u64 total = 0;
	int cpu;

	unregister_kprobe(&kp);
	for_each_possible_cpu(cpu)
		total += per_cpu(hits, cpu);
	pr_info("sync_count: hits=%llu missed=%lu\n", total, kp.nmissed);
}

module_init(sync_count_init);
module_exit(sync_count_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("hand-written ksys_sync counter");
