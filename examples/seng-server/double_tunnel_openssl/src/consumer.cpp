// SPDX-License-Identifier: GPL-2.0-only
/*
 * seng-server-consumer: makes the SENG server's calls into the netfilter library, in the
 * server's order (EnclaveNetfilterIndex in sengsgx/sengsgx), and checks the module's table with
 * `seng save` after each step ($SENG names the CLI, default "seng"):
 *
 *   prep_nl_sock() == 0 at start;
 *   per new enclave add_enclave_ack(ip, mr_enclave, host, NULL) == 0, then cat_to_app_ack() for
 *   each category of its application, unless another active enclave runs the same measurement;
 *   remove_enclave_ack(ip) == 0 when an enclave disconnects;
 *   flush_module(); cleanup_nl_sock(); at shutdown.
 *
 * Before that, bad calls (before prep_nl_sock, NULL pointers, a 21-byte category) must each
 * return the documented negative errno with exactly one line on stderr, and change nothing.
 * Needs root and seng.ko. Prints "ok N - what" or "not ok N - what" per check; the exit status
 * is the number of failed checks.
 */
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

// As the server includes it.
extern "C" {
#include "seng_netfilter_api.h"
}

namespace {

int checks, failures;

void check(bool ok, const std::string &what)
{
	checks++;
	failures += !ok;
	std::printf("%s %d - %s\n", ok ? "ok" : "not ok", checks, what.c_str());
	std::fflush(stdout);
}

void check_ret(int got, int want, const std::string &what)
{
	check(got == want, what + " (returned " + std::to_string(got) + ", expected " + std::to_string(want) + ")");
}

uint32_t addr(const char *text)
{
	in_addr a{};
	if (inet_pton(AF_INET, text, &a) != 1) {
		std::fprintf(stderr, "bad address %s\n", text);
		std::exit(100);
	}
	return a.s_addr;
}

struct App {
	const char *hex;
	uint8_t mr_enclave[SGX_HASH_SIZE];
	std::vector<std::string> categories; // as the server's database lists them
};

void parse_hash(App &app)
{
	for (int i = 0; i < SGX_HASH_SIZE; i++) {
		unsigned int byte;
		std::sscanf(app.hex + 2 * i, "%2x", &byte);
		app.mr_enclave[i] = static_cast<uint8_t>(byte);
	}
}

std::string saved_table()
{
	const char *seng = std::getenv("SENG") ? std::getenv("SENG") : "seng";
	std::string cmd = std::string(seng) + " save";
	FILE *p = popen(cmd.c_str(), "r");
	if (!p) {
		std::perror("popen");
		std::exit(100);
	}
	std::string text;
	char buf[4096];
	size_t n;
	while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0)
		text.append(buf, n);
	if (pclose(p) != 0) {
		std::fprintf(stderr, "`%s` failed\n", cmd.c_str());
		std::exit(100);
	}
	return text;
}

void check_table(const std::string &want, const std::string &what)
{
	std::string got = saved_table();
	if (got != want)
		std::printf("# expected:\n%s# got:\n%s", want.c_str(), got.c_str());
	check(got == want, what);
}

// Runs `call` with stderr captured; returns its result and what it wrote there.
int with_stderr(const std::function<int()> &call, std::string &written)
{
	std::fflush(stderr);
	FILE *capture = std::tmpfile();
	int saved = dup(STDERR_FILENO);
	if (!capture || saved < 0 || dup2(fileno(capture), STDERR_FILENO) < 0) {
		std::perror("capturing stderr");
		std::exit(100);
	}
	int ret = call();
	std::fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	std::rewind(capture);
	written.clear();
	int c;
	while ((c = std::fgetc(capture)) != EOF)
		written.push_back(static_cast<char>(c));
	std::fclose(capture);
	return ret;
}

// A refused call: the errno, and one line on stderr naming the function.
void check_refused(const char *function, const std::function<int()> &call, int want, const std::string &what)
{
	std::string err;
	int ret = with_stderr(call, err);
	size_t lines = 0;
	for (char c : err)
		lines += c == '\n';
	check_ret(ret, want, what);
	std::string shown;
	for (char c : err)
		shown += c == '\n' ? std::string("\\n") : std::string(1, c);
	check(lines == 1 && !err.empty() && err.back() == '\n' && err.find(function) != std::string::npos,
	      what + ": one line on stderr naming " + function + " (got \"" + shown + "\")");
}

std::string line(const char *ip, const App &app, const char *host, const std::vector<std::string> &cats)
{
	std::string l = std::string("enclave add ") + ip + " --app " + app.hex + " --host " + host;
	for (const std::string &c : cats)
		l += " --cat " + (c.find(' ') == std::string::npos ? c : "\"" + c + "\"");
	return l + "\n";
}

} // namespace

