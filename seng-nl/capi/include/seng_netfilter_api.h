/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * seng_netfilter_api.h: the C API of libsengnetfilter.so, the SENG server's interface to the
 * seng kernel module. Same name, functions and arguments as the original SENG user library, and
 * like the original it includes xt_seng_genl.h (the protocol's constants). Link with
 * -lsengnetfilter: CMake's target `sengnetfilter` (add_subdirectory of user-library/, or
 * find_package(sengnetfilter)) or `pkg-config --cflags --libs sengnetfilter`.
 *
 * Every function returns 0 once the kernel has acknowledged the change, or a negative errno
 * (printing one line naming the problem to stderr): -ENOENT when the module is not loaded or the
 * application is unknown, -EPERM without CAP_NET_ADMIN, -EINVAL for refused arguments, -ENOTCONN
 * before prep_nl_sock(). Addresses are IPv4 as uint32_t in network byte order (htonl), app
 * hashes 32-byte SGX measurements, category names NUL-terminated strings of 1-20 bytes.
 *
 * The functions are thread-safe: one process-wide socket is shared under a lock.
 */
#ifndef SENG_NETFILTER_API_H
#define SENG_NETFILTER_API_H

#include <stdint.h>

#include "xt_seng_genl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opens the netlink socket and resolves the seng generic netlink family. */
int prep_nl_sock(void);

/* Closes the socket opened by prep_nl_sock(). */
int cleanup_nl_sock(void);

/* Unregisters every enclave; their connections end. */
int flush_module(void);

/*
 * Registers enclave_ip as an enclave of the application app_hash running on the untrusted host
 * host, and attaches cat_name (may be NULL) to the application. Re-registering an address with
 * another application or host replaces its entry and ends its connections.
 */
int add_enclave_ack(uint32_t enclave_ip, const uint8_t *app_hash, uint32_t host, const char *cat_name);

/* Attaches a category to an application that has a registered enclave. */
int cat_to_app_ack(const uint8_t *app_hash, const char *cat_name);

/* Detaches a category from an application (an absent category is not an error). */
int remove_cat_from_app_ack(const uint8_t *app_hash, const char *cat_name);

/*
 * Unregisters an enclave (an unregistered address is not an error). The kernel module deletes
 * every conntrack entry involving the address itself before acknowledging, so, unlike with the
 * original library, no conntrack cleaning happens in user space.
 */
int remove_enclave_ack(uint32_t enclave_ip);

#ifdef __cplusplus
}
#endif

#endif /* SENG_NETFILTER_API_H */
