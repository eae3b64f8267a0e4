# SPDX-License-Identifier: GPL-2.0-only
# A process without CAP_NET_ADMIN is refused with a message saying so, receives no event (on
# 5.10 too, whose genetlink cannot refuse it the event group), and a missing module is
# reported with the command that loads it; `seng` loads the module itself when it can (the
# family's module alias).
. /vmtest/lib.sh

SENG=/usr/local/bin/seng
A=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0

# as_nobody CMD: runs CMD through sh as uid 65534; exit status in $RC, output in $OUT.
as_nobody() {
	echo "+ (nobody) $*"
	OUT=$(su -s /bin/sh nobody -c "$*" 2>&1)
	RC=$?
	[ -z "$OUT" ] || printf '%s\n' "$OUT"
}

grep -q '^nobody:' /etc/passwd || echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >>/etc/passwd
as_nobody id -u
assert_eq "$OUT" 65534 "uid of the unprivileged user"

run $MODPROBE seng
run $SENG enclave add 192.168.28.10 --app $A --host 10.0.0.5
echo "enclave add 192.168.28.11 --app $A --host 10.0.0.5" >/tmp/nl-perm.script
chmod 644 /tmp/nl-perm.script
for cmd in "list" "get 192.168.28.10" "stats" "flush" "save" "enclave del 192.168.28.10" \
	"enclave add 192.168.28.12 --app $A --host 10.0.0.5" "app cat add $A Mail" \
	"restore /tmp/nl-perm.script"; do
	as_nobody $SENG $cmd
	assert_eq "$RC" 1 "exit status of unprivileged \`seng $cmd\`"
	assert_contains "$OUT" "permission denied: reading or changing the seng table needs CAP_NET_ADMIN" "unprivileged \`seng $cmd\`"
done
run $SENG list
assert_eq "$OUT" "192.168.28.10 app $A host 10.0.0.5" "table after refused unprivileged commands"

# Events reach only listeners with CAP_NET_ADMIN. `seng monitor` refuses up front; a raw
# listener is refused the group where genetlink can do that (6.1 and later) and on 5.10 joins
# but gets nothing, while a root monitor sees every change.
as_nobody timeout 10 $SENG monitor
assert_eq "$RC" 1 "exit status of unprivileged \`seng monitor\`"
assert_contains "$OUT" "permission denied: reading or changing the seng table needs CAP_NET_ADMIN" "unprivileged \`seng monitor\`"
monitor_start /tmp/nl-perm-mon
# The listener counts until its input ends, which the test closes once the root monitor saw the
# changes.
rm -f /tmp/nl-perm-fifo
mkfifo /tmp/nl-perm-fifo
/usr/local/bin/nlprobe listen 65534 </tmp/nl-perm-fifo >/tmp/nl-perm-listen 2>&1 &
listener=$!
exec 3>/tmp/nl-perm-fifo
joined() { grep -qE '^(listening|refused)$' /tmp/nl-perm-listen; }
retry 50 joined || fail "nlprobe listen did not start: $(cat /tmp/nl-perm-listen)"
run $SENG enclave add 192.168.28.13 --app $A --host 10.0.0.5 --cat Mail
run $SENG app cat del $A Mail
run $SENG enclave del 192.168.28.13
seen() { grep -q '^enclave del 192.168.28.13$' /tmp/nl-perm-mon; }
retry 50 seen || fail "the root monitor missed the changes: $(cat /tmp/nl-perm-mon)"
exec 3>&-
wait $listener
kill $MONITOR
wait $MONITOR
case "$(uname -r)" in
5.10.*) want="listening
events 0" ;;
*) want=refused ;;
esac
assert_eq "$(cat /tmp/nl-perm-listen)" "$want" "what an unprivileged listener got"

# No module and no way to load it: the error says how to load it.
run $RMMOD seng
modprobe_path=$(cat /proc/sys/kernel/modprobe)
echo >/proc/sys/kernel/modprobe
OUT=$($SENG list 2>&1)
RC=$?
echo "$modprobe_path" >/proc/sys/kernel/modprobe
echo "$OUT"
assert_eq "$RC" 1 "exit status without the module"
assert_contains "$OUT" "the seng kernel module is not loaded" "message without the module"
assert_contains "$OUT" "modprobe seng" "message without the module"

# With module loading possible, the family lookup loads seng.ko on demand.
run $SENG stats
grep -q '^seng ' /proc/modules || fail "seng was not loaded on demand"
