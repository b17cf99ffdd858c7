/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The AdmissionReview decoder under bad input (TESTPLAN W4): malformed and
 * oddly typed reviews, the golden fixtures mutated node by node and byte by
 * byte, each input read against a guard page. Every answer is 0 with a
 * well-formed response, or -EBADMSG with a reason; nothing else, no crash.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "inject.h"

static struct inj_config cfg;

static void setup(void)
{
	inj_config_defaults(&cfg);
}

/* xorshift64*: the same mutations on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/*
 * Runs <len> bytes placed right before an unreadable page, so that reading
 * past the input is a fault, and checks the answer's contract.
 */
static int handle_guarded(const char *in, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t span = (len + page - 1) / page * page + page;
	struct inj_result res;
	json_t *doc, *resp;
	char *map;
	int ret;

	map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(map != MAP_FAILED);
	cr_assert(mprotect(map + span - page, page, PROT_NONE) == 0);
	memcpy(map + span - page - len, in, len);
	ret = inj_review_handle(&cfg, map + span - page - len, len, &res);
	munmap(map, span);
	cr_assert(ret == 0 || ret == -EBADMSG, "inj_review_handle returned %d", ret);
	if (ret == -EBADMSG) {
		cr_assert(res.error[0], "a failure without a reason");
		return ret;
	}
	doc = json_loadb(res.response, res.response_len, 0, NULL);
	cr_assert(doc, "the response is not JSON: %s", res.response);
	resp = json_object_get(doc, "response");
	cr_assert(json_is_boolean(json_object_get(resp, "allowed")));
	cr_assert(json_is_string(json_object_get(resp, "uid")));
	cr_assert(!json_object_get(resp, "patch") == !res.patch);
	if (res.patch) {
		json_t *p = json_loads(res.patch, 0, NULL);

		cr_assert(json_is_array(p) && json_array_size(p) > 0);
		json_decref(p);
	}
	json_decref(doc);
	inj_result_fini(&res);
	return 0;
}

static int handle_str(const char *s)
{
	return handle_guarded(s, strlen(s));
}

TestSuite(inj_review, .init = setup);

Test(inj_review, refuses_what_is_not_an_admission_review)
{
	static const char *const bad[] = {
		"",
		"{",
		"null",
		"[]",
		"\"AdmissionReview\"",
		"{}",
		"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\",\"request\":{}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Review\",\"request\":{}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":[]}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":7}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\"}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":\"Pod\"}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"kind\":\"Pod\",\"version\":\"v1\"},\"operation\":\"CREATE\"}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"kind\":\"Pod\",\"version\":\"v1\"},\"operation\":\"CREATE\",\"object\":[]}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"kind\":\"Pod\",\"version\":\"v1\"},\"operation\":\"CREATE\",\"object\":{},\"dryRun\":\"yes\"}}",
		/* A duplicate key could mean either value: refused rather than guessed. */
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"a\\u0000b\"}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}} trailing",
		"\xff\xfe{}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(handle_str(bad[i]), -EBADMSG, "input %zu: %s", i, bad[i]);
}

Test(inj_review, answers_odd_but_valid_reviews_without_a_patch)
{
	static const char *const odd[] = {
		/* A kind it does not handle, an operation without an object, odd object types. */
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"ConfigMap\"},\"operation\":\"CREATE\",\"object\":{}}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"operation\":\"DELETE\",\"object\":null}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"operation\":\"CREATE\",\"object\":{\"spec\":{\"containers\":{}}}}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"operation\":\"CREATE\",\"object\":{\"metadata\":[],\"spec\":{\"containers\":[]}}}}",
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v2\",\"kind\":\"Pod\"},\"operation\":\"CREATE\",\"object\":{\"spec\":{\"containers\":[]}}}}",
		/* Injected into a pod with no metadata, and with containers that are not objects. */
		"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"operation\":\"CREATE\",\"object\":{\"spec\":{\"containers\":[1,null,\"x\",{\"name\":7,\"env\":3}]}}}}",
	};

	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		cr_expect_eq(handle_str(odd[i]), 0, "input %zu: %s", i, odd[i]);
}

Test(inj_review, survives_deep_nesting_and_huge_numbers)
{
	size_t depth = 100000;
	char *s = malloc(2 * depth + 1);

	cr_assert(s);
	memset(s, '[', depth);
	memset(s + depth, ']', depth);
	s[2 * depth] = '\0';
	cr_expect_eq(handle_str(s), -EBADMSG);
	free(s);
	cr_expect_eq(handle_str("{\"apiVersion\":1e999999,\"kind\":-0.0e-99999}"), -EBADMSG);
}

