/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetap-init: the Kubernetes init container that programs the pod's network
 * namespace so that its inbound and outbound TCP goes through sidetap.
 *
 * It writes chains of its own in the nat table with iptables-restore --noflush
 * (and ip6tables-restore), so nothing else in the namespace is touched:
 *
 *   PREROUTING -p tcp -> SIDETAP_INBOUND
 *     RETURN for the admin port, --skip-inbound-ports and --skip-inbound-cidrs
 *     -> SIDETAP_INBOUND_REDIRECT: REDIRECT --to-ports <inbound-port>
 *   OUTPUT -p tcp -> SIDETAP_OUTPUT
 *     RETURN for sidetap's own UID and GID (its connections upstream and to the
 *       app must not come back to it: that would be a loop)
 *     RETURN for loopback destinations over lo
 *     RETURN for --skip-outbound-ports and --skip-outbound-cidrs
 *     -> SIDETAP_OUTPUT_REDIRECT: REDIRECT --to-ports <outbound-port>
 *
 * Loopback, and why it is captured once: Linkerd returns everything that
 * leaves through lo; Istio returns lo traffic of the app but sends the
 * proxy's own lo traffic to a non-loopback address (the pod's IP) to its
 * inbound listener, and marks its inbound passthrough with source 127.0.0.6.
 * sidetap needs neither trick: its inbound leg connects to the app on
 * 127.0.0.1 as its own UID, which returns. So:
 *   - app to 127.0.0.0/8 or ::1 over lo returns: containers of the pod
 *     talking to each other (or to sidetap's admin port) over localhost is
 *     not the pod's network traffic, and it never leaves the pod;
 *   - app to the pod's own IP also leaves through lo, but is redirected like
 *     any outbound call: sidetap forwards it, as its UID (returned), to the
 *     pod IP, and it reaches the app. The NAT decision for a locally made
 *     connection is taken in OUTPUT, so PREROUTING (and the inbound redirect)
 *     never sees it: captured once, as outbound;
 *   - app to sidetap's own listeners (127.0.0.1:4140, <pod IP>:4143) is
 *     closed by sidetap's loop guard.
 *
 * Re-running is idempotent: declaring a chain in iptables-restore --noflush
 * input empties it, so the chains' contents are replaced; the jumps from
 * PREROUTING and OUTPUT are read back with iptables-save and added only when
 * they are not there exactly once. --cleanup deletes exactly those jumps and
 * chains, read back the same way.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap/log.h"

extern char **environ;

#define PROG "sidetap-init"
#define ENV_PREFIX "SIDETAP_INIT_"
/* Entries per list flag: far more than any pod needs, and it keeps the lists fixed-size. */
#define LIST_MAX 256
/* iptables-save of a pod's nat table is a few KiB; refuse to buffer more than this. */
#define OUTPUT_MAX (16u << 20)
#define CAP_NET_ADMIN_BIT 12
/* The fix for every refusal: what the init container's securityContext needs. */
#define FIX_CAPS                                                               \
	"fix=\"the init container needs user 0 and the NET_ADMIN and NET_RAW " \
	"capabilities: securityContext: {runAsUser: 0, runAsNonRoot: false, "  \
	"capabilities: {add: [NET_ADMIN, NET_RAW]}}\""

#define CH_IN "SIDETAP_INBOUND"
#define CH_IN_REDIRECT "SIDETAP_INBOUND_REDIRECT"
#define CH_OUT "SIDETAP_OUTPUT"
#define CH_OUT_REDIRECT "SIDETAP_OUTPUT_REDIRECT"

static const char *const own_chains[] = { CH_IN, CH_IN_REDIRECT, CH_OUT, CH_OUT_REDIRECT };
#define NCHAINS (sizeof(own_chains) / sizeof(own_chains[0]))

/* The two rules that lead into our chains, in iptables-save's own spelling. */
static const struct {
	const char *from;
	const char *rule; /* after "-A " */
	const char *to;
} jumps[] = {
	{ "PREROUTING", "PREROUTING -p tcp -j " CH_IN, CH_IN },
	{ "OUTPUT", "OUTPUT -p tcp -j " CH_OUT, CH_OUT },
};
#define NJUMPS (sizeof(jumps) / sizeof(jumps[0]))

enum ipv6_mode { IPV6_AUTO, IPV6_ON, IPV6_OFF };

struct port_range {
	uint16_t lo, hi;
};

struct cidr {
	int family;
	unsigned char addr[16];
	unsigned prefix;
};

struct opts {
	uint16_t inbound_port, outbound_port, admin_port;
	uint32_t proxy_uid, proxy_gid;
	struct port_range skip_in[LIST_MAX], skip_out[LIST_MAX];
	unsigned nskip_in, nskip_out;
	struct cidr cidrs[LIST_MAX]; /* outbound destinations */
	unsigned ncidrs;
	struct cidr in_cidrs[LIST_MAX]; /* inbound sources */
	unsigned nin_cidrs;
	enum ipv6_mode ipv6;
	bool dry_run, cleanup, help, version;
};

/* One address family: which programs program it and how it spells loopback. */
struct family {
	int af;
	const char *name; /* ipv4, ipv6 */
	const char *restore;
	const char *save;
	const char *loopback;
};

static const struct family fam4 = { AF_INET, "ipv4", "iptables-restore", "iptables-save",
				    "127.0.0.0/8" };
static const struct family fam6 = { AF_INET6, "ipv6", "ip6tables-restore", "ip6tables-save",
				    "::1/128" };

/* ---- logging ---------------------------------------------------------------------------- */

enum { LOG_ERR, LOG_WARN, LOG_INFO };

static void logkv(int level, const char *msg, const char *fields, ...)
{
	static const char *const names[] = { "error", "warn", "info" };
	va_list ap;

	va_start(ap, fields);
	tap_log_vwrite(names[level], msg, "init", fields, ap);
	va_end(ap);
}

/*
 * Quotes <s> for a log value into <buf>: backslash, double quote and control
 * characters escaped, trailing newlines dropped, cut at <len>.
 */
static const char *quoted(const char *s, char *buf, size_t len)
{
	size_t n = 0, end = strlen(s);

	while (end && (s[end - 1] == '\n' || s[end - 1] == '\r'))
		end--;
	buf[n++] = '"';
	for (size_t i = 0; i < end && n + 5 < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			buf[n++] = '\\';
			buf[n++] = (char)c;
		} else if (c == '\n') {
			buf[n++] = '\\';
			buf[n++] = 'n';
		} else if (c < 0x20 || c == 0x7f) {
			buf[n++] = ' ';
		} else {
			buf[n++] = (char)c;
		}
	}
	buf[n++] = '"';
	buf[n] = '\0';
	return buf;
}

