# SPDX-License-Identifier: GPL-2.0-only
# The seng iptables extension (libxt_seng.so) with iptables-nft and ip6tables-nft and the real
# seng.ko: seng.ko loads on demand, the .t files of /vmtest/xt (add, save, list, delete by
# specification, save | restore byte for byte), the error messages, and the listed forms.
. /vmtest/lib.sh
. /vmtest/xt/xt.sh

xt_preflight nft
xt_suite nft
xt_errors nft
xt_listing nft
xt_done
