# SPDX-License-Identifier: GPL-2.0-only
# A dump never shows a torn table: 20 `seng save` runs racing a `seng flush` of 20,000 enclaves
# each print the whole table, an empty one, or nothing with a clear error ("the table changed
# during each of N dump attempts"), never part of it. The flush starts later in each round, so
# that it meets the saves at different points of their dumps; the outcomes are counted.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
BENCH=/usr/local/bin/seng-bench
N=20000
SAVES=20
# A light run races fewer, smaller dumps (process starts cost ten times more there).
light && N=5000 SAVES=8
# Seconds between starting the saves and the flush, one round each.
DELAYS="0 0.3 0.6 1.0"
W=/tmp/nl-dump-race

run $MODPROBE seng
mkdir -p $W
$BENCH gen $N >$W/script || fail "seng-bench gen failed"
whole=0
empty=0
refused=0
rounds=0
for delay in $DELAYS; do
	rounds=$((rounds + 1))
	round="$rounds (flush after ${delay} s)"
	run $SENG restore $W/script
	i=1
	while [ $i -le $SAVES ]; do
		{ $SENG save >$W/save.$i 2>$W/err.$i; echo $? >$W/rc.$i; } &
		i=$((i + 1))
	done
	sleep "$delay"
	$SENG flush || fail "seng flush failed in round $round"
	wait
	i=1
	while [ $i -le $SAVES ]; do
		rc=$(cat $W/rc.$i)
		lines=$(grep -c '^enclave add' $W/save.$i)
		if [ "$rc" = 0 ]; then
			case $lines in
			$N) whole=$((whole + 1)) ;;
			0) empty=$((empty + 1)) ;;
			*) fail "round $round, save $i printed $lines of $N enclaves: a torn table" ;;
			esac
		else
			[ "$lines" = 0 ] || fail "round $round, save $i failed (exit $rc) after printing $lines enclaves"
			grep -q "dump attempts" $W/err.$i ||
				fail "round $round, save $i failed (exit $rc) without the interrupted-dump message: $(cat $W/err.$i)"
			refused=$((refused + 1))
		fi
		i=$((i + 1))
	done
done
summary="$((rounds * SAVES)) saves racing a flush of $N: $whole whole, $empty empty, $refused refused after every retry"
log "$summary"
echo "nl-dump-race: $summary" >&3
