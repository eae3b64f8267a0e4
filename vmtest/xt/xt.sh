# SPDX-License-Identifier: GPL-2.0-only
# Runner for the `.t` files of the seng iptables extension (vmtest/xt/*.t), in the format of
# iptables' own extension tests, for busybox sh in the VM guest. Source it after
# /vmtest/lib.sh; the tests vmtest/tests/xt-*.sh call it once per backend.
#
# A `.t` file has chain headers (`:INPUT,FORWARD,OUTPUT`) and rule lines
# `rule;saved-form-or-=;OK|FAIL`. The file name picks the tools: libipt_* iptables,
# libip6t_* ip6tables, libxt_* both. For every rule line and chain of its header:
#   OK:   `-A CHAIN rule` succeeds, `<tool>-save` shows exactly `-A CHAIN saved-form`,
#         `-L CHAIN` shows the seng match, `-D CHAIN rule` (delete by specification) succeeds
#         and leaves the chain empty;
#   FAIL: `-A CHAIN rule` fails and the chain stays empty.
# Then all OK rules go in together and `<tool>-save | <tool>-restore` must reproduce the same
# `<tool>-save` output byte for byte.
# Rule text is read by the shell (eval), so it may quote, e.g. `--src-cat "My App"`.

XT_DIR=/vmtest/xt
XT_WORK=/tmp/xt
# Number of failed checks and the first failure, for the test's one-line reason.
XT_FAILED=0
XT_FIRST=
# The backend under test (legacy or nft), for xt_cleanup.
XT_BACKEND=

# xt_cleanup: empties the filter tables this runner fills, also when a test ends early, so
# that seng.ko is unused again and the next test starts without it.
xt_cleanup() {
	[ -n "$XT_BACKEND" ] || return 0
	/usr/sbin/iptables-$XT_BACKEND -t filter -F 2>/dev/null
	/usr/sbin/ip6tables-$XT_BACKEND -t filter -F 2>/dev/null
	return 0
}
trap xt_cleanup EXIT

# xt_bad WHAT: records a failed check and goes on with the next one.
xt_bad() {
	echo "FAIL: $*"
	XT_FAILED=$((XT_FAILED + 1))
	[ -n "$XT_FIRST" ] || XT_FIRST=$*
}

# xt_tools FILE: the tool families a .t file is for.
xt_tools() {
	case $(basename "$1") in
	libipt_*) echo iptables ;;
	libip6t_*) echo ip6tables ;;
	*) echo "iptables ip6tables" ;;
	esac
}

# xt_rules TOOL CHAIN: the chain's rules as <tool>-save prints them.
xt_rules() {
	"$1-save" -t filter | grep -e "^-A $2 " || true
}

# xt_line TOOL CHAIN RULE SAVED RESULT: checks one rule line on one chain.
xt_line() {
	local tool=$1 chain=$2 rule=$3 saved=$4 result=$5 out got listed
	eval "set -- $rule"
	if [ "$result" = FAIL ]; then
		if out=$("$tool" -A "$chain" "$@" 2>&1); then
			xt_bad "$tool -A $chain $rule: accepted, expected FAIL"
			"$tool" -D "$chain" "$@" >/dev/null 2>&1
			return
		fi
		echo "ok $tool -A $chain $rule: rejected: $(printf '%s\n' "$out" | grep -v '^Try ' | head -n 1)"
		[ -z "$(xt_rules "$tool" "$chain")" ] || xt_bad "$tool $chain not empty after rejected $rule"
		return
	fi
	[ "$saved" = "=" ] && saved=$rule
	if ! out=$("$tool" -A "$chain" "$@" 2>&1); then
		xt_bad "$tool -A $chain $rule: $out"
		return
	fi
	got=$(xt_rules "$tool" "$chain")
	if [ "$got" = "-A $chain $saved" ]; then
		echo "ok $tool -A $chain $rule"
	else
		xt_bad "$tool -A $chain $rule: saved as '$got', expected '-A $chain $saved'"
	fi
	listed=$("$tool" -L "$chain" -n 2>&1)
	case $listed in
	*" seng "*) ;;
	*) xt_bad "$tool -L $chain after $rule shows no seng match: $listed" ;;
	esac
	if ! out=$("$tool" -D "$chain" "$@" 2>&1); then
		xt_bad "$tool -D $chain $rule: $out"
		"$tool" -F "$chain"
	fi
	got=$(xt_rules "$tool" "$chain")
	[ -z "$got" ] || xt_bad "$tool -D $chain $rule left '$got'"
}

