# SPDX-License-Identifier: GPL-2.0-only
# random-oracle.sh BACKEND DIR: the shrinker's question, asked in the guest: does the scenario
# in DIR still show a difference between the kernel and seng-sim on BACKEND? Exit 0 for yes.
# A candidate that fails otherwise (a script line the kernel refuses, an incomplete replay) is
# not the difference being shrunk: exit 1. Run by e2e-random.sh after e2e_kernel, which exports
# the network it built so that this process keeps it.
. /vmtest/lib.sh
. /vmtest/e2e/e2e.sh

E2E_WORK=/tmp/e2e-oracle
e2e_run "$2" "$1" >/dev/null 2>&1 3>/dev/null
[ $E2E_FAILED -gt 0 ] || exit 1
case $E2E_LAST in
*DIFFERENCE*) exit 0 ;;
esac
exit 1
