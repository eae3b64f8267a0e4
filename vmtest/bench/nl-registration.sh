# SPDX-License-Identifier: GPL-2.0-only
# seng-nl figures: registrations per second (one acked message per enclave, and batched), the
# time `seng restore` takes to replace the table with 1M enclaves (target: under 5 s), and the
# time `seng save` takes to dump them. Prints figures only; nothing is asserted.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
BENCH=/usr/local/bin/seng-bench

$MODPROBE seng
echo "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU(s) under QEMU TCG"
$BENCH register 10000 --single
$SENG flush
$BENCH register 200000 --batch
$SENG flush

$BENCH gen 1000000 >/tmp/nl-1m
echo "script: $(wc -l </tmp/nl-1m) lines, $(wc -c </tmp/nl-1m) bytes"
timed "reading and checking the script alone (restore --test)" $SENG restore --test /tmp/nl-1m
# table_kb: slab plus vmalloc memory in KiB (the table's nodes and its slot arrays).
table_kb() { awk '$1 == "Slab:" || $1 == "VmallocUsed:" { kb += $2 } END { print kb }' /proc/meminfo; }
before=$(table_kb)
timed "restore 1M enclaves into an empty table" $SENG restore /tmp/nl-1m
# Replaced slot arrays are freed after a grace period: let that happen first.
sleep 2
echo "kernel memory of the 1M-enclave table: $((($(table_kb) - before) / 1024)) MiB (slab and vmalloc)"
$SENG stats | tr '\n' ' '
echo
timed "restore 1M enclaves over the same 1M" $SENG restore /tmp/nl-1m
timed "save 1M enclaves" $SENG save
timed "flush 1M enclaves" $SENG flush
