// SPDX-License-Identifier: GPL-2.0-only
/*
 * api_test (seng-capi-test): exercises every function of seng_netfilter_api.h against the loaded seng module, as
 * the SENG server calls them, and checks the resulting table through the `seng` CLI (`seng save`;
 * the CLI path comes from $SENG, default "seng"). Needs root and seng.ko. Prints "ok N - what" or
 * "not ok N - what" per check; the exit status is the number of failed checks.
 *
 * user-library/CMakeLists.txt builds it as seng-capi-test with -DSENGNETFILTER_BUILD_TESTS=ON.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seng_netfilter_api.h"

#define APP_A "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0"
#define APP_B "d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792"
#define THREADS 4
#define PER_THREAD 50

static int checks, failures;

static void check(int ok, const char *what)
{
	checks++;
	if (!ok)
		failures++;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", checks, what);
	fflush(stdout);
}

/* A return value check that shows the value on failure. */
static void check_ret(int got, int want, const char *what)
{
	char text[256];

	snprintf(text, sizeof(text), "%s (returned %d, expected %d)", what, got, want);
	check(got == want, text);
}

static void hex_to_hash(const char *hex, uint8_t hash[32])
{
	for (int i = 0; i < 32; i++) {
		unsigned int byte;

		sscanf(hex + 2 * i, "%2x", &byte);
		hash[i] = (uint8_t)byte;
	}
}

static uint32_t addr(const char *text)
{
	struct in_addr a;

	if (inet_pton(AF_INET, text, &a) != 1) {
		fprintf(stderr, "bad address %s\n", text);
		exit(100);
	}
	return a.s_addr; /* network byte order, as the API takes it */
}

/* The output of `seng save`, malloc'ed. */
static char *saved_table(void)
{
	const char *seng = getenv("SENG") ? getenv("SENG") : "seng";
	char cmd[512];
	size_t len = 0, cap = 4096;
	char *text = malloc(cap);
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd), "%s save", seng);
	p = popen(cmd, "r");
	if (!p || !text) {
		perror("popen");
		exit(100);
	}
	while ((n = fread(text + len, 1, cap - len - 1, p)) > 0) {
		len += n;
		if (cap - len < 2) {
			cap *= 2;
			text = realloc(text, cap);
			if (!text)
				exit(100);
		}
	}
	text[len] = 0;
	if (pclose(p) != 0) {
		fprintf(stderr, "`%s` failed\n", cmd);
		exit(100);
	}
	return text;
}

static void check_table(const char *expected, const char *what)
{
	char *got = saved_table();
	int same = strcmp(got, expected) == 0;

	if (!same)
		printf("# expected:\n%s# got:\n%s", expected, got);
	check(same, what);
	free(got);
}

static int count_lines(const char *text)
{
	int lines = 0;

	for (; *text; text++)
		lines += *text == '\n';
	return lines;
}

struct worker {
	int id;
	int failed;
	uint8_t hash[32];
};

/* Registers PER_THREAD enclaves 10.<id>.0.<i> and removes every other one again. */
static void *register_many(void *arg)
{
	struct worker *w = arg;

	for (int i = 1; i <= PER_THREAD; i++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "10.%d.0.%d", 100 + w->id, i);
		if (add_enclave_ack(addr(ip), w->hash, addr("172.16.0.1"), "Worker") != 0)
			w->failed++;
		if (i % 2 == 0 && remove_enclave_ack(addr(ip)) != 0)
			w->failed++;
	}
	return NULL;
}