/* ---- flags and environment -------------------------------------------------------------- */

/* A number of decimal digits only, within [<min>, <max>]. */
static int parse_uint(const char *v, unsigned long long min, unsigned long long max,
		      unsigned long long *out)
{
	unsigned long long n = 0;

	if (!*v || strlen(v) > 20)
		return -EINVAL;
	for (const char *p = v; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		if (n > (ULLONG_MAX - 9) / 10)
			return -ERANGE;
		n = n * 10 + (unsigned)(*p - '0');
	}
	if (n < min || n > max)
		return -ERANGE;
	*out = n;
	return 0;
}

static int parse_port(const char *v, uint16_t *out)
{
	unsigned long long n;

	if (parse_uint(v, 1, 65535, &n))
		return -EINVAL;
	*out = (uint16_t)n;
	return 0;
}

/* <s>[0..<n>) without the blanks around it, copied into <buf>. */
static const char *trimmed(const char *s, size_t n, char *buf, size_t len)
{
	while (n && isspace((unsigned char)*s))
		s++, n--;
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	if (n >= len)
		n = len - 1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return buf;
}

/*
 * Splits <v> at commas and calls <item> on each entry, blanks trimmed. An
 * empty <v> is an empty list; an empty entry is an error.
 */
static int for_each_item(const char *v, int (*item)(const char *, void *), void *arg)
{
	char buf[128];

	if (strspn(v, " \t") == strlen(v))
		return 0;
	for (;;) {
		const char *comma = strchr(v, ',');
		size_t n = comma ? (size_t)(comma - v) : strlen(v);
		int ret;

		if (n >= sizeof(buf))
			return -EINVAL;
		trimmed(v, n, buf, sizeof(buf));
		if (!buf[0])
			return -EINVAL;
		ret = item(buf, arg);
		if (ret)
			return ret;
		if (!comma)
			return 0;
		v = comma + 1;
	}
}

struct port_list {
	struct port_range *r;
	unsigned *n;
};

static int add_port_range(const char *s, void *arg)
{
	struct port_list *l = arg;
	const char *sep = strpbrk(s, ":-");
	struct port_range pr;
	char a[16];

	if (sep) {
		if ((size_t)(sep - s) >= sizeof(a))
			return -EINVAL;
		memcpy(a, s, (size_t)(sep - s));
		a[sep - s] = '\0';
		if (parse_port(a, &pr.lo) || parse_port(sep + 1, &pr.hi) || pr.lo > pr.hi)
			return -EINVAL;
	} else {
		if (parse_port(s, &pr.lo))
			return -EINVAL;
		pr.hi = pr.lo;
	}
	for (unsigned i = 0; i < *l->n; i++)
		if (l->r[i].lo == pr.lo && l->r[i].hi == pr.hi)
			return 0; /* a repeated entry is one rule */
	if (*l->n >= LIST_MAX)
		return -E2BIG;
	l->r[(*l->n)++] = pr;
	return 0;
}

static int parse_cidr(const char *s, struct cidr *c)
{
	const char *slash = strchr(s, '/');
	char addr[INET6_ADDRSTRLEN];
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long long prefix;
	unsigned max;

	if (n == 0 || n >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, n);
	addr[n] = '\0';
	memset(c, 0, sizeof(*c));
	c->family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(c->family, addr, c->addr) != 1)
		return -EINVAL;
	max = c->family == AF_INET6 ? 128 : 32;
	if (!slash) {
		c->prefix = max;
	} else {
		if (strlen(slash + 1) > 3 || parse_uint(slash + 1, 0, max, &prefix))
			return -EINVAL;
		c->prefix = (unsigned)prefix;
	}
	/* The network, as iptables itself keeps it: 10.1.2.3/8 is 10.0.0.0/8. */
	for (unsigned bit = c->prefix; bit < max; bit++)
		c->addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
	return 0;
}

struct cidr_list {
	struct cidr *c;
	unsigned *n;
};

static int add_cidr(const char *s, void *arg)
{
	struct cidr_list *l = arg;
	struct cidr c;

	if (parse_cidr(s, &c))
		return -EINVAL;
	for (unsigned i = 0; i < *l->n; i++)
		if (l->c[i].family == c.family && l->c[i].prefix == c.prefix &&
		    memcmp(l->c[i].addr, c.addr, sizeof(c.addr)) == 0)
			return 0;
	if (*l->n >= LIST_MAX)
		return -E2BIG;
	l->c[(*l->n)++] = c;
	return 0;
}

#define WHY_PORT "accepted: a TCP port from 1 to 65535"
#define WHY_ID "accepted: a number from 0 to 4294967294"
#define WHY_PORTS                                                                         \
	"accepted: a comma-separated list of TCP ports (1 to 65535) and ranges LO:HI or " \
	"LO-HI with LO <= HI, e.g. 22,9000:9100; at most 256 entries"