# xt_each FILE CALLBACK TOOL: calls `CALLBACK TOOL CHAIN RULE SAVED RESULT` for every rule
# line and chain of FILE.
xt_each() {
	local file=$1 callback=$2 tool=$3 chains= chain line rule rest saved result
	while IFS= read -r line <&4; do
		case $line in
		"" | "#"*) continue ;;
		:*)
			chains=$(echo "${line#:}" | tr ',' ' ')
			continue
			;;
		esac
		rule=${line%%;*}
		rest=${line#*;}
		saved=${rest%%;*}
		result=${rest#*;}
		result=${result%%;*}
		case $result in
		OK | FAIL) ;;
		*)
			xt_bad "$file: malformed line: $line"
			continue
			;;
		esac
		[ -n "$chains" ] || xt_bad "$file: rule before any chain header: $line"
		for chain in $chains; do
			"$callback" "$tool" "$chain" "$rule" "$saved" "$result"
		done
	done 4<"$file"
}

# xt_add_ok TOOL CHAIN RULE SAVED RESULT: appends the rule if it is an OK line.
xt_add_ok() {
	local tool=$1 chain=$2 rule=$3
	[ "$5" = OK ] || return 0
	eval "set -- $rule"
	"$tool" -A "$chain" "$@" || xt_bad "$tool -A $chain $rule failed while building the round-trip set"
	XT_ADDED=$((XT_ADDED + 1))
}

# xt_round_trip TOOL FILE: all OK rules at once; save, restore, save again; same bytes.
xt_round_trip() {
	local tool=$1 file=$2 base=$XT_WORK/$(basename "$2" .t)-$(basename "$1") count
	XT_ADDED=0
	xt_each "$file" xt_add_ok "$tool"
	"$tool-save" -t filter >"$base.save1" || xt_bad "$tool-save failed"
	count=$(grep -c '^-A ' "$base.save1")
	[ "$count" = "$XT_ADDED" ] || xt_bad "$tool-save shows $count rules of $XT_ADDED added from $file"
	"$tool-restore" --test <"$base.save1" || xt_bad "$tool-restore --test rejects the saved $file rules"
	"$tool-restore" <"$base.save1" || xt_bad "$tool-restore rejects the saved $file rules"
	"$tool-save" -t filter >"$base.save2" || xt_bad "$tool-save failed after restore"
	# Comment lines carry time stamps and backend notes; everything else must be identical.
	grep -v '^#' "$base.save1" >"$base.rules1"
	grep -v '^#' "$base.save2" >"$base.rules2"
	if cmp -s "$base.rules1" "$base.rules2"; then
		echo "ok $tool-save | $tool-restore reproduces $count rules of $file"
	else
		xt_bad "$tool-save | $tool-restore changed the $file rules"
		diff "$base.rules1" "$base.rules2"
	fi
	"$tool" -F
}

# xt_run_file BACKEND FILE: the whole protocol for one .t file.
xt_run_file() {
	local family tool
	for family in $(xt_tools "$2"); do
		tool=/usr/sbin/$family-$1
		log "$tool: $2"
		xt_each "$2" xt_line "$tool"
		xt_round_trip "$tool" "$2"
	done
}

# xt_add_saved TOOL CHAIN RULE SAVED RESULT: appends an OK line's saved form on CHAIN to
# $XT_BATCH.
xt_add_saved() {
	local chain=$2 rule=$3 saved=$4
	[ "$5" = OK ] || return 0
	[ "$saved" = "=" ] && saved=$rule
	echo "-A $chain $saved" >>"$XT_BATCH"
}

