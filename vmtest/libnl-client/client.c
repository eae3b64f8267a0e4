// SPDX-License-Identifier: GPL-2.0-only
/*
 * seng-libnl-client: talks to seng.ko over libnl exactly as the original SENG user library does,
 * so the VM tests can show that library keeps working: one libnl socket that joins the family's
 * group GROUP (default seng_mcgrp, as the original's prep_nl_sock does), and per request a
 * family lookup on that socket, then one command 1 message built with genlmsg_put and sent with
 * nl_send_sync, which waits for the ack of its sequence number and, with libnl's default
 * callbacks, takes any other message on the socket (such as an event) for an error.
 *
 * Runs a fixed register / attach / detach / unregister / flush sequence; prints "ok N - what" or
 * "not ok N - what: libnl's error" per request, carries on after a failure as the original
 * would, and exits with the number of failures.
 *
 * Usage: seng-libnl-client [GROUP]
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>

/* The original protocol (see seng-core/src/genl.rs). */
#define FAMILY "seng_family"
#define CMD_MSG 1
enum { ATTR_APP = 1, ATTR_CAT, ATTR_HOST, ATTR_ENC, ATTR_ADD, ATTR_RMV, ATTR_FLUSH };

#define APP_A "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0"
#define APP_B "d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792"

static struct nl_sock *sock;
static int requests, failures;

/* One request as the original builds it; attributes NULL/0 are left out. */
struct request {
	const char *what;
	const char *enclave, *host, *app_hex, *cat;
	int flag;
};

static void hash(const char *hex, uint8_t out[32])
{
	for (int i = 0; i < 32; i++) {
		unsigned int byte;

		sscanf(hex + 2 * i, "%2x", &byte);
		out[i] = (uint8_t)byte;
	}
}

/* Resolves the family, builds the message and waits for its ack; 0 or a libnl error. */
static int send_request(const struct request *r)
{
	struct nl_msg *msg;
	uint8_t app[32];
	int family, err;

	family = genl_ctrl_resolve(sock, FAMILY);
	if (family < 0)
		return family;
	msg = nlmsg_alloc();
	if (!msg)
		return -NLE_NOMEM;
	err = genlmsg_put(msg, NL_AUTO_PID, NL_AUTO_SEQ, family, 0, NLM_F_REQUEST, CMD_MSG, 0) ? 0 : -NLE_NOMEM;
	if (!err && r->host)
		err = nla_put_u32(msg, ATTR_HOST, inet_addr(r->host));
	if (!err && r->app_hex) {
		hash(r->app_hex, app);
		err = nla_put(msg, ATTR_APP, sizeof(app), app);
	}
	if (!err && r->cat)
		err = nla_put_string(msg, ATTR_CAT, r->cat);
	if (!err)
		err = nla_put_flag(msg, r->flag);
	if (!err && r->enclave)
		err = nla_put_u32(msg, ATTR_ENC, inet_addr(r->enclave));
	if (err) {
		nlmsg_free(msg);
		return err;
	}
	/* nl_send_sync frees the message. */
	return nl_send_sync(sock, msg);
}

static void run(const struct request *r)
{
	int err = send_request(r);

	requests++;
	if (err < 0) {
		failures++;
		printf("not ok %d - %s: %s\n", requests, r->what, nl_geterror(err));
	} else {
		printf("ok %d - %s\n", requests, r->what);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *group_name = argc > 1 ? argv[1] : "seng_mcgrp";
	const struct request steps[] = {
		{ "register 192.168.28.10 with a category", "192.168.28.10", "10.0.0.5", APP_A, "Browser", ATTR_ADD },
		{ "register 192.168.28.11", "192.168.28.11", "10.0.0.6", APP_A, NULL, ATTR_ADD },
		{ "register 192.168.28.12", "192.168.28.12", "10.0.0.7", APP_B, NULL, ATTR_ADD },
		{ "attach Mail", NULL, NULL, APP_A, "Mail", ATTR_ADD },
		{ "detach Browser", NULL, NULL, APP_A, "Browser", ATTR_RMV },
		{ "unregister 192.168.28.11", "192.168.28.11", NULL, NULL, NULL, ATTR_RMV },
		{ "flush", NULL, NULL, NULL, NULL, ATTR_FLUSH },
	};
	int group, err;

	sock = nl_socket_alloc();
	if (!sock || genl_connect(sock)) {
		fprintf(stderr, "seng-libnl-client: cannot open a generic netlink socket\n");
		return 100;
	}
	group = genl_ctrl_resolve_grp(sock, FAMILY, group_name);
	if (group < 0) {
		fprintf(stderr, "seng-libnl-client: cannot resolve group %s: %s\n", group_name, nl_geterror(group));
		return 100;
	}
	err = nl_socket_add_membership(sock, group);
	if (err) {
		fprintf(stderr, "seng-libnl-client: cannot join group %s: %s\n", group_name, nl_geterror(err));
		return 100;
	}
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		run(&steps[i]);
	printf("%d requests, %d failed\n", requests, failures);
	nl_socket_free(sock);
	return failures;
}