#define WHY_CIDRS                                                                          \
	"accepted: a comma-separated list of IPv4 or IPv6 addresses or CIDRs, e.g. "       \
	"10.96.0.0/12,169.254.169.254,fd00::/8 (prefix up to 32 for IPv4, 128 for IPv6); " \
	"at most 256 entries"
#define WHY_BOOL "accepted: 1, true, yes, on, 0, false, no, off"

static int set_port(uint16_t *out, const char *v, const char **why)
{
	*why = WHY_PORT;
	return parse_port(v, out);
}

static int set_inbound_port(struct opts *o, const char *v, const char **why)
{
	return set_port(&o->inbound_port, v, why);
}

static int set_outbound_port(struct opts *o, const char *v, const char **why)
{
	return set_port(&o->outbound_port, v, why);
}

static int set_admin_port(struct opts *o, const char *v, const char **why)
{
	return set_port(&o->admin_port, v, why);
}

static int set_id(uint32_t *out, const char *v, const char **why)
{
	unsigned long long n;

	*why = WHY_ID;
	/* (uid_t)-1 means "no change" to the kernel: no process runs as it. */
	if (parse_uint(v, 0, 4294967294ull, &n))
		return -EINVAL;
	*out = (uint32_t)n;
	return 0;
}

static int set_proxy_uid(struct opts *o, const char *v, const char **why)
{
	return set_id(&o->proxy_uid, v, why);
}

static int set_proxy_gid(struct opts *o, const char *v, const char **why)
{
	return set_id(&o->proxy_gid, v, why);
}

static int set_skip_in(struct opts *o, const char *v, const char **why)
{
	struct port_list l = { o->skip_in, &o->nskip_in };

	*why = WHY_PORTS;
	o->nskip_in = 0;
	return for_each_item(v, add_port_range, &l);
}

static int set_skip_out(struct opts *o, const char *v, const char **why)
{
	struct port_list l = { o->skip_out, &o->nskip_out };

	*why = WHY_PORTS;
	o->nskip_out = 0;
	return for_each_item(v, add_port_range, &l);
}

static int set_cidrs(struct opts *o, const char *v, const char **why)
{
	struct cidr_list l = { o->cidrs, &o->ncidrs };

	*why = WHY_CIDRS;
	o->ncidrs = 0;
	return for_each_item(v, add_cidr, &l);
}

static int set_in_cidrs(struct opts *o, const char *v, const char **why)
{
	struct cidr_list l = { o->in_cidrs, &o->nin_cidrs };

	*why = WHY_CIDRS;
	o->nin_cidrs = 0;
	return for_each_item(v, add_cidr, &l);
}

static int set_ipv6(struct opts *o, const char *v, const char **why)
{
	*why = "accepted: auto, on, off";
	if (strcmp(v, "auto") == 0)
		o->ipv6 = IPV6_AUTO;
	else if (strcmp(v, "on") == 0)
		o->ipv6 = IPV6_ON;
	else if (strcmp(v, "off") == 0)
		o->ipv6 = IPV6_OFF;
	else
		return -EINVAL;
	return 0;
}

static int set_bool(bool *out, const char *v, const char **why)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };

	*why = WHY_BOOL;
	for (unsigned i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int set_dry_run(struct opts *o, const char *v, const char **why)
{
	return set_bool(&o->dry_run, v, why);
}

static int set_cleanup(struct opts *o, const char *v, const char **why)
{
	return set_bool(&o->cleanup, v, why);
}

struct opt {
	const char *flag;
	const char *metavar; /* NULL: a switch, no value on the command line */
	const char *def;
	int (*set)(struct opts *o, const char *v, const char **why);
	const char *help;
};

static const struct opt opt_table[] = {
	{ "inbound-port", "PORT", "4143", set_inbound_port,
	  "sidetap's inbound listener: inbound TCP is redirected here" },
	{ "outbound-port", "PORT", "4140", set_outbound_port,
	  "sidetap's outbound listener: outbound TCP is redirected here" },
	{ "admin-port", "PORT", "4191", set_admin_port,
	  "sidetap's admin port: inbound to it is never redirected" },
	{ "proxy-uid", "UID", "2102", set_proxy_uid,
	  "sidetap's user: its outbound traffic is not redirected" },
	{ "proxy-gid", "GID", "2102", set_proxy_gid,
	  "sidetap's group: its outbound traffic is not redirected" },
	{ "skip-inbound-ports", "LIST", "", set_skip_in,
	  "inbound ports not redirected, e.g. 22,9000:9100" },
	{ "skip-inbound-cidrs", "LIST", "", set_in_cidrs,
	  "inbound sources not redirected, e.g. 10.0.5.0/24 (probes, scrapers)" },
	{ "skip-outbound-ports", "LIST", "", set_skip_out,
	  "outbound ports not redirected, e.g. 25,3306" },
	{ "skip-outbound-cidrs", "LIST", "", set_cidrs,
	  "outbound destinations not redirected, e.g. 10.96.0.0/12,fd00::/8" },
	{ "ipv6", "auto|on|off", "auto", set_ipv6,
	  "ip6tables rules too (auto: if the namespace has a global IPv6 address)" },
	{ "dry-run", NULL, NULL, set_dry_run,
	  "print the iptables-restore input and change nothing" },
	{ "cleanup", NULL, NULL, set_cleanup,
	  "remove sidetap-init's chains and jumps, nothing else" },
};
#define NOPTS (sizeof(opt_table) / sizeof(opt_table[0]))

static void env_name(const char *flag, char *buf, size_t len)
{
	size_t n = strlen(ENV_PREFIX);

	memcpy(buf, ENV_PREFIX, n);
	for (size_t i = 0; flag[i] && n + 1 < len; i++)
		buf[n++] = flag[i] == '-' ? '_' : (char)toupper((unsigned char)flag[i]);
	buf[n] = '\0';
}

static void usage(FILE *out)
{
	char name[64], left[64];

	fprintf(out, "usage: " PROG " [FLAG VALUE]... [--dry-run] [--cleanup]\n"
		     "\n"
		     "Programs the pod's network namespace for sidetap (run as the pod's init\n"
		     "container): inbound TCP is redirected to --inbound-port, outbound TCP to\n"
		     "--outbound-port, except sidetap's own traffic (--proxy-uid, --proxy-gid),\n"
		     "loopback, the admin port and what the skip flags name. The rules live in\n"
		     "chains of their own in the nat table (" CH_IN ", " CH_IN_REDIRECT ",\n" CH_OUT
		     ", " CH_OUT_REDIRECT "), written with iptables-restore --noflush;\n"
		     "running it again replaces them, --cleanup removes them.\n"
		     "\n"
		     "Each flag can also be set as the environment variable shown; a flag wins\n"
		     "over the environment. Flags take --flag VALUE or --flag=VALUE.\n"
		     "\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opt_table[i];

		env_name(o->flag, name, sizeof(name));
		snprintf(left, sizeof(left), "--%s%s%s", o->flag, o->metavar ? " " : "",
			 o->metavar ? o->metavar : "");
		fprintf(out, "  %-30s %s\n", left, o->help);
		if (o->metavar)
			fprintf(out, "  %-30s env %s; default %s\n", "", name,
				o->def[0] ? o->def : "none");
		else
			fprintf(out, "  %-30s env %s=1\n", "", name);
	}
	fprintf(out,
		"  %-30s print this help\n"
		"  %-30s print the version\n"
		"\n"
		"Needs root with the NET_ADMIN and NET_RAW capabilities, and iptables-restore,\n"
		"iptables-save (and their ip6tables twins for IPv6) on PATH. Exit status: 0 done,\n"
		"1 the rules could not be written (the message says why), 2 a bad flag.\n",
		"--help", "--version");
}

static const struct opt *opt_find(const char *flag)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (strcmp(opt_table[i].flag, flag) == 0)
			return &opt_table[i];
	return NULL;
}

