# SPDX-License-Identifier: GPL-2.0-only
# `seng restore` replaces the table atomically from a script: 100k enclaves in one batched
# transaction, `seng save | seng restore` round trips exactly, every script command (flush
# included) applies in order to the staging table, a script the module refuses or that has an
# error leaves the live table untouched, with the error naming file and line (also of a
# refusal deep inside a batch), and `--test` only checks a script.
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
BENCH=/usr/local/bin/seng-bench
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0
B=d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792
N=100000
# A light run restores a tenth: every allocation is tracked by KASAN and kmemleak there.
light && N=10000

stat_of() { $SENG stats | awk -v k="$1" '$1 == k { print $2 }'; }

run $MODPROBE seng
$BENCH gen $N >/tmp/nl-gen || fail "seng-bench gen failed"
run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5
run $SENG restore /tmp/nl-gen
assert_eq "$(stat_of enclaves) $(stat_of apps)" "$N 16" "enclaves and apps after restoring $N"
$SENG get 192.168.28.10 >/dev/null 2>&1 && fail "an enclave absent from the script survived the restore"
$SENG save >/tmp/nl-saved || fail "seng save failed"
sort /tmp/nl-gen >/tmp/nl-gen.sorted
sort /tmp/nl-saved >/tmp/nl-saved.sorted
cmp -s /tmp/nl-gen.sorted /tmp/nl-saved.sorted || fail "seng save differs from the restored script: $(diff /tmp/nl-gen.sorted /tmp/nl-saved.sorted | head -n 5)"

# Round trip through a pipe, standard input included.
run $SENG flush
$SENG restore - </tmp/nl-saved || fail "restore from standard input failed"
$SENG save | $SENG restore || fail "seng save | seng restore failed"
$SENG save >/tmp/nl-saved2
cmp -s /tmp/nl-saved /tmp/nl-saved2 || fail "save after save | restore differs"

# Every command of the script language folds into the restored table.
cat >/tmp/nl-mixed <<SCRIPT
# comment
enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Browser
enclave add 192.168.28.11 --app $A --host 10.0.0.6
seng enclave add fd00:28::12 --app $B --host fd00::1 --cat "Web Mail"
app cat add $A Mail
app cat del $A Browser
enclave del 192.168.28.11
SCRIPT
run $SENG restore /tmp/nl-mixed
run $SENG save
assert_eq "$OUT" "enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Mail
enclave add fd00:28::12 --app $B --host fd00::1 --cat \"Web Mail\"" "table restored from a mixed script"

# Commands keep their order across packed messages: removals between runs of additions, and a
# flush that drops what came before it.
{
	echo "enclave add 10.7.7.7 --app $B --host 10.0.0.9"
	echo flush
	sed -n '1,600p' /tmp/nl-gen
	echo "enclave del 10.0.0.249"
	echo "enclave del 10.0.0.1"
	sed -n '601,1200p' /tmp/nl-gen
	echo "enclave del $(sed -n '700p' /tmp/nl-gen | cut -d' ' -f3)"
	echo "enclave add 10.0.0.1 --app $A --host 10.0.0.5"
} >/tmp/nl-order
run $SENG restore /tmp/nl-order
assert_eq "$(stat_of enclaves)" 1198 "enclaves after a script of additions, removals and a flush"
$SENG get 10.7.7.7 >/dev/null 2>&1 && fail "an enclave added before the script's flush survived"
$SENG get 10.0.0.249 >/dev/null 2>&1 && fail "an enclave the script removed survived"
run $SENG get 10.0.0.1
assert_eq "$OUT" "10.0.0.1 app $A host 10.0.0.5" "an enclave removed and added again by the script"
run $SENG restore /tmp/nl-mixed
gen=$(stat_of generation)

# Bad input: exit 2, file and line named, nothing changed.
sed -n '1,500p' /tmp/nl-gen >/tmp/nl-bad
echo "enclave add 10.9.9.9 --app $A --host 10.0.0.300" >>/tmp/nl-bad
OUT=$($SENG restore /tmp/nl-bad 2>&1)
assert_eq "$?" 2 "exit status of a restore with a bad line"
assert_contains "$OUT" "/tmp/nl-bad:501:" "error position"
assert_contains "$OUT" "bad address \"10.0.0.300\"" "error text"
echo "enclave del 10.1.1.1" >/tmp/nl-bad2
OUT=$($SENG restore /tmp/nl-bad2 2>&1)
assert_eq "$?" 2 "exit status of a restore deleting an unknown enclave"
assert_contains "$OUT" "/tmp/nl-bad2:1: not found: address is not a registered enclave; the live table is unchanged" "error text"
# A refusal inside a packed message names its own line: the 33rd category of one application.
{
	sed -n '1,300p' /tmp/nl-gen
	i=1
	while [ $i -le 33 ]; do
		echo "enclave add 10.8.0.$i --app $A --host 10.0.0.5 --cat c$i"
		i=$((i + 1))
	done
	sed -n '301,400p' /tmp/nl-gen
} >/tmp/nl-cats
OUT=$($SENG restore /tmp/nl-cats 2>&1)
assert_eq "$?" 1 "exit status of a restore the module refuses"
assert_contains "$OUT" "/tmp/nl-cats:333: no room: application has too many categories" "line of the refused enclave"
OUT=$($SENG restore /tmp/nonexistent 2>&1)
assert_eq "$?" 2 "exit status of a restore of a missing file"
# --test checks a script and says what it describes, touching nothing.
run $SENG restore --test /tmp/nl-gen
assert_eq "$OUT" "/tmp/nl-gen: a table of $N enclaves of 16 applications" "restore --test of a good script"
OUT=$($SENG restore --test /tmp/nl-bad 2>&1)
assert_eq "$?" 2 "exit status of restore --test of a bad script"
assert_contains "$OUT" "/tmp/nl-bad:501:" "restore --test error position"
assert_eq "$(stat_of generation)" "$gen" "generation after refused and tested restores"

# Refused by the module (over capacity): exit 1, the live table untouched.
run $RMMOD seng
run $MODPROBE seng capacity=1000
run $SENG restore /tmp/nl-mixed
gen=$(stat_of generation)
sed -n '1,1001p' /tmp/nl-gen >/tmp/nl-1001
OUT=$($SENG restore /tmp/nl-1001 2>&1)
assert_eq "$?" 1 "exit status of a restore over capacity"
assert_contains "$OUT" "no room: the enclave table is full (its size is the capacity module parameter)" "over-capacity message"
run $SENG save
assert_eq "$OUT" "enclave add 192.168.28.10 --app $A --host 10.0.0.5 --cat Mail
enclave add fd00:28::12 --app $B --host fd00::1 --cat \"Web Mail\"" "table after a refused restore"
assert_eq "$(stat_of generation)" "$gen" "generation after a refused restore"
sed -n '1,1000p' /tmp/nl-gen >/tmp/nl-1000
run $SENG restore /tmp/nl-1000
assert_eq "$(stat_of enclaves)" 1000 "a full table restores"
