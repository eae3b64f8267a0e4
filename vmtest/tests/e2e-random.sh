# SPDX-License-Identifier: GPL-2.0-only
# seng-sim agrees with the kernel on random scenarios (`seng-e2e random gen --seed N`: rules of
# both families over everything seng-sim models, registrations with timed changes, flows of
# traffic), through both iptables backends. Seeds 1..8 by default, or the boot's
# `vmtest.seeds=` list of seeds and ranges (`cargo xtask vmtest --seeds 1..1000` or
# `--seeds 126,246,600..610`). A seed that shows a difference is
# shrunk to a minimal scenario in the corpus format, sent to the host as
# target/vmtest/<kernel>/files/shrunk-<seed>-<backend>-{rules.txt,enclaves.txt,capture.pcap},
# ready for a directory of vmtest/scenarios/.
. /vmtest/lib.sh
. /vmtest/e2e/e2e.sh

seeds=$(cmdline seeds)
if [ -z "$seeds" ]; then
	seeds=1..8
	# A light run replays two.
	light && seeds=1..2
fi
for range in $(echo "$seeds" | tr , ' '); do
	case ${range%..*}${range#*..} in
	'' | *[!0-9]*) fail "vmtest.seeds=$seeds: expected seeds N or ranges A..B of whole numbers, separated by commas" ;;
	esac
done

e2e_kernel
# Every random scenario uses seng-sim's default network; build it once and keep it for the
# oracle's processes too.
e2e_network || fail "cannot build the network"
export E2E_DEVS E2E_NET E2E_IN_DEV E2E_CHECKSUM

replay_seed() {
	seed=$1
	dir=/tmp/e2e-random/seed-$seed
	run $E2E random gen --seed "$seed" "$dir"
	for backend in $IPTABLES_BACKENDS; do
		failed=$E2E_FAILED
		e2e_run "$dir" "$backend"
		[ $E2E_FAILED -eq "$failed" ] && continue
		case $E2E_LAST in
		*DIFFERENCE*) ;;
		*) continue ;;
		esac
		out=/tmp/e2e-random/shrunk-$seed-$backend
		e2e_console "e2e random: seed $seed [$backend] differs; shrinking"
		if $E2E random shrink --seed "$seed" --out "$out" -- sh /vmtest/e2e/random-oracle.sh "$backend"; then
			for file in rules.txt enclaves.txt capture.pcap; do
				export_file "$out/$file" "shrunk-$seed-$backend-$file"
			done
			e2e_console "e2e random: seed $seed [$backend] shrunk: $(sed -n 3p "$out/rules.txt")"
		else
			e2e_console "e2e random: seed $seed [$backend]: shrinking failed"
		fi
	done
}

for range in $(echo "$seeds" | tr , ' '); do
	next=${range%..*}
	while [ "$next" -le "${range#*..}" ]; do
		replay_seed "$next"
		next=$((next + 1))
	done
done
e2e_console "e2e random: seeds $seeds"
e2e_finish