int main()
{
	App a{"d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0", {}, {"Browser", "Mail"}};
	App b{"d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792", {}, {"Web Mail"}};
	parse_hash(a);
	parse_hash(b);
	const std::string too_long(MAX_CAT_NAME_LENGTH, 'c'); // 21 bytes: one more than fits
	const uint32_t ip = addr("192.168.28.10"), host = addr("10.0.0.5");

	check_refused("flush_module", [] { return flush_module(); }, -ENOTCONN, "flush_module before prep_nl_sock");
	check_refused("add_enclave_ack", [&] { return add_enclave_ack(ip, a.mr_enclave, host, nullptr); }, -ENOTCONN,
		      "add_enclave_ack before prep_nl_sock");
	check_refused("cat_to_app_ack", [&] { return cat_to_app_ack(a.mr_enclave, "Mail"); }, -ENOTCONN,
		      "cat_to_app_ack before prep_nl_sock");
	check_refused("remove_cat_from_app_ack", [&] { return remove_cat_from_app_ack(a.mr_enclave, "Mail"); }, -ENOTCONN,
		      "remove_cat_from_app_ack before prep_nl_sock");
	check_refused("remove_enclave_ack", [&] { return remove_enclave_ack(ip); }, -ENOTCONN,
		      "remove_enclave_ack before prep_nl_sock");
	check_refused("cleanup_nl_sock", [] { return cleanup_nl_sock(); }, -ENOTCONN, "cleanup_nl_sock before prep_nl_sock");

	// EnclaveNetfilterIndex::init_netfilter_connection
	check_ret(prep_nl_sock(), 0, "prep_nl_sock");
	check_ret(flush_module(), 0, "flush_module of what earlier tests left");
	check_table("", "the table starts empty");

	check_refused("add_enclave_ack", [&] { return add_enclave_ack(ip, nullptr, host, nullptr); }, -EINVAL,
		      "add_enclave_ack with a NULL mr_enclave");
	check_refused("add_enclave_ack", [&] { return add_enclave_ack(ip, a.mr_enclave, host, too_long.c_str()); }, -EINVAL,
		      "add_enclave_ack with a 21-byte category");
	check_refused("cat_to_app_ack", [&] { return cat_to_app_ack(nullptr, "Mail"); }, -EINVAL,
		      "cat_to_app_ack with a NULL mr_enclave");
	check_refused("cat_to_app_ack", [&] { return cat_to_app_ack(a.mr_enclave, nullptr); }, -EINVAL,
		      "cat_to_app_ack with a NULL category");
	check_refused("cat_to_app_ack", [&] { return cat_to_app_ack(a.mr_enclave, too_long.c_str()); }, -EINVAL,
		      "cat_to_app_ack with a 21-byte category");
	check_refused("remove_cat_from_app_ack", [&] { return remove_cat_from_app_ack(nullptr, "Mail"); }, -EINVAL,
		      "remove_cat_from_app_ack with a NULL mr_enclave");
	check_refused("remove_cat_from_app_ack", [&] { return remove_cat_from_app_ack(a.mr_enclave, too_long.c_str()); },
		      -EINVAL, "remove_cat_from_app_ack with a 21-byte category");
	check_table("", "refused calls changed nothing");

	// EnclaveNetfilterIndex::add_enclave_to_module, for enclaves connecting one after another.
	struct Enclave {
		const char *ip, *host;
		App *app;
	};
	const std::vector<Enclave> enclaves = {
		{"192.168.28.10", "10.0.0.5", &a},
		{"192.168.28.11", "10.0.0.6", &a}, // the same application: its categories are there already
		{"192.168.28.12", "10.0.0.5", &b},
	};
	std::map<std::string, std::string> expected; // the table, ordered as `seng save` prints it
	auto table = [&] {
		std::string text;
		for (const auto &e : expected)
			text += e.second;
		return text;
	};
	std::vector<const Enclave *> active;
	for (const Enclave &e : enclaves) {
		check_ret(add_enclave_ack(addr(e.ip), e.app->mr_enclave, addr(e.host), nullptr), 0,
			  std::string("add_enclave_ack ") + e.ip);
		bool shared = false;
		for (const Enclave *other : active)
			shared |= other->app == e.app;
		if (!shared)
			for (const std::string &cat : e.app->categories)
				cat_to_app_ack(e.app->mr_enclave, cat.c_str()); // the server ignores the result
		active.push_back(&e);
		for (const Enclave *reg : active)
			expected[reg->ip] = line(reg->ip, *reg->app, reg->host, reg->app->categories);
		check_table(table(), std::string("table after ") + e.ip + " connected");
	}

	// EnclaveNetfilterIndex::mark_enclave_tunnel_closed
	check_ret(remove_enclave_ack(addr("192.168.28.10")), 0, "remove_enclave_ack 192.168.28.10");
	expected.erase("192.168.28.10");
	check_table(table(), "table after 192.168.28.10 disconnected");

	// EnclaveNetfilterIndex::cleanup_netfilter_connection
	check_ret(flush_module(), 0, "flush_module");
	check_ret(cleanup_nl_sock(), 0, "cleanup_nl_sock");
	check_table("", "table after shutdown");

	std::printf("%d checks, %d failed\n", checks, failures);
	return failures;
}
