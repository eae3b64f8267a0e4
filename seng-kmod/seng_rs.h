/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The interface between the C glue of seng.ko and its Rust object (seng-kmod/rust, built on
 * seng-core). Rust owns the tables, the match decision and the protocol; C owns registration with
 * the kernel, locking and the kernel services Rust calls back into.
 *
 * Every number, string and struct layout here mirrors a Rust definition: the Rust object's build
 * script (seng-kmod/rust/build.rs) checks them all with the C compiler and fails on a mismatch.
 */
#ifndef SENG_RS_H
#define SENG_RS_H

#include <linux/types.h>

/* Mirrors seng_core::genl (the protocol names and numbers). */
#define SENG_FAMILY_NAME "seng_family"
#define SENG_FAMILY_VERSION 1
#define SENG_MCGRP_NAME "seng_mcgrp"
#define SENG_EVENTS_MCGRP_NAME "seng_events"

enum {
	SENG_CMD_UNSPEC,
	SENG_CMD_LEGACY,
	SENG_CMD_ENCLAVE_SET,
	SENG_CMD_ENCLAVE_DEL,
	SENG_CMD_FLUSH,
	SENG_CMD_CAT_ADD,
	SENG_CMD_CAT_DEL,
	SENG_CMD_GET,
	SENG_CMD_STATS,
	SENG_CMD_REPLACE_BEGIN,
	SENG_CMD_REPLACE_ADD,
	SENG_CMD_REPLACE_COMMIT,
	SENG_CMD_REPLACE_ABORT,
	SENG_CMD_REPLACE_DEL,
	SENG_CMD_REPLACE_CAT_ADD,
	SENG_CMD_REPLACE_CAT_DEL,
	__SENG_CMD_MAX,
};
#define SENG_CMD_MAX (__SENG_CMD_MAX - 1)

enum {
	SENG_A_UNSPEC,
	SENG_A_APP,
	SENG_A_CAT,
	SENG_A_HOST,
	SENG_A_ENC,
	SENG_A_ADD,
	SENG_A_RMV,
	SENG_A_FLUSH,
	SENG_A_ENCLAVE,
	SENG_A_ADDR,
	SENG_A_HOST_ADDR,
	SENG_A_STAT_ENCLAVES,
	SENG_A_STAT_APPS,
	SENG_A_STAT_CAPACITY,
	SENG_A_STAT_SLOTS,
	SENG_A_STAT_GENERATION,
	SENG_A_ORIGIN,
	SENG_A_ALL_ORIGINS,
	__SENG_A_MAX,
};
#define SENG_A_MAX (__SENG_A_MAX - 1)

/*
 * Attribute lengths: a measurement, the longest category name and gateway name (without their
 * NUL), an address.
 */
#define SENG_APP_LEN 32
#define SENG_CAT_MAX_LEN 20
#define SENG_ORIGIN_MAX_LEN 32
#define SENG_ADDR_MAX_LEN 16

/* struct seng_mt_info is 180 bytes; iptables and the kernel use its XT_ALIGN'ed size. */
#define SENG_MT_INFO_SIZE 180

/* One generic netlink request (Rust: abi::SengRequest). */
struct seng_request {
	void *net;
	const u8 *payload;
	u32 payload_len;
	u32 portid;
	u8 cmd;
	u8 notify;		/* out */
	u32 bad_attr_offset;	/* out: payload offset of the attribute to blame, U32_MAX: none */
	u8 *reply;
	u32 reply_cap;
	u32 reply_len;		/* out */
	const char *errmsg;	/* out */
};

struct seng_net_state;

/* Rust entry points. */
struct seng_net_state *seng_rs_net_new(u32 capacity);
void seng_rs_net_free(struct seng_net_state *state);
bool seng_rs_match_ipv4(const struct seng_net_state *state, const void *info,
			const void *network_header);
bool seng_rs_match_ipv6(const struct seng_net_state *state, const void *info,
			const void *network_header);
int seng_rs_check(const void *info, u8 nfproto, const char **msg);
int seng_rs_doit(const struct seng_net_state *state, struct seng_request *req);
int seng_rs_dump(const struct seng_net_state *state, const u8 *request, u32 request_len,
		 u64 *cursor, u8 *buf, u32 cap);
u32 seng_rs_dump_stamp(const struct seng_net_state *state);
bool seng_rs_may_own_transaction(const struct seng_net_state *state, u32 portid);
void seng_rs_release(const struct seng_net_state *state, u32 portid);
bool seng_rs_ending_contains(const void *set, u8 nfproto, const u8 *addr);

/* C services for Rust. */
void *seng_glue_alloc(size_t size);
void seng_glue_free(void *ptr);
void seng_glue_retire(void *ptr);
u64 seng_glue_random_u64(void);
void seng_glue_grace_period(void);
void seng_glue_end_connections(void *net, const void *set);
void seng_rust_panic(void);

#endif /* SENG_RS_H */
