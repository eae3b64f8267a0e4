# SPDX-License-Identifier: GPL-2.0-only
# agent-propagation.sh at the scale of every CI run: 2,000 enclaves per gateway, 1,000 changes
# at 1,000/s, a late join of 10,000 entries. Prints figures only.
AGENT_BENCH_PER_GATEWAY=2000
AGENT_BENCH_CHANGES=1000
AGENT_BENCH_RATE=1000
AGENT_BENCH_LATE=10000
. /vmtest/bench/agent-propagation.sh
