# SPDX-License-Identifier: GPL-2.0-only
# The SENG server's use of the library: a C++ program built with the server's CMake lines (this
# repository as its seng-netfilter submodule) makes the server's calls in its order, checking
# the table with `seng save` after each step, and bad calls get their errno and one line on
# stderr. $CONSUMER may name another build of it (e.g. against the installed -dev package).
. /vmtest/lib.sh

CONSUMER=${CONSUMER:-/usr/local/bin/seng-server-consumer}

run $MODPROBE seng
run env SENG=/usr/local/bin/seng $CONSUMER
assert_contains "$OUT" "checks, 0 failed" "the server-like consumer"
