/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidetapctl inject: adds <prefix>/inject: "true" to the workloads of a
 * multi-document YAML manifest, for manifests kept in git (like linkerd
 * inject). Deployments, StatefulSets, DaemonSets, Jobs and ReplicaSets get it
 * on their pod template, Pods on themselves, the items of a List likewise;
 * every other document passes through. The YAML is parsed into libyaml's node
 * graph and written back from it: values, their quoting and order are kept,
 * comments are not.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "k8s.h"

#define MAX_SET 32

struct inject_opts {
	const char *prefix;
	const char *set_key[MAX_SET], *set_value[MAX_SET];
	size_t nset;
	size_t annotated;
};

struct outbuf {
	char *p;
	size_t len, cap;
	bool failed;
};

static int out_write(void *data, unsigned char *buf, size_t size)
{
	struct outbuf *o = data;

	if (o->len + size > o->cap) {
		size_t cap = o->cap ? o->cap : 65536;
		char *np;

		while (cap < o->len + size)
			cap *= 2;
		np = realloc(o->p, cap);
		if (!np) {
			o->failed = true;
			return 0;
		}
		o->p = np;
		o->cap = cap;
	}
	memcpy(o->p + o->len, buf, size);
	o->len += size;
	return 1;
}

static bool scalar_is(yaml_node_t *n, const char *s)
{
	return n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == strlen(s) &&
	       memcmp(n->data.scalar.value, s, n->data.scalar.length) == 0;
}

/* A plain scalar that YAML reads as null: what "annotations:" with nothing after it is. */
static bool is_null(yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE &&
	       n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (n->data.scalar.length == 0 || scalar_is(n, "~") || scalar_is(n, "null") ||
		scalar_is(n, "Null") || scalar_is(n, "NULL"));
}

/* The pair of mapping <map> whose key is <key>, or NULL. Valid until the next node is added. */
static yaml_node_pair_t *pair_get(yaml_document_t *d, int map, const char *key)
{
	yaml_node_t *m = yaml_document_get_node(d, map);

	if (!m || m->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++)
		if (scalar_is(yaml_document_get_node(d, p->key), key))
			return p;
	return NULL;
}

static const char *scalar_of(yaml_document_t *d, int map, const char *key, char *buf, size_t len)
{
	yaml_node_pair_t *p = pair_get(d, map, key);
	yaml_node_t *v = p ? yaml_document_get_node(d, p->value) : NULL;

	if (!v || v->type != YAML_SCALAR_NODE || v->data.scalar.length >= len)
		return NULL;
	memcpy(buf, v->data.scalar.value, v->data.scalar.length);
	buf[v->data.scalar.length] = '\0';
	return buf;
}

static int add_plain(yaml_document_t *d, const char *s, yaml_scalar_style_t style)
{
	return yaml_document_add_scalar(d, NULL, (yaml_char_t *)s, (int)strlen(s), style);
}

/*
 * The mapping under <key> of mapping <map>: made when it is missing or null.
 * Returns its node id, or 0 when <key> holds something else.
 */
static int map_child(yaml_document_t *d, int map, const char *key)
{
	yaml_node_pair_t *p = pair_get(d, map, key);
	yaml_node_t *v;
	int k, m;

	if (p) {
		v = yaml_document_get_node(d, p->value);
		if (v && v->type == YAML_MAPPING_NODE)
			return p->value;
		if (!is_null(v))
			return 0;
		m = yaml_document_add_mapping(d, NULL, YAML_BLOCK_MAPPING_STYLE);
		/* Adding a node may move the nodes: find the pair again. */
		p = pair_get(d, map, key);
		if (!m || !p)
			return 0;
		p->value = m;
		return m;
	}
	k = add_plain(d, key, YAML_PLAIN_SCALAR_STYLE);
	m = yaml_document_add_mapping(d, NULL, YAML_BLOCK_MAPPING_STYLE);
	if (!k || !m || !yaml_document_append_mapping_pair(d, map, k, m))
		return 0;
	return m;
}

/* Sets <key>: "<value>" (double-quoted: annotations are strings) in mapping <map>. */
static int set_string(yaml_document_t *d, int map, const char *key, const char *value)
{
	int v = add_plain(d, value, YAML_DOUBLE_QUOTED_SCALAR_STYLE), k;
	yaml_node_pair_t *p;

	if (!v)
		return -ENOMEM;
	p = pair_get(d, map, key);
	if (p) {
		p->value = v;
		return 0;
	}
	k = add_plain(d, key, YAML_PLAIN_SCALAR_STYLE);
	return k && yaml_document_append_mapping_pair(d, map, k, v) ? 0 : -ENOMEM;
}

