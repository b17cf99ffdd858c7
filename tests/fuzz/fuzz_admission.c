/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target of inj_review_handle() (tools/injector/review.c): any bytes as
 * an AdmissionReview. Every answer is 0 with a response that is JSON and a
 * patch that is a JSON array, or -EBADMSG with a reason.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"
#include "inject.h"

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_admission: %s\n", what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct inj_config cfg;
	static int ready;
	struct inj_result res;
	json_t *j;
	int ret;

	if (!ready) {
		inj_config_defaults(&cfg);
		ready = 1;
	}
	ret = inj_review_handle(&cfg, (const char *)data, size, &res);
	if (ret == -EBADMSG || ret == -ENOMEM) {
		if (ret == -EBADMSG && !res.error[0])
			fail("a refusal without a reason");
		return 0;
	}
	if (ret != 0)
		fail("an error outside the contract");
	j = json_loadb(res.response, res.response_len, 0, NULL);
	if (!json_is_object(j))
		fail("the response is not a JSON object");
	json_decref(j);
	if (res.patch) {
		j = json_loads(res.patch, 0, NULL);
		if (!json_is_array(j) || json_array_size(j) == 0)
			fail("the patch is not a non-empty JSON array");
		json_decref(j);
	}
	inj_result_fini(&res);
	return 0;
}