# xt_batch TOOL FILE: the kernel's side of FILE in a few process starts, where user space is tested
# on another kernel (a light run, or `--user-space-on` another): the
# saved forms of all OK rules on all their chains go in by one `<tool>-restore` (the kernel
# checks every match), `<tool>-save` must show them back in order, one is deleted by
# specification, and a flush frees the rest. The rule texts and FAIL lines are parsed and
# refused in user space, which the one-by-one protocol checks on the kernel that tests user space.
xt_batch() {
	local tool=$1 base=$XT_WORK/$(basename "$2" .t)-$(basename "$1") chain first count
	XT_BATCH=$base.batch
	: >"$XT_BATCH"
	xt_each "$2" xt_add_saved "$tool"
	count=$(grep -c '^-A ' "$XT_BATCH")
	{ echo '*filter'; cat "$XT_BATCH"; echo COMMIT; } >"$base.restore"
	if ! "$tool-restore" <"$base.restore"; then
		xt_bad "$tool-restore rejects the saved forms of $2"
		return
	fi
	"$tool-save" -t filter | grep '^-A ' >"$base.saved"
	for chain in INPUT FORWARD OUTPUT; do
		grep "^-A $chain " "$XT_BATCH" >"$base.want"
		grep "^-A $chain " "$base.saved" >"$base.got"
		cmp -s "$base.want" "$base.got" || xt_bad "$tool-save shows $chain of $2 otherwise: $(diff "$base.want" "$base.got" | head -n 4)"
	done
	first=$(head -n 1 "$XT_BATCH")
	eval "set -- ${first#-A }"
	"$tool" -D "$@" || xt_bad "$tool -D $first failed"
	[ "$("$tool-save" -t filter | grep -c '^-A ')" = $((count - 1)) ] || xt_bad "$tool -D $first did not delete exactly one rule"
	"$tool" -F
	echo "ok $tool: $count rules of $2 restored, saved back, one deleted, flushed"
}

