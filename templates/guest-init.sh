#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# PID 1 of kprobegen's full Debian guest (kprobegen image build; kprobegen vm --image).
#
# Debian's initramfs mounted the disk image as / and moved /dev, /proc, /sys and /run onto it;
# this runs the command of one boot and powers off. There is no network device. The host talks
# to it over serial ports:
#   ttyS0  the kernel console
#   ttyS1  the protocol: "KPG <nonce> <TAG> ..." lines (BOOT, EXIT rc, DONE)
#   ttyS2  the command's stdout, raw bytes
#   ttyS3  the command's stderr, raw bytes
# The command and the files it was given arrive on the second disk (/dev/vdb): a tar of
# /kpg/cmd (a shell script) and the --add files, unpacked before the command runs.
#
# With kpg.init=systemd on the kernel command line (guest.run(init="systemd")), PID 1 says
# BOOT and execs systemd instead; systemd runs this script again from kpg-guest-run.service,
# and then, not PID 1, it skips what is done already and runs the command.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
for port in ttyS1 ttyS2 ttyS3; do stty -F /dev/$port raw -echo; done
nonce=$(sed -n 's/.*kpg\.nonce=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
say() { echo "KPG $nonce $*" > /dev/ttyS1; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

if [ "$$" = 1 ]; then
	say BOOT "$(uptime_s)"
	case " $(cat /proc/cmdline) " in *" kpg.init=systemd "*) exec /lib/systemd/systemd ;; esac
fi
if tar -xf /dev/vdb -C / 2>/dev/ttyS3; then
	cd /root
	say STAGE running "$(uptime_s)"
	sh /kpg/cmd < /dev/null > /dev/ttyS2 2> /dev/ttyS3
	say EXIT $?
else
	say EXIT 127
fi
sync
say DONE "$(uptime_s)"
echo o > /proc/sysrq-trigger    # power off now (there is no init system to ask, or no need to)
sleep 60