static int apply_opt(struct opts *o, const struct opt *op, const char *v, const char *source)
{
	const char *why = "invalid value";
	int ret = op->set(o, v, &why);

	if (ret) {
		fprintf(stderr, PROG ": %s: invalid value '%s': %s\n", source, v, why);
		return -EINVAL;
	}
	return 0;
}

/* Cross-flag rules: listeners and the admin port must be three different ports. */
static int validate(const struct opts *o)
{
	if (o->inbound_port == o->outbound_port) {
		fprintf(stderr,
			PROG ": --inbound-port and --outbound-port are both %u: sidetap's two "
			     "listeners need different ports\n",
			o->inbound_port);
		return -EINVAL;
	}
	if (o->admin_port == o->inbound_port || o->admin_port == o->outbound_port) {
		fprintf(stderr,
			PROG ": --admin-port %u is also --%s-port: the admin port must differ "
			     "from both listeners' ports\n",
			o->admin_port, o->admin_port == o->inbound_port ? "inbound" : "outbound");
		return -EINVAL;
	}
	return 0;
}

/* Defaults, then SIDETAP_INIT_* (empty counts as unset), then flags. Returns 0 or -EINVAL. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	char name[64];
	int ret;

	memset(o, 0, sizeof(*o));
	for (size_t i = 0; i < NOPTS; i++) {
		if (opt_table[i].def &&
		    (ret = apply_opt(o, &opt_table[i], opt_table[i].def, "default")))
			return ret;
	}
	for (size_t i = 0; i < NOPTS; i++) {
		const char *v;

		env_name(opt_table[i].flag, name, sizeof(name));
		v = getenv(name);
		if (v && *v && (ret = apply_opt(o, &opt_table[i], v, name)))
			return ret;
	}
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq, *v;
		const struct opt *op;
		char flag[64];
		size_t n;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			o->help = true;
			return 0;
		}
		if (strcmp(arg, "--version") == 0) {
			o->version = true;
			return 0;
		}
		if (strncmp(arg, "--", 2) != 0) {
			fprintf(stderr, PROG ": unexpected argument '%s' (see " PROG " --help)\n",
				arg);
			return -EINVAL;
		}
		eq = strchr(arg, '=');
		n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
		if (n >= sizeof(flag))
			n = sizeof(flag) - 1;
		memcpy(flag, arg + 2, n);
		flag[n] = '\0';
		op = opt_find(flag);
		if (!op) {
			fprintf(stderr, PROG ": unknown flag '--%s' (see " PROG " --help)\n", flag);
			return -EINVAL;
		}
		snprintf(name, sizeof(name), "--%s", op->flag);
		if (!op->metavar) {
			if (eq) {
				fprintf(stderr, PROG ": %s takes no value (got '%s')\n", name,
					eq + 1);
				return -EINVAL;
			}
			v = "1";
		} else if (eq) {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			fprintf(stderr, PROG ": %s needs a value: %s\n", name, op->metavar);
			return -EINVAL;
		}
		ret = apply_opt(o, op, v, name);
		if (ret)
			return ret;
	}
	return validate(o);
}

/* ---- the rules -------------------------------------------------------------------------- */

static void put_ports(FILE *f, const char *chain, const struct port_range *r)
{
	if (r->lo == r->hi)
		fprintf(f, "-A %s -p tcp -m tcp --dport %u -j RETURN\n", chain, r->lo);
	else
		fprintf(f, "-A %s -p tcp -m tcp --dport %u:%u -j RETURN\n", chain, r->lo, r->hi);
}

/* RETURN rules in <chain> for the <fam> entries of <c>, matched as <dir> (-s or -d). */
static void put_cidrs(FILE *f, const char *chain, const char *dir, const struct cidr *c, unsigned n,
		      const struct family *fam)
{
	char addr[INET6_ADDRSTRLEN];

	for (unsigned i = 0; i < n; i++) {
		if (c[i].family != fam->af)
			continue;
		/* A /0 matches everything; iptables-save prints it without -s or -d. */
		if (c[i].prefix == 0)
			fprintf(f, "-A %s -j RETURN\n", chain);
		else
			fprintf(f, "-A %s %s %s/%u -j RETURN\n", chain, dir,
				inet_ntop(c[i].family, c[i].addr, addr, sizeof(addr)), c[i].prefix);
	}
}

