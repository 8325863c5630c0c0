// SPDX-License-Identifier: GPL-2.0
/*
 * Hand-written benchmark module: an empty kprobe pre-handler on the symbol
 * given as a module parameter (default __x64_sys_getppid), to measure the
 * kprobe mechanism's own cost per hit (bench/probe_cost.py).
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>

static char *symbol = "__x64_sys_getppid";
module_param(symbol, charp, 0444);

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	return 0;
}

static struct kprobe kp = {
	.pre_handler = pre,
};

static int __init empty_init(void)
{
	kp.symbol_name = symbol;
	return register_kprobe(&kp);
}

static void __exit empty_exit(void)
{
	unregister_kprobe(&kp);
}

module_init(empty_init);
module_exit(empty_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kprobegen bench: empty kprobe handler (hand-written)");
