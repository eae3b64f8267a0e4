# SPDX-License-Identifier: GPL-2.0-only
# The seng iptables extension (libxt_seng.so) with iptables-legacy and ip6tables-legacy and the real
# seng.ko: seng.ko loads on demand, the .t files of /vmtest/xt (add, save, list, delete by
# specification, save | restore byte for byte), the error messages, and the listed forms.
. /vmtest/lib.sh
. /vmtest/xt/xt.sh

xt_preflight legacy
xt_suite legacy
xt_errors legacy
xt_listing legacy
xt_done