/*
 * The rules of our four chains for <fam>, one per line, spelled the way
 * iptables-save prints them (so a saved table can be compared line by line).
 */
static void put_chain_rules(FILE *f, const struct opts *o, const struct family *fam)
{
	fprintf(f, "-A " CH_IN " -p tcp -m tcp --dport %u -j RETURN\n", o->admin_port);
	for (unsigned i = 0; i < o->nskip_in; i++)
		if (o->skip_in[i].lo != o->admin_port || o->skip_in[i].hi != o->admin_port)
			put_ports(f, CH_IN, &o->skip_in[i]);
	put_cidrs(f, CH_IN, "-s", o->in_cidrs, o->nin_cidrs, fam);
	fprintf(f, "-A " CH_IN " -p tcp -j " CH_IN_REDIRECT "\n");
	fprintf(f, "-A " CH_IN_REDIRECT " -p tcp -j REDIRECT --to-ports %u\n", o->inbound_port);

	fprintf(f, "-A " CH_OUT " -m owner --uid-owner %u -j RETURN\n", o->proxy_uid);
	fprintf(f, "-A " CH_OUT " -m owner --gid-owner %u -j RETURN\n", o->proxy_gid);
	fprintf(f, "-A " CH_OUT " -d %s -o lo -j RETURN\n", fam->loopback);
	for (unsigned i = 0; i < o->nskip_out; i++)
		put_ports(f, CH_OUT, &o->skip_out[i]);
	put_cidrs(f, CH_OUT, "-d", o->cidrs, o->ncidrs, fam);
	fprintf(f, "-A " CH_OUT " -p tcp -j " CH_OUT_REDIRECT "\n");
	fprintf(f, "-A " CH_OUT_REDIRECT " -p tcp -j REDIRECT --to-ports %u\n", o->outbound_port);
}

/* What iptables-save says about our chains and the rules that jump into them. */
struct nat_state {
	bool chain[NCHAINS];
	/* Rules of other chains whose target is one of ours, as saved (after "-A "). */
	char **jump_rules;
	unsigned njump_rules;
};

static void nat_state_fini(struct nat_state *st)
{
	for (unsigned i = 0; i < st->njump_rules; i++)
		free(st->jump_rules[i]);
	free(st->jump_rules);
	memset(st, 0, sizeof(*st));
}

static int own_chain_index(const char *name, size_t len)
{
	for (unsigned i = 0; i < NCHAINS; i++)
		if (strlen(own_chains[i]) == len && memcmp(own_chains[i], name, len) == 0)
			return (int)i;
	return -1;
}

/*
 * Splits a saved rule into words the way iptables-restore does: blanks
 * separate, double quotes group (a comment may hold " -j X"), backslash
 * escapes. Calls <word> with each; stops when it returns true.
 */
static void rule_words(const char *s, bool (*word)(const char *w, size_t n, void *arg), void *arg)
{
	char buf[1024];

	while (*s) {
		size_t n = 0;
		bool quote = false;

		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s)
			break;
		while (*s && (quote || (*s != ' ' && *s != '\t'))) {
			if (*s == '\\' && s[1]) {
				s++;
			} else if (*s == '"') {
				quote = !quote;
				s++;
				continue;
			}
			if (n < sizeof(buf) - 1)
				buf[n++] = *s;
			s++;
		}
		buf[n] = '\0';
		if (word(buf, n, arg))
			return;
	}
}

struct target_scan {
	bool next_is_target;
	int target; /* index in own_chains, or -1 */
	unsigned nword;
	char chain[64]; /* the rule's own chain (its first word) */
};

static bool target_word(const char *w, size_t n, void *arg)
{
	struct target_scan *t = arg;

	if (t->nword++ == 0) {
		snprintf(t->chain, sizeof(t->chain), "%s", w);
		return false;
	}
	if (t->next_is_target) {
		t->target = own_chain_index(w, n);
		t->next_is_target = false;
	} else if (strcmp(w, "-j") == 0 || strcmp(w, "--jump") == 0 || strcmp(w, "-g") == 0 ||
		   strcmp(w, "--goto") == 0) {
		t->next_is_target = true;
	}
	return false;
}

/* Reads iptables-save -t nat output. Returns 0 or -ENOMEM. */
static int nat_state_parse(const char *saved, struct nat_state *st)
{
	const char *line = saved;
	bool in_nat = false;

	memset(st, 0, sizeof(*st));
	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char *copy = strndup(line, len);

		if (!copy)
			goto err_free_state;
		if (strcmp(copy, "*nat") == 0) {
			in_nat = true;
		} else if (copy[0] == '*' || strcmp(copy, "COMMIT") == 0) {
			in_nat = false;
		} else if (in_nat && copy[0] == ':') {
			int k = own_chain_index(copy + 1, strcspn(copy + 1, " "));

			if (k >= 0)
				st->chain[k] = true;
		} else if (in_nat && strncmp(copy, "-A ", 3) == 0) {
			struct target_scan t = { .target = -1 };

			rule_words(copy + 3, target_word, &t);
			if (t.target >= 0 && own_chain_index(t.chain, strlen(t.chain)) < 0) {
				char **grown = realloc(st->jump_rules,
						       (st->njump_rules + 1) * sizeof(char *));

				if (!grown) {
					free(copy);
					goto err_free_state;
				}
				st->jump_rules = grown;
				st->jump_rules[st->njump_rules] = strdup(copy + 3);
				if (!st->jump_rules[st->njump_rules]) {
					free(copy);
					goto err_free_state;
				}
				st->njump_rules++;
			}
		}
		free(copy);
		line = nl ? nl + 1 : NULL;
	}
	return 0;

