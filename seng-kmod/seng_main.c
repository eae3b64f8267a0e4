// SPDX-License-Identifier: GPL-2.0-only
/*
 * seng.ko: per-application firewall rules for Netfilter. This file is the thin C glue: module
 * and per-namespace lifetime, the xtables match and generic netlink registrations, locking, and
 * the kernel services the Rust object (seng-kmod/rust over seng-core) calls back into. Every
 * decision, table operation and protocol message is handled in Rust.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/ipv6.h>
#include <linux/ip.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/netfilter/x_tables.h>
#include <linux/netlink.h>
#include <linux/notifier.h>
#include <linux/random.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/version.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>
#include <net/netfilter/nf_conntrack.h>
#include <net/netns/generic.h>

#include "seng_rs.h"

static unsigned int capacity = 1 << 20;
module_param(capacity, uint, 0444);
MODULE_PARM_DESC(capacity, "Most enclaves per network namespace (default 1048576)");

/*
 * Memory handed to Rust. Retired memory goes to the headless kvfree_rcu, which batches pointers
 * and needs no RCU head in the object: a 16-byte IPv4 enclave node stays in kmalloc-16 instead
 * of growing into kmalloc-32. It may sleep, and every caller is a writer in process context.
 */
void *seng_glue_alloc(size_t size)
{
	return kvmalloc(size, GFP_KERNEL | __GFP_NOWARN);
}

void seng_glue_free(void *ptr)
{
	kvfree(ptr);
}

void seng_glue_retire(void *ptr)
{
	kvfree_rcu_mightsleep(ptr);
}

u64 seng_glue_random_u64(void)
{
	return get_random_u64();
}

/*
 * A writer waits for a grace period on every change that ends connections (an unregistration,
 * say) and on every table swap. A normal grace period takes several jiffies, which held each
 * namespace to about 90 unregistrations a second; the expedited one ends as soon as every CPU has
 * passed a quiescent state, at the cost of an IPI per CPU: a price paid per control-plane request,
 * never on the packet path, as synchronize_net() pays it under RTNL.
 */
void seng_glue_grace_period(void)
{
	synchronize_rcu_expedited();
}

void seng_rust_panic(void)
{
	/* Unreachable: the build rejects a Rust object with a panic path. */
	pr_crit("Rust code panicked\n");
	BUG();
}

/* Per network namespace: the Rust state and the lock serialising its writers. */
struct seng_net {
	struct seng_net_state *rs;
	struct mutex lock;
};

static unsigned int seng_net_id __read_mostly;

static struct seng_net *seng_pernet(const struct net *net)
{
	return net_generic(net, seng_net_id);
}

/* Conntrack: delete every entry with an address whose connections end in either tuple. */
static int seng_end_connections_iter(struct nf_conn *ct, void *set)
{
	u8 family = nf_ct_l3num(ct);
	int dir;

	for (dir = IP_CT_DIR_ORIGINAL; dir <= IP_CT_DIR_REPLY; dir++) {
		const struct nf_conntrack_tuple *t = &ct->tuplehash[dir].tuple;

		if (seng_rs_ending_contains(set, family, (const u8 *)&t->src.u3) ||
		    seng_rs_ending_contains(set, family, (const u8 *)&t->dst.u3))
			return 1;
	}
	return 0;
}

void seng_glue_end_connections(void *net, const void *set)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 19, 0)
	struct nf_ct_iter_data iter = { .net = net, .data = (void *)set };

	nf_ct_iterate_cleanup_net(seng_end_connections_iter, &iter);
#else
	nf_ct_iterate_cleanup_net(net, seng_end_connections_iter, (void *)set, 0, 0);
#endif
}

/* xtables match */

/*
 * net_generic() without its own RCU read-side section: the packet path already runs inside one
 * (netfilter hooks hold it), and on preemptible-RCU kernels such as Debian's the nested lock and
 * unlock are two out-of-line calls on every rule evaluation.
 */
static struct seng_net *seng_pernet_in_rcu(const struct net *net)
{
	return rcu_dereference(net->gen)->ptr[seng_net_id];
}

/*
 * One callback per family: xtables calls a match of one family only for its packets (ip_tables,
 * ip6_tables, and nft_compat in ip and ip6 tables), so the packet path does not dispatch.
 * ip_tables and ip6_tables keep the network header in the linear area.
 */
static bool seng_mt_ipv4(const struct sk_buff *skb, struct xt_action_param *par)
{
	return seng_rs_match_ipv4(seng_pernet_in_rcu(xt_net(par))->rs, par->matchinfo,
				  skb_network_header(skb));
}

