/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * xt_seng.h: the match data of `iptables -m seng` (revision 0) under the names of the original
 * SENG Netfilter Extension's header of the same name: the option flags and struct seng_mt_info,
 * as iptables hands it to the kernel. seng-nl/capi/build.rs checks every flag, the size and
 * every offset against seng-core's definitions (seng-core/src/matchinfo.rs).
 */
#ifndef SENG_XT_SENG_H
#define SENG_XT_SENG_H

#include <stdint.h>
#include <linux/netfilter.h>

#define SENG_HASH_SIZE (64 + 1)
#define SGX_HASH_SIZE 32
#define MAX_CAT_NAME_LENGTH (20 + 1)

/* Which options a rule has; each *_INV bit negates the option before it. */
enum flags {
	XT_SENG_APP_SRC = 1 << 0,
	XT_SENG_APP_SRC_INV = 1 << 1,
	XT_SENG_CAT_SRC = 1 << 2,
	XT_SENG_CAT_SRC_INV = 1 << 3,
	XT_SENG_HOST_SRC = 1 << 4,
	XT_SENG_HOST_SRC_INV = 1 << 5,
	XT_SENG_APP_DST = 1 << 6,
	XT_SENG_APP_DST_INV = 1 << 7,
	XT_SENG_CAT_DST = 1 << 8,
	XT_SENG_CAT_DST_INV = 1 << 9,
	XT_SENG_HOST_DST = 1 << 10,
	XT_SENG_HOST_DST_INV = 1 << 11,
};

/* The match data: 180 bytes, naturally aligned; hosts and masks IPv4 in the first 4 bytes,
 * network order. */
struct seng_mt_info {
	uint8_t app_hash_src[SGX_HASH_SIZE];
	char category_name_src[MAX_CAT_NAME_LENGTH];
	union nf_inet_addr host_src;
	union nf_inet_addr src_subnet;

	uint8_t app_hash_dst[SGX_HASH_SIZE];
	char category_name_dst[MAX_CAT_NAME_LENGTH];
	union nf_inet_addr host_dst;
	union nf_inet_addr dst_subnet;

	uint16_t flags;
};

#endif /* SENG_XT_SENG_H */