err_free_state:
	nat_state_fini(st);
	return -ENOMEM;
}

/* True when saved rule <r> (after "-A ") is a jump of the kind jumps[<j>] is. */
static bool is_jump_of(const char *r, unsigned j)
{
	size_t flen = strlen(jumps[j].from);
	struct target_scan t = { .target = -1 };

	if (strncmp(r, jumps[j].from, flen) != 0 || r[flen] != ' ')
		return false;
	rule_words(r, target_word, &t);
	return t.target >= 0 && strcmp(own_chains[t.target], jumps[j].to) == 0;
}

/*
 * The iptables-restore input that installs our rules for <fam>. <st> NULL:
 * for a namespace without them (what --dry-run prints). Otherwise a jump
 * that is there exactly once, as we write it, stays where it is; any other
 * jump from PREROUTING/OUTPUT into our chains is deleted and ours appended.
 */
static void put_install(FILE *f, const struct opts *o, const struct family *fam,
			const struct nat_state *st)
{
	fputs("*nat\n", f);
	for (unsigned i = 0; i < NCHAINS; i++)
		fprintf(f, ":%s - [0:0]\n", own_chains[i]);
	for (unsigned j = 0; j < NJUMPS; j++) {
		unsigned same = 0, other = 0;

		for (unsigned i = 0; st && i < st->njump_rules; i++) {
			if (!is_jump_of(st->jump_rules[i], j))
				continue;
			if (strcmp(st->jump_rules[i], jumps[j].rule) == 0)
				same++;
			else
				other++;
		}
		if (same == 1 && other == 0)
			continue;
		for (unsigned i = 0; st && i < st->njump_rules; i++)
			if (is_jump_of(st->jump_rules[i], j))
				fprintf(f, "-D %s\n", st->jump_rules[i]);
		fprintf(f, "-A %s\n", jumps[j].rule);
	}
	put_chain_rules(f, o, fam);
	fputs("COMMIT\n", f);
}

/*
 * The iptables-restore input that removes our jumps and chains. Returns false
 * (and writes nothing) when there is nothing of ours in <st>.
 */
static bool put_cleanup(FILE *f, const struct nat_state *st)
{
	bool any = st->njump_rules > 0;

	for (unsigned i = 0; i < NCHAINS; i++)
		any = any || st->chain[i];
	if (!any)
		return false;
	fputs("*nat\n", f);
	for (unsigned i = 0; i < st->njump_rules; i++)
		fprintf(f, "-D %s\n", st->jump_rules[i]);
	/* Our chains jump into each other: empty all of them before deleting any. */
	for (unsigned i = 0; i < NCHAINS; i++)
		if (st->chain[i])
			fprintf(f, "-F %s\n", own_chains[i]);
	for (unsigned i = 0; i < NCHAINS; i++)
		if (st->chain[i])
			fprintf(f, "-X %s\n", own_chains[i]);
	fputs("COMMIT\n", f);
	return true;
}

/* ---- running iptables ------------------------------------------------------------------- */

/* Finds <prog> on PATH. Returns 0 with its path in <out>, or -ENOENT. */
static int find_program(const char *prog, char *out, size_t len)
{
	const char *path = getenv("PATH");

	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		struct stat sb;

		if (n && (size_t)snprintf(out, len, "%.*s/%s", (int)n, path, prog) < len &&
		    stat(out, &sb) == 0 && S_ISREG(sb.st_mode) && access(out, X_OK) == 0)
			return 0;
		path += n;
		if (*path == ':')
			path++;
	}
	return -ENOENT;
}

struct strbuf {
	char *p;
	size_t len, cap;
};

