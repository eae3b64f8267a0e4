/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * xt_seng_genl.h: the constants of the seng generic netlink protocol, under the names and values
 * of the original SENG Netfilter Extension's header of the same name, for consumers that
 * include it or use its names. seng-nl/capi/build.rs checks every value against seng-core's
 * definitions (seng-core/src/genl.rs), so this view cannot drift from the module's.
 */
#ifndef SENG_XT_SENG_GENL_H
#define SENG_XT_SENG_GENL_H

/* Generic netlink family, and its multicast group as the original named it. seng.ko never
 * sends on that group, as the original did not: a listener for changes joins
 * GENL_SENG_EVENTS_MCGRP_NAME instead (a seng addition, CAP_NET_ADMIN needed). */
#define GENL_SENG_FAMILY_NAME "seng_family"
#define GENL_SENG_MCGRP_NAME "seng_mcgrp"
#define GENL_SENG_EVENTS_MCGRP_NAME "seng_events"

/* An application measurement as 64 hex digits and a NUL; the measurement itself (SGX
 * MRENCLAVE); a category name with its NUL. */
#define SENG_HASH_SIZE (64 + 1)
#define SGX_HASH_SIZE 32
#define MAX_CAT_NAME_LENGTH (20 + 1)

/* Commands: the original protocol has one. */
enum {
	GENL_XT_SENG_UNSPEC,
	GENL_XT_SENG_MSG,
};

/* Attributes of GENL_XT_SENG_MSG; the operation is chosen by the ADD, RMV or FLUSH flag. */
enum genl_seng_attrs {
	XT_SENG_ATTR_UNSPEC,
	XT_SENG_ATTR_APP,	/* measurement, SGX_HASH_SIZE bytes */
	XT_SENG_ATTR_CAT,	/* category, NUL-terminated, at most MAX_CAT_NAME_LENGTH bytes */
	XT_SENG_ATTR_HOST,	/* untrusted host IPv4, u32 in network byte order */
	XT_SENG_ATTR_ENC,	/* enclave IPv4, u32 in network byte order */
	XT_SENG_ATTR_ADD,	/* flag: register an enclave, or attach a category */
	XT_SENG_ATTR_RMV,	/* flag: unregister an enclave, or detach a category */
	XT_SENG_ATTR_FLUSH,	/* flag: unregister every enclave */
	__XT_SENG_ATTR__MAX,
};

#define XT_SENG_ATTR_MAX (__XT_SENG_ATTR__MAX - 1)

/* The original's multicast groups: the one it named. */
enum genl_seng_multicast_groups {
	GENL_SENG_MCGRP0,
};

#endif /* SENG_XT_SENG_GENL_H */
