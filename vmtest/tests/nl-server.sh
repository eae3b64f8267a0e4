# SPDX-License-Identifier: GPL-2.0-only
# The SENG server's use of the library: a C++ program built with the server's CMake lines (this
# repository as its seng-netfilter submodule) makes the server's calls in its order, checking
# the table with `seng save` after each step, and bad calls get their errno and one line on
# stderr. Builds of it against the installed -dev package (seng-server-consumer-*, from
# `cargo xtask deb --test`) run too when the guest has them.
. /vmtest/lib.sh

run $MODPROBE seng
for consumer in /usr/local/bin/seng-server-consumer*; do
	run env SENG=/usr/local/bin/seng $consumer
	assert_contains "$OUT" "checks, 0 failed" "$consumer"
done