static int annotate_object(yaml_document_t *d, int obj, struct inject_opts *o, int depth)
{
	static const char *const workloads[] = { "Deployment", "StatefulSet", "DaemonSet", "Job",
						 "ReplicaSet" };
	char kind[64], name[256], key[300];
	yaml_node_t *n = yaml_document_get_node(d, obj);
	int meta = 0, ann;
	bool workload = false;

	if (!n || n->type != YAML_MAPPING_NODE || !scalar_of(d, obj, "kind", kind, sizeof(kind)))
		return 0;
	if (strcmp(kind, "List") == 0 && depth == 0) {
		yaml_node_pair_t *p = pair_get(d, obj, "items");
		yaml_node_t *items = p ? yaml_document_get_node(d, p->value) : NULL;
		int count, *ids;

		if (!items || items->type != YAML_SEQUENCE_NODE)
			return 0;
		/* Copy the ids first: annotating adds nodes, which may move the sequence. */
		count = (int)(items->data.sequence.items.top - items->data.sequence.items.start);
		ids = malloc(sizeof(int) * (size_t)(count ? count : 1));
		if (!ids)
			return -ENOMEM;
		memcpy(ids, items->data.sequence.items.start, sizeof(int) * (size_t)count);
		for (int i = 0; i < count; i++) {
			int ret = annotate_object(d, ids[i], o, depth + 1);

			if (ret) {
				free(ids);
				return ret;
			}
		}
		free(ids);
		return 0;
	}
	for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
		workload |= strcmp(kind, workloads[i]) == 0;
	{
		yaml_node_pair_t *mp = pair_get(d, obj, "metadata");

		if (!mp || !scalar_of(d, mp->value, "name", name, sizeof(name)))
			snprintf(name, sizeof(name), "?");
	}
	if (workload) {
		yaml_node_pair_t *sp = pair_get(d, obj, "spec");
		int spec = sp ? sp->value : 0, tpl;

		tpl = spec && pair_get(d, spec, "template") ? map_child(d, spec, "template") : 0;
		if (!tpl) {
			fprintf(stderr,
				"sidetapctl inject: %s %s has no spec.template: left as it is\n",
				kind, name);
			return 0;
		}
		meta = map_child(d, tpl, "metadata");
	} else if (strcmp(kind, "Pod") == 0) {
		meta = map_child(d, obj, "metadata");
	} else {
		return 0;
	}
	ann = meta ? map_child(d, meta, "annotations") : 0;
	if (!ann) {
		fprintf(stderr,
			"sidetapctl inject: %s %s: its metadata or annotations are not a mapping: left as it is\n",
			kind, name);
		return 0;
	}
	snprintf(key, sizeof(key), "%s/inject", o->prefix);
	if (set_string(d, ann, key, "true"))
		return -ENOMEM;
	for (size_t i = 0; i < o->nset; i++) {
		snprintf(key, sizeof(key), "%s/%s", o->prefix, o->set_key[i]);
		if (set_string(d, ann, key, o->set_value[i]))
			return -ENOMEM;
	}
	o->annotated++;
	fprintf(stderr, "sidetapctl inject: %s %s annotated\n", kind, name);
	return 0;
}

/* Parses <in> document by document into <e>. Returns 0 or 1 (the reason printed). */
static int inject_stream(FILE *in, const char *path, yaml_emitter_t *e, struct inject_opts *o)
{
	yaml_parser_t p;
	int ret = 0;

	if (!yaml_parser_initialize(&p))
		return 1;
	yaml_parser_set_input_file(&p, in);
	for (;;) {
		yaml_document_t d;
		int root;

		if (!yaml_parser_load(&p, &d)) {
			fprintf(stderr, "sidetapctl inject: %s:%zu:%zu: %s%s%s\n", path,
				p.problem_mark.line + 1, p.problem_mark.column + 1,
				p.problem ? p.problem : "invalid YAML", p.context ? " " : "",
				p.context ? p.context : "");
			ret = 1;
			break;
		}
		root = yaml_document_get_root_node(&d) ? 1 : 0;
		if (!root) {
			yaml_document_delete(&d);
			break;
		}
		if (annotate_object(&d, 1, o, 0) != 0) {
			fprintf(stderr, "sidetapctl inject: out of memory\n");
			yaml_document_delete(&d);
			ret = 1;
			break;
		}
		/* Every document starts with "---": the documents of several files stay apart. */
		d.start_implicit = 0;
		if (!yaml_emitter_dump(e, &d)) {
			fprintf(stderr, "sidetapctl inject: %s: cannot write the YAML back: %s\n",
				path, e->problem ? e->problem : "emitter error");
			ret = 1;
			break;
		}
	}
	yaml_parser_delete(&p);
	return ret;
}