static int strbuf_add(struct strbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (cap > OUTPUT_MAX)
			return -EFBIG;
		p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/*
 * Runs <argv> (argv[0] a full path) with <in> on its stdin and collects its
 * stdout into <out> and stderr into <err> (both NUL-terminated; the caller
 * frees them). Returns the exit status (128+signal when killed) or a
 * negative errno when it could not be run.
 */
static int run_program(char *const argv[], const char *in, struct strbuf *out, struct strbuf *err)
{
	int pin[2], pout[2], perr[2];
	posix_spawn_file_actions_t fa;
	size_t in_off = 0, in_len = in ? strlen(in) : 0;
	struct pollfd pfd[3];
	pid_t pid;
	int ret, status;

	if (pipe2(pin, O_CLOEXEC) == -1)
		return -errno;
	if (pipe2(pout, O_CLOEXEC) == -1) {
		ret = -errno;
		goto err_close_in;
	}
	if (pipe2(perr, O_CLOEXEC) == -1) {
		ret = -errno;
		goto err_close_out;
	}
	ret = posix_spawn_file_actions_init(&fa);
	if (ret) {
		ret = -ret;
		goto err_close_err;
	}
	posix_spawn_file_actions_adddup2(&fa, pin[0], STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, pout[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, perr[1], STDERR_FILENO);
	ret = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (ret) {
		ret = -ret;
		goto err_close_err;
	}
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	pin[0] = pout[1] = perr[1] = -1;
	if (in_len == 0) {
		close(pin[1]);
		pin[1] = -1;
	}
	/* Feed stdin while draining both outputs: neither side can fill a pipe and wait. */
	while (pin[1] != -1 || pout[0] != -1 || perr[0] != -1) {
		pfd[0] = (struct pollfd){ .fd = pin[1], .events = POLLOUT };
		pfd[1] = (struct pollfd){ .fd = pout[0], .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = perr[0], .events = POLLIN };
		if (poll(pfd, 3, -1) == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents) {
			ssize_t n = write(pin[1], in + in_off, in_len - in_off);

			if (n > 0)
				in_off += (size_t)n;
			if (n < 0 || in_off == in_len) {
				/* EPIPE: it stopped reading; its stderr says why. */
				close(pin[1]);
				pin[1] = -1;
			}
		}
		for (int k = 1; k < 3; k++) {
			int *fd = k == 1 ? &pout[0] : &perr[0];
			struct strbuf *b = k == 1 ? out : err;
			char buf[4096];
			ssize_t n;

			if (!pfd[k].revents)
				continue;
			n = read(*fd, buf, sizeof(buf));
			if (n > 0 && strbuf_add(b, buf, (size_t)n) == 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			close(*fd);
			*fd = -1;
		}
	}
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -errno;
	/* Callers read both as strings, even when the program printed nothing. */
	if ((!out->p && strbuf_add(out, "", 0)) || (!err->p && strbuf_add(err, "", 0)))
		return -ENOMEM;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

err_close_err:
	if (perr[0] != -1)
		close(perr[0]);
	if (perr[1] != -1)
		close(perr[1]);
err_close_out:
	close(pout[0]);
	close(pout[1]);
err_close_in:
	close(pin[0]);
	close(pin[1]);
	return ret;
}

/* True when <hay> mentions any of the NULL-terminated <needles>. */
static bool mentions(const char *hay, const char *const needles[])
{
	for (unsigned i = 0; needles[i]; i++)
		if (strstr(hay, needles[i]))
			return true;
	return false;
}

/* Explains a failed iptables(-save|-restore) run: what went wrong and the fix. */
static void report_failure(const char *prog, int status, const char *stderr_text,
			   const struct family *fam)
{
	static const char *const eperm[] = { "Permission denied", "Operation not permitted",
					     "you must be root", NULL };
	static const char *const no_table[] = {
		"Table does not exist",	    "unable to initialize table", "can't initialize",
		"Could not fetch rule set", "Protocol not supported",	  NULL
	};
	char q[2048];

	quoted(stderr_text, q, sizeof(q));
	if (mentions(stderr_text, eperm))
		logkv(LOG_ERR, "not permitted to change the namespace's iptables rules",
		      "family=%s program=%s status=%d stderr=%s " FIX_CAPS, fam->name, prog, status,
		      q);
	else if (mentions(stderr_text, no_table))
		logkv(LOG_ERR, "cannot open the nat table",
		      "family=%s program=%s status=%d stderr=%s fix=\"give the init container "
		      "the NET_ADMIN and NET_RAW capabilities; if it has them, the node's kernel "
		      "lacks %s NAT (modules %s) or this iptables backend (nft or legacy): load "
		      "the module or use the backend the node uses%s\"",
		      fam->name, prog, status, q, fam->name,
		      fam->af == AF_INET ? "nf_nat, iptable_nat or nft_chain_nat" :
					   "nf_nat, ip6table_nat or nft_chain_nat",
		      fam->af == AF_INET6 ? ", or run with --ipv6 off" : "");
	else
		logkv(LOG_ERR, "iptables failed",
		      "family=%s program=%s status=%d stderr=%s fix=\"see stderr; " PROG
		      " --dry-run prints the rules it writes\"",
		      fam->name, prog, status, q);
}

struct tools {
	char restore[PATH_MAX];
	char save[PATH_MAX];
};

/* Locates both programs of <fam>. Returns 0, or -ENOENT with <missing> naming the one not found. */
static int tools_find(const struct family *fam, struct tools *t, const char **missing)
{
	if (find_program(fam->restore, t->restore, sizeof(t->restore))) {
		*missing = fam->restore;
		return -ENOENT;
	}
	if (find_program(fam->save, t->save, sizeof(t->save))) {
		*missing = fam->save;
		return -ENOENT;
	}
	return 0;
}

/* Reads the nat table of <fam>. Returns 0 or a negative errno (reported). */
static int read_state(const struct family *fam, const struct tools *t, struct nat_state *st)
{
	char *argv[] = { (char *)t->save, "-t", "nat", NULL };
	struct strbuf out = { 0 }, err = { 0 };
	int ret;

	ret = run_program(argv, NULL, &out, &err);
	if (ret < 0) {
		logkv(LOG_ERR, "cannot run iptables-save", "family=%s program=%s error=\"%s\"",
		      fam->name, t->save, strerror(-ret));
		goto out_free;
	}
	if (ret != 0) {
		report_failure(fam->save, ret, err.p, fam);
		ret = -EIO;
		goto out_free;
	}
	ret = nat_state_parse(out.p, st);
	if (ret)
		logkv(LOG_ERR, "out of memory reading the nat table", "family=%s", fam->name);
out_free:
	free(out.p);
	free(err.p);
	return ret;
}

/* Feeds <input> to <fam>'s iptables-restore --noflush. Returns 0 or a negative errno (reported). */
static int restore(const struct family *fam, const struct tools *t, const char *input)
{
	char *argv[] = { (char *)t->restore, "--noflush", NULL };
	struct strbuf out = { 0 }, err = { 0 };
	int ret;

	ret = run_program(argv, input, &out, &err);
	if (ret < 0) {
		logkv(LOG_ERR, "cannot run iptables-restore", "family=%s program=%s error=\"%s\"",
		      fam->name, t->restore, strerror(-ret));
	} else if (ret != 0) {
		report_failure(fam->restore, ret, err.p, fam);
		ret = -EIO;
	}
	free(out.p);
	free(err.p);
	return ret;
}

/*
 * Installs (or with o->cleanup removes) our rules for <fam>; with
 * o->dry_run prints the input instead. Returns 0 or a negative errno
 * (reported).
 */
static int program_family(const struct opts *o, const struct family *fam, const struct tools *t)
{
	struct nat_state st;
	char *input = NULL;
	size_t len;
	bool any = true;
	FILE *f;
	int ret;

	ret = read_state(fam, t, &st);
	if (ret)
		return ret;
	f = open_memstream(&input, &len);
	if (!f) {
		ret = -errno;
		goto err_fini_state;
	}
	if (o->cleanup)
		any = put_cleanup(f, &st);
	else
		put_install(f, o, fam, &st);
	if (fclose(f) != 0) {
		ret = -ENOMEM;
		goto err_free_input;
	}
	if (!any) {
		if (o->dry_run)
			printf("# " PROG ": nothing of " PROG "'s in the %s nat table\n",
			       fam->name);
		else
			logkv(LOG_INFO, "nothing to remove", "family=%s", fam->name);
	} else if (o->dry_run) {
		/* Only cleanup gets here: an install's dry run needs no state (main). */
		printf("# " PROG ": %s --noflush input (%s, cleanup)\n", fam->restore, fam->name);
		fputs(input, stdout);
	} else {
		ret = restore(fam, t, input);
		if (ret == 0 && o->cleanup)
			logkv(LOG_INFO, "rules removed", "family=%s jumps=%u", fam->name,
			      st.njump_rules);
		else if (ret == 0)
			logkv(LOG_INFO, "rules applied",
			      "family=%s inbound_port=%u outbound_port=%u admin_port=%u "
			      "proxy_uid=%u proxy_gid=%u skip_inbound_ports=%u "
			      "skip_inbound_cidrs=%u skip_outbound_ports=%u skip_outbound_cidrs=%u",
			      fam->name, o->inbound_port, o->outbound_port, o->admin_port,
			      o->proxy_uid, o->proxy_gid, o->nskip_in, o->nin_cidrs, o->nskip_out,
			      o->ncidrs);
	}
	free(input);
	nat_state_fini(&st);
	return ret;

err_free_input:
	free(input);
err_fini_state:
	nat_state_fini(&st);
	logkv(LOG_ERR, "out of memory", "family=%s", fam->name);
	return ret;
}

/* True when the namespace has an IPv6 address of global scope on an interface other than lo. */
static bool has_global_ipv6(void)
{
	FILE *f = fopen("/proc/net/if_inet6", "r");
	char line[256], dev[64];
	unsigned idx, plen, scope, flags;
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*32s %x %x %x %x %63s", &idx, &plen, &scope, &flags, dev) == 5 &&
		    scope == 0 && strcmp(dev, "lo") != 0)
			found = true;
	}
	fclose(f);
	return found;
}

/* True when this process holds CAP_NET_ADMIN in its effective set. */
static bool has_net_admin(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long eff = 0;
	bool known = false;

	if (!f)
		return true; /* cannot tell: let iptables say */
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			known = true;
	fclose(f);
	return !known || (eff >> CAP_NET_ADMIN_BIT) & 1;
}

int main(int argc, char **argv)
{
	static struct opts o;
	struct tools t4, t6;
	const char *missing;
	bool v6 = false;
	int ret;

	if (parse_args(argc, argv, &o))
		return 2;
	if (o.help) {
		usage(stdout);
		return 0;
	}
	if (o.version) {
		printf(PROG " %s\n", SIDETAP_VERSION);
		return 0;
	}
	/* iptables-restore may exit before reading all its input: EPIPE, not death. */
	signal(SIGPIPE, SIG_IGN);

	if (o.dry_run && !o.cleanup) {
		/* What a namespace without our rules gets; no privilege or iptables needed. */
		printf("# " PROG ": %s --noflush input (%s)\n", fam4.restore, fam4.name);
		put_install(stdout, &o, &fam4, NULL);
		if (o.ipv6 != IPV6_OFF) {
			printf("# " PROG ": %s --noflush input (%s%s)\n", fam6.restore, fam6.name,
			       o.ipv6 == IPV6_AUTO ? ", when the namespace has a global address" :
						     "");
			put_install(stdout, &o, &fam6, NULL);
		}
		return fflush(stdout) == 0 ? 0 : 1;
	}

	if (tools_find(&fam4, &t4, &missing)) {
		logkv(LOG_ERR, "iptables program not found",
		      "program=%s fix=\"install iptables in the init container's image (Debian, "
		      "Ubuntu: apt-get install iptables; Alpine: apk add iptables) and keep its "
		      "directory, usually /usr/sbin, on PATH\"",
		      missing);
		return 1;
	}
	switch (o.ipv6) {
	case IPV6_OFF:
		break;
	case IPV6_ON:
		if (tools_find(&fam6, &t6, &missing)) {
			logkv(LOG_ERR, "ip6tables program not found",
			      "program=%s fix=\"install iptables (it brings ip6tables) in the "
			      "init container's image and keep /usr/sbin on PATH, or run with "
			      "--ipv6 off\"",
			      missing);
			return 1;
		}
		v6 = true;
		break;
	case IPV6_AUTO:
		if (tools_find(&fam6, &t6, &missing)) {
			logkv(LOG_INFO, "ipv6 rules skipped", "reason=\"%s not found\"", missing);
		} else if (o.cleanup ? access("/proc/net/if_inet6", F_OK) != 0 :
				       !has_global_ipv6()) {
			/* Cleanup looks wherever IPv6 exists: rules may predate the address. */
			logkv(LOG_INFO, "ipv6 rules skipped", "reason=\"%s\"",
			      o.cleanup ? "no IPv6 in the namespace" :
					  "no global IPv6 address in the namespace");
		} else {
			v6 = true;
		}
		break;
	}
	if (!has_net_admin()) {
		logkv(LOG_ERR, "not permitted to change the namespace's iptables rules",
		      "reason=\"no CAP_NET_ADMIN\" uid=%u " FIX_CAPS, (unsigned)getuid());
		return 1;
	}

	ret = program_family(&o, &fam4, &t4);
	if (ret == 0 && v6)
		ret = program_family(&o, &fam6, &t6);
	if (fflush(stdout) != 0)
		ret = -EIO;
	return ret == 0 ? 0 : 1;
}