static bool seng_mt_ipv6(const struct sk_buff *skb, struct xt_action_param *par)
{
	return seng_rs_match_ipv6(seng_pernet_in_rcu(xt_net(par))->rs, par->matchinfo,
				  skb_network_header(skb));
}

static int seng_mt_check(const struct xt_mtchk_param *par)
{
	const char *msg = "invalid match data";
	int ret = seng_rs_check(par->matchinfo, par->family, &msg);

	if (ret)
		pr_info_ratelimited("rule rejected: %s\n", msg);
	return ret;
}

static struct xt_match seng_mt_reg[] __read_mostly = {
	{
		.name = "seng",
		.revision = 0,
		.family = NFPROTO_IPV4,
		.match = seng_mt_ipv4,
		.checkentry = seng_mt_check,
		.matchsize = XT_ALIGN(SENG_MT_INFO_SIZE),
		.me = THIS_MODULE,
	},
	{
		.name = "seng",
		.revision = 0,
		.family = NFPROTO_IPV6,
		.match = seng_mt_ipv6,
		.checkentry = seng_mt_check,
		.matchsize = XT_ALIGN(SENG_MT_INFO_SIZE),
		.me = THIS_MODULE,
	},
};

/* Generic netlink family */

static const struct nla_policy seng_policy[SENG_A_MAX + 1] = {
	[SENG_A_APP] = NLA_POLICY_EXACT_LEN(SENG_APP_LEN),
	[SENG_A_CAT] = { .type = NLA_NUL_STRING, .len = SENG_CAT_MAX_LEN },
	[SENG_A_HOST] = { .type = NLA_U32 },
	[SENG_A_ENC] = { .type = NLA_U32 },
	[SENG_A_ADD] = { .type = NLA_FLAG },
	[SENG_A_RMV] = { .type = NLA_FLAG },
	[SENG_A_FLUSH] = { .type = NLA_FLAG },
	/*
	 * No nested policy: the Rust decoder checks every attribute of a nest (types, lengths,
	 * repeats) as it reads it, and a nested policy would walk every nest of a batch once more.
	 */
	[SENG_A_ENCLAVE] = { .type = NLA_NESTED },
	[SENG_A_ADDR] = { .type = NLA_BINARY, .len = SENG_ADDR_MAX_LEN },
	[SENG_A_ORIGIN] = { .type = NLA_NUL_STRING, .len = SENG_ORIGIN_MAX_LEN },
	[SENG_A_ALL_ORIGINS] = { .type = NLA_FLAG },
};

/*
 * Group 0 is the original's seng_mcgrp: the original library joins it and fails on anything but
 * its acks, so nothing is ever sent there. Events go to seng_events. They reveal which
 * application runs where: only admins may listen (on 5.10, whose groups have no flags, see
 * seng_events_send).
 */
enum { SENG_GRP_LEGACY, SENG_GRP_EVENTS };

static const struct genl_multicast_group seng_mcgrps[] = {
	[SENG_GRP_LEGACY] = { .name = SENG_MCGRP_NAME },
	[SENG_GRP_EVENTS] = {
		.name = SENG_EVENTS_MCGRP_NAME,
#ifdef GENL_MCAST_CAP_NET_ADMIN
		.flags = GENL_MCAST_CAP_NET_ADMIN,
#endif
	},
};

static struct genl_family seng_family;

#ifdef GENL_MCAST_CAP_NET_ADMIN
static void seng_events_send(struct net *net, struct sk_buff *msg)
{
	genlmsg_multicast_netns(&seng_family, net, msg, 0, SENG_GRP_EVENTS, GFP_KERNEL);
}
#else
/*
 * Anyone may join a group here, so a listener is judged as each event is sent: it is skipped
 * unless the credentials that opened its socket have CAP_NET_ADMIN over the namespace whose
 * table changed. The socket stays valid while the broadcast runs (netlink_release waits for it
 * before freeing the socket), but sock_orphan may clear sk_socket meanwhile: read it once.
 */
static int seng_skip_unprivileged(struct sock *dsk, struct sk_buff *skb, void *net)
{
	struct socket *sock = READ_ONCE(dsk->sk_socket);

	return !sock || !sock->file ||
	       !file_ns_capable(sock->file, ((struct net *)net)->user_ns, CAP_NET_ADMIN);
}

/* genlmsg_multicast_netns with the filter above. */
static void seng_events_send(struct net *net, struct sk_buff *msg)
{
	u32 group = seng_family.mcgrp_offset + SENG_GRP_EVENTS;

	NETLINK_CB(msg).dst_group = group;
	netlink_broadcast_filtered(net->genl_sock, msg, 0, group, GFP_KERNEL,
				   seng_skip_unprivileged, net);
}
#endif