# xt_suite BACKEND: every .t file under BACKEND (their kernel side only where user space is tested
# on another kernel); fails
# the test if any check failed.
xt_suite() {
	local file family
	mkdir -p "$XT_WORK"
	for file in "$XT_DIR"/*.t; do
		[ -f "$file" ] || fail "no .t files in $XT_DIR"
		if user_space_elsewhere; then
			for family in $(xt_tools "$file"); do
				xt_batch "/usr/sbin/$family-$1" "$file"
			done
		else
			xt_run_file "$1" "$file"
		fi
	done
}

XT_PLUGIN=/usr/lib/x86_64-linux-gnu/xtables/libxt_seng.so
XT_APP=d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0

# xt_preflight BACKEND: the plugin is installed, and the first seng rule loads seng.ko on
# demand (iptables asks the kernel for the match, which requests module ipt_seng).
xt_preflight() {
	local tool=/usr/sbin/iptables-$1
	XT_BACKEND=$1
	[ -f "$XT_PLUGIN" ] || fail "$XT_PLUGIN is missing in the guest"
	if grep -q '^seng ' /proc/modules; then
		xt_bad "seng.ko is loaded before the test: loading on demand not checked"
	elif "$tool" -A INPUT -m seng --src-cat Browser; then
		grep -q '^seng ' /proc/modules || xt_bad "$tool -A with -m seng did not load seng.ko"
		"$tool" -D INPUT -m seng --src-cat Browser || xt_bad "$tool -D of the first rule failed"
	else
		xt_bad "$tool -A INPUT -m seng --src-cat Browser failed with seng.ko not loaded yet"
	fi
	run $MODPROBE seng
}

# xt_errors BACKEND: rejected rules exit with status 2 and the message from seng-core after
# iptables' "<tool> v<version> (<backend>): " prefix. User space refuses them before the kernel
# is asked: they are checked on the kernel that tests user space.
xt_errors() {
	local backend=$1 family rule message tool out rc
	user_space_elsewhere && return 0
	while IFS='|' read -r family rule message <&4; do
		tool=/usr/sbin/$family-$backend
		eval "set -- $rule"
		out=$("$tool" -A INPUT "$@" 2>&1)
		rc=$?
		case $rc:$out in
		2:*"): $message"*) echo "ok $tool -A INPUT $rule: $message" ;;
		*) xt_bad "$tool -A INPUT $rule: status $rc, expected 2 and '$message': $out" ;;
		esac
	done 4<<EOF_ERRORS
iptables|-m seng --src-app abc|seng: --src-app: bad application measurement "abc": must be exactly 64 hex digits, found 3 characters
ip6tables|-m seng --dst-app ${XT_APP%?}g|seng: --dst-app: bad application measurement "${XT_APP%?}g": 'g' at position 64 is not a hex digit
iptables|-m seng --dst-app ${XT_APP}00|seng: --dst-app: bad application measurement "${XT_APP}00": must be exactly 64 hex digits, found 66 characters
iptables|-m seng --src-cat 123456789012345678901|seng: --src-cat: bad category "123456789012345678901": category name is 21 bytes, at most 20 are allowed
ip6tables|-m seng ! --dst-cat ""|seng: --dst-cat: bad category "": category name is empty
iptables|-m seng --src-host 10.0.0.0/33|seng: --src-host: bad host "10.0.0.0/33": mask must be a prefix length 0-32 or an IPv4 address mask
iptables|-m seng --dst-host 10.0.0|seng: --dst-host: bad host "10.0.0": not a numeric IPv4 address
ip6tables|-m seng --src-host 10.0.0.1|seng: --src-host: bad host "10.0.0.1": not a numeric IPv6 address
ip6tables|-m seng --dst-host 2001:db8::/129|seng: --dst-host: bad host "2001:db8::/129": mask must be a prefix length 0-128 or an IPv6 address mask
iptables|-m seng --src-cat a ! --src-cat b|seng: --src-cat: may be given only once
ip6tables|-m seng --dst-host ::1 --dst-host ::2|seng: --dst-host: may be given only once
iptables|-m seng -j ACCEPT|seng match needs at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host
ip6tables|-m seng|seng match needs at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host
EOF_ERRORS
	for family in iptables ip6tables; do
		[ -z "$(xt_rules "/usr/sbin/$family-$backend" INPUT)" ] ||
			xt_bad "$family-$backend INPUT not empty after the rejected rules"
	done
}

# xt_listing BACKEND: `-L` shows the human form (print), `-S` the saved form (save).
xt_listing() {
	local tool=/usr/sbin/iptables-$1 tool6=/usr/sbin/ip6tables-$1
	run "$tool" -A INPUT -i "$TUN_DEV" -s 192.168.28.0/24 -m seng ! --src-host 10.0.0.0/26 --dst-cat "My App" -j DROP
	run "$tool" -A INPUT -m seng --src-app "$XT_APP" --dst-host 10.0.0.7
	run "$tool" -L INPUT -n
	assert_match "$OUT" '^DROP +(all|0) +-- +192\.168\.28\.0/24 +0\.0\.0\.0/0 +seng ! src-host 10\.0\.0\.0/26 dst-cat "My App" *$' "$tool -L"
	assert_match "$OUT" "^ +(all|0) +-- +0\\.0\\.0\\.0/0 +0\\.0\\.0\\.0/0 +seng src-app $XT_APP dst-host 10\\.0\\.0\\.7 *\$" "$tool -L"
	run "$tool" -S INPUT
	assert_contains "$OUT" "-A INPUT -s 192.168.28.0/24 -i $TUN_DEV -m seng ! --src-host 10.0.0.0/26 --dst-cat \"My App\" -j DROP" "$tool -S"
	run "$tool" -F INPUT
	run "$tool6" -A FORWARD -m seng --src-host 2001:db8::1
	run "$tool6" -L FORWARD -n
	assert_match "$OUT" "seng src-host 2001:db8::1 *\$" "$tool6 -L"
	run "$tool6" -F FORWARD
}

# xt_done: ends the test with the collected verdict.
xt_done() {
	[ "$XT_FAILED" -eq 0 ] || fail "$XT_FAILED checks failed, first: $XT_FIRST"
}
