# SPDX-License-Identifier: GPL-2.0-only
# seng.ko refuses malformed netlink messages with the right errno and message, and refuses every
# command from a process without CAP_NET_ADMIN.
. /vmtest/lib.sh

run $MODPROBE seng
run /usr/local/bin/nlprobe malformed
run /usr/local/bin/nlprobe unprivileged 65534
exit 0