static void usage_inject(FILE *o)
{
	fputs("usage: sidetapctl inject [--annotation-prefix P] [--set NAME=VALUE]... [FILE|-]...\n"
	      "\n"
	      "Reads Kubernetes YAML (several documents, or a List; stdin when no FILE) and writes\n"
	      "it to stdout with P/inject: \"true\" (P default sidecar.speedscale.com) on the pod\n"
	      "template of each Deployment, StatefulSet, DaemonSet, Job and ReplicaSet, and on each\n"
	      "Pod; other documents pass through. --set adds P/NAME: \"VALUE\" beside it (e.g.\n"
	      "--set tls-out=true). Comments are not kept.\n"
	      "\n"
	      "  sidetapctl inject < app.yaml | kubectl apply -f -\n",
	      o);
}

int ctl_inject(int argc, char **argv)
{
	struct inject_opts o = { .prefix = "sidecar.speedscale.com" };
	struct outbuf out = { 0 };
	const char *files[64];
	size_t nfiles = 0;
	yaml_emitter_t e;
	int ret = 0;

	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;

		if (tap_arg_is_help(argv[i])) {
			usage_inject(stdout);
			return 0;
		}
		if ((v = tap_arg_value(argc, argv, &i, "--annotation-prefix", &missing))) {
			if (!ctl_is_dns(v, 253, true)) {
				fprintf(stderr,
					"sidetapctl inject: --annotation-prefix: invalid value '%s': a DNS subdomain such as sidecar.speedscale.com\n",
					v);
				return 2;
			}
			o.prefix = v;
		} else if ((v = tap_arg_value(argc, argv, &i, "--set", &missing))) {
			const char *eq = strchr(v, '=');
			char *name;

			if (!eq || eq == v || o.nset == MAX_SET || (size_t)(eq - v) > 63 ||
			    strcspn(v, "/ \t\"") < (size_t)(eq - v)) {
				fprintf(stderr,
					"sidetapctl inject: --set: invalid value '%s': NAME=VALUE, NAME an annotation name under the prefix (at most %d)\n",
					v, MAX_SET);
				return 2;
			}
			name = strndup(v, (size_t)(eq - v));
			if (!name)
				return 1;
			o.set_key[o.nset] = name;
			o.set_value[o.nset++] = eq + 1;
		} else if (missing || (argv[i][0] == '-' && argv[i][1])) {
			fprintf(stderr,
				"sidetapctl inject: %s '%s' (see sidetapctl inject --help)\n",
				missing ? "missing value for" : "unknown flag", argv[i]);
			return 2;
		} else if (nfiles == sizeof(files) / sizeof(files[0])) {
			fprintf(stderr, "sidetapctl inject: at most %zu files\n", nfiles);
			return 2;
		} else {
			files[nfiles++] = argv[i];
		}
	}
	if (nfiles == 0)
		files[nfiles++] = "-";
	if (!yaml_emitter_initialize(&e))
		return 1;
	yaml_emitter_set_output(&e, out_write, &out);
	yaml_emitter_set_unicode(&e, 1);
	yaml_emitter_set_indent(&e, 2);
	yaml_emitter_set_width(&e, -1);
	if (!yaml_emitter_open(&e)) {
		yaml_emitter_delete(&e);
		return 1;
	}
	for (size_t i = 0; i < nfiles && !ret; i++) {
		bool std = strcmp(files[i], "-") == 0;
		FILE *in = std ? stdin : fopen(files[i], "rb");

		if (!in) {
			fprintf(stderr, "sidetapctl inject: %s: %s\n", files[i], strerror(errno));
			ret = 1;
			break;
		}
		ret = inject_stream(in, std ? "stdin" : files[i], &e, &o);
		if (!std)
			fclose(in);
	}
	if (!ret && (!yaml_emitter_close(&e) || !yaml_emitter_flush(&e) || out.failed)) {
		fprintf(stderr, "sidetapctl inject: cannot write the YAML back\n");
		ret = 1;
	}
	yaml_emitter_delete(&e);
	/* Nothing is printed unless all of it was read: no half manifest goes to kubectl apply. */
	if (!ret && out.len && fwrite(out.p, 1, out.len, stdout) != out.len)
		ret = 1;
	if (!ret && fflush(stdout) != 0)
		ret = 1;
	free(out.p);
	for (size_t i = 0; i < o.nset; i++)
		free((char *)o.set_key[i]);
	if (!ret && o.annotated == 0)
		fprintf(stderr, "sidetapctl inject: no workload found to annotate\n");
	return ret;
}
