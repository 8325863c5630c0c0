// SPDX-License-Identifier: GPL-2.0
/*
 * Hand-written test module for kprobegen's VM tests: counts ksys_sync with a
 * kprobe in a per-CPU counter and prints a report (docs/report-protocol.md,
 * version 1) at unload.  Written by hand, on purpose, so that the VM runner
 * can be tested without the generator.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/percpu.h>
#include <linux/utsname.h>
#include <linux/ktime.h>

#define MOD "kpg_hand_sync"

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

static int __init hand_init(void)
{
	int ret;

	pr_info("kprobegen/1 " MOD " 0 load kernel=%s hooks=1 protocol=1\n",
		utsname()->release);
	ret = register_kprobe(&kp);
	if (ret < 0) {
		pr_info("kprobegen/1 " MOD " 1 error hook=sync symbol=ksys_sync err=%d\n", ret);
		return ret;
	}
	return 0;
}

static void __exit hand_exit(void)
{
	u64 total = 0;
	int cpu;

	unregister_kprobe(&kp);
	for_each_possible_cpu(cpu)
		total += per_cpu(hits, cpu);
	pr_info("kprobegen/1 " MOD " 1 begin report=0 reason=unload ts_ns=%llu lines=1\n",
		(unsigned long long)ktime_get_ns());
	pr_info("kprobegen/1 " MOD " 2 hook name=sync probe=kprobe symbol=ksys_sync hits=%llu missed=%lu dropped=0 disarmed=0 by=- keys=0 hist=0\n",
		(unsigned long long)total, kp.nmissed);
	pr_info("kprobegen/1 " MOD " 3 end report=0 lines=1\n");
}

module_init(hand_init);
module_exit(hand_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kprobegen VM test: count ksys_sync (hand-written)");