int main(void)
{
	uint8_t app_a[32], app_b[32];

	hex_to_hash(APP_A, app_a);
	hex_to_hash(APP_B, app_b);

	check_ret(prep_nl_sock(), 0, "prep_nl_sock");
	check_ret(flush_module(), 0, "flush_module");
	check_table("", "the table is empty after flush_module");

	check_ret(add_enclave_ack(addr("192.168.28.10"), app_a, addr("10.0.0.5"), "Browser"), 0,
		  "add_enclave_ack with a category");
	check_ret(add_enclave_ack(addr("192.168.28.11"), app_a, addr("10.0.0.6"), NULL), 0,
		  "add_enclave_ack without a category");
	check_ret(add_enclave_ack(addr("192.168.28.12"), app_b, addr("10.0.0.5"), NULL), 0,
		  "add_enclave_ack of a second application");
	check_table("enclave add 192.168.28.10 --app " APP_A " --host 10.0.0.5 --cat Browser\n"
		    "enclave add 192.168.28.11 --app " APP_A " --host 10.0.0.6 --cat Browser\n"
		    "enclave add 192.168.28.12 --app " APP_B " --host 10.0.0.5\n",
		    "registrations are in the table, categories shared by the application");

	check_ret(cat_to_app_ack(app_a, "Mail"), 0, "cat_to_app_ack");
	check_ret(cat_to_app_ack(app_b, "Web Mail"), 0, "cat_to_app_ack with a space");
	check_ret(remove_cat_from_app_ack(app_a, "Browser"), 0, "remove_cat_from_app_ack");
	check_ret(remove_cat_from_app_ack(app_a, "Browser"), 0,
		  "remove_cat_from_app_ack of an absent category succeeds, as in the original");
	check_table("enclave add 192.168.28.10 --app " APP_A " --host 10.0.0.5 --cat Mail\n"
		    "enclave add 192.168.28.11 --app " APP_A " --host 10.0.0.6 --cat Mail\n"
		    "enclave add 192.168.28.12 --app " APP_B " --host 10.0.0.5 --cat \"Web Mail\"\n",
		    "categories attached and detached");

	check_ret(add_enclave_ack(addr("192.168.28.11"), app_b, addr("10.0.0.7"), NULL), 0,
		  "add_enclave_ack moves an enclave to another application and host");
	check_ret(remove_enclave_ack(addr("192.168.28.10")), 0, "remove_enclave_ack");
	check_ret(remove_enclave_ack(addr("192.168.28.99")), 0,
		  "remove_enclave_ack of an unknown address succeeds, as in the original");
	check_table("enclave add 192.168.28.11 --app " APP_B " --host 10.0.0.7 --cat \"Web Mail\"\n"
		    "enclave add 192.168.28.12 --app " APP_B " --host 10.0.0.5 --cat \"Web Mail\"\n",
		    "moved and removed enclaves; application A gone with its last enclave");

	check_ret(add_enclave_ack(addr("192.168.28.20"), app_a, addr("10.0.0.5"), "123456789012345678901"),
		  -EINVAL, "a 21-byte category is refused");
	check_ret(add_enclave_ack(addr("192.168.28.20"), NULL, addr("10.0.0.5"), NULL), -EINVAL,
		  "a NULL app hash is refused");
	check_ret(cat_to_app_ack(app_a, "Mail"), -ENOENT,
		  "cat_to_app_ack to an application without enclaves is refused");
	check_ret(cat_to_app_ack(app_b, NULL), -EINVAL, "cat_to_app_ack without a category is refused");

	{
		pthread_t threads[THREADS];
		struct worker workers[THREADS];
		int failed = 0;
		char *table;

		for (int i = 0; i < THREADS; i++) {
			workers[i] = (struct worker){ .id = i };
			memcpy(workers[i].hash, app_a, sizeof(app_a));
			pthread_create(&threads[i], NULL, register_many, &workers[i]);
		}
		for (int i = 0; i < THREADS; i++) {
			pthread_join(threads[i], NULL);
			failed += workers[i].failed;
		}
		check_ret(failed, 0, "concurrent calls from several threads all succeed");
		table = saved_table();
		check_ret(count_lines(table), 2 + THREADS * PER_THREAD / 2,
			  "every concurrent registration that was not removed is in the table");
		free(table);
	}

	check_ret(flush_module(), 0, "flush_module");
	check_table("", "flush_module empties the table");
	check_ret(cleanup_nl_sock(), 0, "cleanup_nl_sock");
	check_ret(cleanup_nl_sock(), -ENOTCONN, "a second cleanup_nl_sock reports no socket");
	check_ret(flush_module(), -ENOTCONN, "calls after cleanup_nl_sock report no socket");

	printf("%d checks, %d failed\n", checks, failures);
	return failures;
}