/* Echoes a successful change to the event group as the request that made it. */
static void seng_notify(struct genl_info *info)
{
	u32 len = genlmsg_len(info->genlhdr);
	struct sk_buff *msg;
	void *hdr;

	/* A batch is up to 32 KiB: copy it only for someone. */
	if (!genl_has_listeners(&seng_family, genl_info_net(info), SENG_GRP_EVENTS))
		return;
	msg = genlmsg_new(len, GFP_KERNEL);
	if (!msg)
		return;
	hdr = genlmsg_put(msg, 0, 0, &seng_family, 0, info->genlhdr->cmd);
	if (!hdr) {
		nlmsg_free(msg);
		return;
	}
	skb_put_data(msg, genlmsg_data(info->genlhdr), len);
	genlmsg_end(msg, hdr);
	seng_events_send(genl_info_net(info), msg);
}

static int seng_genl_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct net *net = genl_info_net(info);
	struct seng_net *sn = seng_pernet(net);
	u8 cmd = info->genlhdr->cmd;
	struct seng_request req = {
		.net = net,
		.payload = genlmsg_data(info->genlhdr),
		.payload_len = genlmsg_len(info->genlhdr),
		.portid = info->snd_portid,
		.cmd = cmd,
		.bad_attr_offset = U32_MAX,
	};
	struct sk_buff *reply = NULL;
	void *hdr = NULL;
	int ret;

	if (cmd == SENG_CMD_GET || cmd == SENG_CMD_STATS) {
		reply = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
		if (!reply)
			return -ENOMEM;
		hdr = genlmsg_put_reply(reply, info, &seng_family, 0, cmd);
		if (!hdr) {
			nlmsg_free(reply);
			return -EMSGSIZE;
		}
		req.reply = skb_tail_pointer(reply);
		req.reply_cap = skb_tailroom(reply);
	}

	mutex_lock(&sn->lock);
	ret = seng_rs_doit(sn->rs, &req);
	mutex_unlock(&sn->lock);

	if (ret) {
		if (info->extack && req.errmsg)
			info->extack->_msg = req.errmsg;
		/* The blamed attribute's header must lie inside the payload. */
		if (req.payload_len >= NLA_HDRLEN && req.bad_attr_offset <= req.payload_len - NLA_HDRLEN)
			NL_SET_BAD_ATTR(info->extack, (const struct nlattr *)(req.payload + req.bad_attr_offset));
		nlmsg_free(reply);
		return ret;
	}
	if (reply) {
		skb_put(reply, req.reply_len);
		genlmsg_end(reply, hdr);
		return genlmsg_reply(reply, info);
	}
	if (req.notify)
		seng_notify(info);
	return 0;
}

/* The Rust dump cursor is a u64 kept between parts in cb->args[0]. */
static_assert(sizeof(((struct netlink_callback *)0)->args[0]) >= sizeof(u64),
	      "the dump cursor does not fit in cb->args[0]");

static int seng_genl_dumpit(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct seng_net *sn = seng_pernet(sock_net(skb->sk));
	/* The dump request's attributes say whose entries it reads. */
	const struct genlmsghdr *request = nlmsg_data(cb->nlh);
	u64 cursor = cb->args[0];
	void *hdr;
	int len;

	hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq, &seng_family,
			  NLM_F_MULTI, SENG_CMD_GET);
	if (!hdr)
		return -EMSGSIZE;
	rcu_read_lock();
	cb->seq = seng_rs_dump_stamp(sn->rs);
	len = seng_rs_dump(sn->rs, genlmsg_data(request), genlmsg_len(request), &cursor,
			   skb_tail_pointer(skb), skb_tailroom(skb));
	rcu_read_unlock();
	if (len <= 0) {
		genlmsg_cancel(skb, hdr);
		return len;
	}
	genl_dump_check_consistent(cb, hdr);
	skb_put(skb, len);
	genlmsg_end(skb, hdr);
	cb->args[0] = cursor;
	return skb->len;
}

#define SENG_OP(command) { .cmd = (command), .doit = seng_genl_doit, .flags = GENL_ADMIN_PERM }