/* The fixtures of the golden tests: real reviews to mutate. */
static char **load_fixtures(size_t *n)
{
	DIR *d = opendir(FIXTURE_DIR);
	struct dirent *de;
	char **out = NULL;

	*n = 0;
	cr_assert(d, "cannot open %s", FIXTURE_DIR);
	while ((de = readdir(d))) {
		char path[4096];
		json_t *j;

		if (!strstr(de->d_name, ".json") || strncmp(de->d_name, "after_", 6) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", FIXTURE_DIR, de->d_name);
		j = json_load_file(path, 0, NULL);
		cr_assert(j, "cannot read %s", path);
		out = realloc(out, (*n + 1) * sizeof(*out));
		out[(*n)++] = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	closedir(d);
	cr_assert(*n >= 20, "only %zu fixtures in %s", *n, FIXTURE_DIR);
	return out;
}

/* Every value of <j>, depth first. */
static void collect(json_t *j, json_t ***all, size_t *n, size_t *cap)
{
	const char *k;
	json_t *v;
	size_t i;

	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 256;
		*all = realloc(*all, *cap * sizeof(**all));
	}
	(*all)[(*n)++] = j;
	if (json_is_object(j))
		json_object_foreach(j, k, v)
			collect(v, all, n, cap);
	else if (json_is_array(j))
		json_array_foreach(j, i, v)
			collect(v, all, n, cap);
}

static json_t *replacement(json_t **all, size_t n)
{
	switch (rnd() % 11) {
	case 0:
		return json_null();
	case 1:
		return json_true();
	case 2:
		return json_integer(-1);
	case 3:
		return json_real(1e308);
	case 4:
		return json_string("");
	case 5:
		return json_string("true");
	case 6:
		return json_array();
	case 7:
		return json_object();
	case 8:
		return json_string("sidetap");
	default:
		return json_deep_copy(all[rnd() % n]);
	}
}

/* Replaces, in place, one child of a container value of <doc> (or drops it). */
static void mutate(json_t *doc)
{
	json_t **all = NULL;
	size_t n = 0, cap = 0, tries = 0;

	collect(doc, &all, &n, &cap);
	while (tries++ < 16) {
		json_t *parent = all[rnd() % n];
		bool drop = rnd() % 4 == 0;

		if (json_is_object(parent) && json_object_size(parent)) {
			void *it = json_object_iter(parent);
			size_t skip = rnd() % json_object_size(parent);

			while (skip--)
				it = json_object_iter_next(parent, it);
			if (drop)
				json_object_del(parent, json_object_iter_key(it));
			else
				json_object_iter_set_new(parent, it, replacement(all, n));
			break;
		}
		if (json_is_array(parent) && json_array_size(parent)) {
			size_t i = rnd() % json_array_size(parent);

			if (drop)
				json_array_remove(parent, i);
			else
				json_array_set_new(parent, i, replacement(all, n));
			break;
		}
	}
	free(all);
}

Test(inj_review, survives_fixtures_mutated_node_by_node, .timeout = 120)
{
	size_t n, answered = 0, refused = 0;
	char **fx = load_fixtures(&n);

	for (size_t i = 0; i < n; i++) {
		for (int m = 0; m < 150; m++) {
			json_t *doc = json_loads(fx[i], 0, NULL);
			char *s;

			for (int k = 1 + (int)(rnd() % 3); k > 0; k--)
				mutate(doc);
			s = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
			json_decref(doc);
			if (handle_str(s) == 0)
				answered++;
			else
				refused++;
			free(s);
		}
		free(fx[i]);
	}
	free(fx);
	/* Both paths ran: a mutation test that never reaches the patch builder proves little. */
	cr_expect(answered > 1000 && refused > 100, "answered %zu, refused %zu", answered, refused);
}

Test(inj_review, survives_fixtures_mutated_byte_by_byte, .timeout = 120)
{
	static const char *const tokens[] = { "{", "}",	   "[",	  "]",	 "\"",	",",
					      ":", "null", "\\u", "1e9", "\xc3" };
	size_t n;
	char **fx = load_fixtures(&n);

	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(fx[i]);
		char *buf = malloc(len + 16);

		for (int m = 0; m < 60; m++) {
			size_t at = rnd() % len, blen = len;
			const char *t;

			memcpy(buf, fx[i], len);
			switch (rnd() % 3) {
			case 0:
				buf[at] ^= (char)(1u << (rnd() % 8));
				break;
			case 1:
				blen = at;
				break;
			default:
				t = tokens[rnd() % (sizeof(tokens) / sizeof(tokens[0]))];
				memmove(buf + at + strlen(t), buf + at, len - at);
				memcpy(buf + at, t, strlen(t));
				blen = len + strlen(t);
				break;
			}
			handle_guarded(buf, blen);
		}
		/* Whole, then every prefix of a few of them: truncation is a clean refusal. */
		cr_expect_eq(handle_guarded(fx[i], len), 0);
		if (i < 3)
			for (size_t cut = 0; cut < len; cut += 7)
				cr_expect_eq(handle_guarded(fx[i], cut), -EBADMSG);
		free(buf);
		free(fx[i]);
	}
	free(fx);
}
