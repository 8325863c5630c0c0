// SPDX-License-Identifier: GPL-2.0
/*
 * Hand-written test module for kprobegen's VM tests: its init prints a line
 * and fails with -EINVAL, so insmod must fail and nothing may stay loaded.
 */
#include <linux/module.h>
#include <linux/kernel.h>

static int __init einval_init(void)
{
	pr_err("kpg_hand_einval: refusing to load on purpose (test of a failing init)\n");
	return -EINVAL;
}

static void __exit einval_exit(void)
{
}

module_init(einval_init);
module_exit(einval_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kprobegen VM test: init fails with -EINVAL (hand-written)");