static const struct genl_ops seng_ops[] = {
	SENG_OP(SENG_CMD_LEGACY),
	SENG_OP(SENG_CMD_ENCLAVE_SET),
	SENG_OP(SENG_CMD_ENCLAVE_DEL),
	SENG_OP(SENG_CMD_FLUSH),
	SENG_OP(SENG_CMD_CAT_ADD),
	SENG_OP(SENG_CMD_CAT_DEL),
	{
		.cmd = SENG_CMD_GET,
		.doit = seng_genl_doit,
		.dumpit = seng_genl_dumpit,
		.flags = GENL_ADMIN_PERM,
	},
	SENG_OP(SENG_CMD_STATS),
	SENG_OP(SENG_CMD_REPLACE_BEGIN),
	SENG_OP(SENG_CMD_REPLACE_ADD),
	SENG_OP(SENG_CMD_REPLACE_COMMIT),
	SENG_OP(SENG_CMD_REPLACE_ABORT),
	SENG_OP(SENG_CMD_REPLACE_DEL),
	SENG_OP(SENG_CMD_REPLACE_CAT_ADD),
	SENG_OP(SENG_CMD_REPLACE_CAT_DEL),
};
/* A command added to seng_rs.h (and so to seng-core) needs its op here. */
static_assert(ARRAY_SIZE(seng_ops) == SENG_CMD_MAX, "seng_ops lacks a command of seng_rs.h");

static struct genl_family seng_family __ro_after_init = {
	.name = SENG_FAMILY_NAME,
	.version = SENG_FAMILY_VERSION,
	.maxattr = SENG_A_MAX,
	.policy = seng_policy,
	.netnsok = true,
	.parallel_ops = true,
	.module = THIS_MODULE,
	.ops = seng_ops,
	.n_ops = ARRAY_SIZE(seng_ops),
	.mcgrps = seng_mcgrps,
	.n_mcgrps = ARRAY_SIZE(seng_mcgrps),
};

/*
 * A replace transaction dies with the socket that opened it. Every generic netlink socket of
 * the namespace passes here: only one that may own a transaction waits for the writer mutex.
 */
static int seng_netlink_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	struct netlink_notify *n = ptr;
	struct seng_net *sn;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC)
		return NOTIFY_DONE;
	sn = seng_pernet(n->net);
	if (!sn->rs || !seng_rs_may_own_transaction(sn->rs, n->portid))
		return NOTIFY_DONE;
	mutex_lock(&sn->lock);
	seng_rs_release(sn->rs, n->portid);
	mutex_unlock(&sn->lock);
	return NOTIFY_DONE;
}

static struct notifier_block seng_netlink_notifier = {
	.notifier_call = seng_netlink_event,
};

/* Network namespaces */

static int __net_init seng_net_init(struct net *net)
{
	struct seng_net *sn = seng_pernet(net);

	mutex_init(&sn->lock);
	sn->rs = seng_rs_net_new(capacity);
	return sn->rs ? 0 : -ENOMEM;
}

static void __net_exit seng_net_exit_batch(struct list_head *net_exit_list)
{
	struct net *net;

	/* No rule of these namespaces can run any more once readers drain. */
	synchronize_rcu();
	list_for_each_entry(net, net_exit_list, exit_list) {
		struct seng_net *sn = seng_pernet(net);

		seng_rs_net_free(sn->rs);
		sn->rs = NULL;
	}
}

static struct pernet_operations seng_net_ops = {
	.init = seng_net_init,
	.exit_batch = seng_net_exit_batch,
	.id = &seng_net_id,
	.size = sizeof(struct seng_net),
};

static int __init seng_init(void)
{
	int ret;

	if (capacity == 0 || capacity > (1 << 26)) {
		pr_err("capacity must be between 1 and %u\n", 1 << 26);
		return -EINVAL;
	}
	ret = register_pernet_subsys(&seng_net_ops);
	if (ret)
		return ret;
	ret = netlink_register_notifier(&seng_netlink_notifier);
	if (ret)
		goto err_pernet;
	ret = genl_register_family(&seng_family);
	if (ret)
		goto err_notifier;
	ret = xt_register_matches(seng_mt_reg, ARRAY_SIZE(seng_mt_reg));
	if (ret)
		goto err_family;
	pr_info("loaded (capacity %u enclaves per namespace)\n", capacity);
	return 0;

err_family:
	genl_unregister_family(&seng_family);
err_notifier:
	netlink_unregister_notifier(&seng_netlink_notifier);
err_pernet:
	unregister_pernet_subsys(&seng_net_ops);
	return ret;
}

static void __exit seng_exit(void)
{
	xt_unregister_matches(seng_mt_reg, ARRAY_SIZE(seng_mt_reg));
	genl_unregister_family(&seng_family);
	netlink_unregister_notifier(&seng_netlink_notifier);
	unregister_pernet_subsys(&seng_net_ops);
}

module_init(seng_init);
module_exit(seng_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("seng: per-application firewall rules (xt match and generic netlink)");
MODULE_ALIAS("ipt_seng");
MODULE_ALIAS("ip6t_seng");
MODULE_ALIAS_GENL_FAMILY("seng_family");
