# SPDX-License-Identifier: GPL-2.0-only
# Helpers of the `seng agent` tests and benchmark (issue 16), sourced after lib.sh: agents of
# gateways started and stopped, a model of every gateway's table, and packets through a
# gateway's rules.
#
# The model: the test records each gateway's local part ($AGENT_DIR/local-GW: "addr app host"
# lines; $AGENT_DIR/cats-GW: "app cat..." lines) and its agent's state ($AGENT_DIR/state-GW):
#   up    the agent runs and reaches etcd: it publishes its local part and applies the others';
#   cut   the agent runs but cannot reach etcd: it publishes nothing and holds its local part only
#         (fail closed);
#   down  no agent (killed, or never started): it publishes nothing; its table is not checked.
# A gateway's table is its local part, then (if up) the local parts of every other gateway that
# is up, in the order gw-a, gw-b, gw-c, each address kept from the first part that has it: a
# local entry wins, and a gateway's entry never replaces another gateway's.

SENG=/usr/local/bin/seng
AGENT_DIR=/tmp/agent
AGENT_PREFIX=/seng/v1/
GATEWAYS="gw-a gw-b gw-c"

# Each test starts from an empty model (/tmp outlives a test).
rm -rf $AGENT_DIR
mkdir -p $AGENT_DIR


# agent_start GW [ARGS...]: starts GW's agent in the background, serving GW's namespace
# (--netns), logging to $AGENT_DIR/GW.log, its status in $AGENT_DIR/GW.status; its pid is
# kept in $AGENT_DIR/GW.pid. ARGS (e.g. --lease-ttl 3, the etcd URL) are passed on.
agent_start() {
	gw=$1
	shift
	echo "+ seng agent --name $gw --netns $gw --status-file $AGENT_DIR/$gw.status $*"
	rm -f $AGENT_DIR/$gw.status
	$SENG agent --name "$gw" --netns "$gw" --status-file "$AGENT_DIR/$gw.status" "$@" \
		>>"$AGENT_DIR/$gw.log" 2>&1 &
	echo $! >"$AGENT_DIR/$gw.pid"
}

agent_pid() { cat "$AGENT_DIR/$1.pid" 2>/dev/null; }

# agent_alive GW: whether GW's agent runs (an exited one not yet waited for is a zombie).
agent_alive() { pid=$(agent_pid "$1") && [ -n "$pid" ] && running "$pid"; }

# agent_status GW: GW's status file (empty until the agent wrote one).
agent_status() { cat "$AGENT_DIR/$1.status" 2>/dev/null; }

# agent_says GW TEXT: whether GW's status file contains TEXT.
agent_says() { case $(agent_status "$1") in *"$2"*) return 0 ;; esac; return 1; }

# agent_connected GW [TIMEOUT]: waits until GW's status says connected.
agent_connected() {
	wait_for "agent_says $1 '\"etcd\":\"connected\"'" "${2:-60}" ||
		fail "$1's agent did not connect to etcd (status: $(agent_status "$1"); log: $(tail -n 3 $AGENT_DIR/$1.log))"
}

# agent_signal GW SIGNAL: sends SIGNAL to GW's agent.
agent_signal() { kill -s "$2" "$(agent_pid "$1")" || fail "cannot send $2 to $1's agent"; }

# agent_stop GW SIGNAL: sends SIGNAL (TERM, KILL) and waits for the agent to exit; its exit
# status is left in $AGENT_RC.
agent_stop() {
	pid=$(agent_pid "$1")
	kill -s "$2" "$pid" 2>/dev/null
	wait "$pid"
	AGENT_RC=$?
	rm -f "$AGENT_DIR/$1.pid"
}

# agents_cleanup: ends every agent still running (on the test's exit).
agents_cleanup() {
	for gw in $GATEWAYS gw-late; do
		pid=$(agent_pid $gw) && [ -n "$pid" ] || continue
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		rm -f "$AGENT_DIR/$gw.pid"
	done
}

# agents_trap: on the test's exit, ends every agent, shows the logs if the test failed, and
# removes etcd and the gateways' namespaces (gw-late's too, the benchmark's late joiner).
agents_trap() { trap agents_teardown EXIT; }
agents_teardown() {
	rc=$?
	agents_cleanup
	[ $rc -eq 0 ] || agent_logs
	etcd_destroy
	for gw in $GATEWAYS gw-late; do $IP netns del $gw 2>/dev/null; done
}

# gateways: the namespaces of every gateway of $GATEWAYS (`gateway NAME INDEX`, indexes from 1).
gateways() {
	i=1
	for gw in $GATEWAYS; do
		gateway $gw $i
		i=$((i + 1))
	done
}

# agent_logs: the end of every agent's log and etcd's (shown when a test fails).
agent_logs() {
	for log in $AGENT_DIR/*.log $ETCD_LOG; do
		[ -f "$log" ] || continue
		echo "---- $log (last 25 lines)"
		tail -n 25 "$log"
	done
}

# ---- the model ----

model_state() { echo "$2" >"$AGENT_DIR/state-$1"; }
state_of() { cat "$AGENT_DIR/state-$1" 2>/dev/null || echo down; }

# reg GW ADDR APP HOST [CAT...]: registers ADDR at GW (its local SENG server) and in the model.
reg() {
	gw=$1 addr=$2 app=$3 host=$4
	shift 4
	cats=
	for c in "$@"; do cats="$cats --cat $c"; done
	# shellcheck disable=SC2086 # cats is a word list
	run in_gw "$gw" $SENG enclave add "$addr" --app "$app" --host "$host" $cats
	touch $AGENT_DIR/local-$gw $AGENT_DIR/cats-$gw
	awk -v a="$addr" '$1 != a' $AGENT_DIR/local-$gw >$AGENT_DIR/tmp
	echo "$addr $app $host" >>$AGENT_DIR/tmp
	mv $AGENT_DIR/tmp $AGENT_DIR/local-$gw
	model_prune "$gw"
	for c in "$@"; do model_cat "$gw" "$app" add "$c"; done
}

# unreg GW ADDR: unregisters ADDR at GW.
unreg() {
	run in_gw "$1" $SENG enclave del "$2"
	awk -v a="$2" '$1 != a' $AGENT_DIR/local-$1 >$AGENT_DIR/tmp
	mv $AGENT_DIR/tmp $AGENT_DIR/local-$1
	model_prune "$1"
}

# restore_local GW FILE: `seng restore` at GW of FILE (lines "ADDR APP HOST", no categories),
# which becomes its whole local part.
restore_local() {
	awk '{ print "enclave add " $1 " --app " $2 " --host " $3 }' "$2" >$AGENT_DIR/restore-$1
	run in_gw "$1" $SENG restore $AGENT_DIR/restore-$1
	cp "$2" $AGENT_DIR/local-$1
	: >$AGENT_DIR/cats-$1
}

# flush_local GW: `seng flush` at GW (its local part).
flush_local() {
	run in_gw "$1" $SENG flush
	: >$AGENT_DIR/local-$1
	: >$AGENT_DIR/cats-$1
}

# cat_add GW APP CAT, cat_del GW APP CAT: a category change of GW's application.
cat_add() {
	run in_gw "$1" $SENG app cat add "$2" "$3"
	model_cat "$1" "$2" add "$3"
}
cat_del() {
	run in_gw "$1" $SENG app cat del "$2" "$3"
	model_cat "$1" "$2" del "$3"
}

# model_cat GW APP add|del CAT
model_cat() {
	touch $AGENT_DIR/cats-$1
	awk -v app="$2" -v op="$3" -v cat="$4" '
		$1 == app { found = 1; line = $1
			for (i = 2; i <= NF; i++) if ($i != cat) line = line " " $i
			if (op == "add") line = line " " cat
			print line; next }
		{ print }
		END { if (!found && op == "add") print app, cat }' $AGENT_DIR/cats-$1 >$AGENT_DIR/tmp
	mv $AGENT_DIR/tmp $AGENT_DIR/cats-$1
}

# model_prune GW: an application goes with its last enclave, and its categories with it.
model_prune() {
	touch $AGENT_DIR/cats-$1
	awk 'FILENAME == ARGV[1] { used[$2] = 1; next } used[$1]' $AGENT_DIR/local-$1 $AGENT_DIR/cats-$1 >$AGENT_DIR/tmp
	mv $AGENT_DIR/tmp $AGENT_DIR/cats-$1
}

# model_part GW SUFFIX: GW's local part as `seng save` lines, SUFFIX (" --origin GW") appended.
model_part() {
	touch $AGENT_DIR/local-$1 $AGENT_DIR/cats-$1
	awk -v suffix="$2" 'FILENAME == ARGV[1] { cats[$1] = ""; for (i = 2; i <= NF; i++) cats[$1] = cats[$1] " --cat " $i; next }
		{ print "enclave add " $1 " --app " $2 " --host " $3 cats[$2] suffix }' \
		$AGENT_DIR/cats-$1 $AGENT_DIR/local-$1
}

# canon: `seng save` lines with their categories sorted, sorted.
canon() {
	awk '{ n = 0; line = ""; origin = ""
		for (i = 1; i <= NF; i++) {
			if ($i == "--cat") c[++n] = $(++i)
			else if ($i == "--origin") origin = $(++i)
			else line = line (line == "" ? "" : " ") $i
		}
		for (i = 2; i <= n; i++) { v = c[i]; j = i - 1; while (j > 0 && c[j] > v) { c[j + 1] = c[j]; j-- } c[j + 1] = v }
		for (i = 1; i <= n; i++) line = line " --cat " c[i]
		if (origin != "") line = line " --origin " origin
		print line }' | sort
}

# expected GW: GW's table by the model, canonical.
expected() {
	{
		model_part "$1" ""
		if [ "$(state_of "$1")" = up ]; then
			for peer in $GATEWAYS; do
				[ "$peer" != "$1" ] && [ "$(state_of "$peer")" = up ] && model_part "$peer" " --origin $peer"
			done
		fi
	} | awk '!seen[$3]++' | canon
}

# actual GW: GW's table (`seng save` in its namespace), canonical.
actual() { in_gw "$1" $SENG save | canon; }

matches_model() { [ "$(actual "$1")" = "$(expected "$1")" ]; }

# converge WHAT [TIMEOUT]: waits until every gateway that has an agent (up or cut) holds the
# table the model says, or fails naming the first that does not, with both tables.
converge() {
	for gw in $GATEWAYS; do
		[ "$(state_of $gw)" = down ] && continue
		wait_for "matches_model $gw" "${2:-30}" || {
			echo "expected at $gw:"
			expected $gw
			echo "actual at $gw:"
			actual $gw
			fail "$1: $gw's table differs from the model (state $(state_of $gw))"
		}
	done
	log "checkpoint: $1"
}

# ---- packets through a gateway's rules ----

# send GW SRC DPORT COUNT: COUNT UDP datagrams from SRC to DPORT into GW's tunFA.
send() { run in_gw "$1" $INJECT udp --dev $TUN_DEV --src "$2" --dst $TUN_ADDR --dport "$3" --count "$4"; }

# hits GW DPORT: the packet counter of GW's INPUT rule for DPORT.
hits() {
	in_gw "$1" $(iptables_for legacy) -L INPUT -v -n -x | awk -v p="dpt:$2" '$0 ~ p " " || $0 ~ p "$" { print $1; exit }'
}

# flows GW SRC: GW's conntrack entries from SRC.
flows() { in_gw "$1" $CONNTRACK -L 2>/dev/null | grep -c "src=$2 "; }
