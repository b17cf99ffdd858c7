/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs a fuzz target over files without libFuzzer, so that every build and
 * CI run replays the committed corpus (Envoy-style) under its sanitizers:
 *   <target>_replay DIR|FILE...
 * Each input is copied to a buffer of exactly its size, so an over-read is
 * an ASan report in a sanitizer build. Exits 0 after at least one input.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path)
{
	struct stat st;
	uint8_t *buf;
	size_t n;
	FILE *fp;

	fp = fopen(path, "rb");
	if (!fp || fstat(fileno(fp), &st) == -1) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		if (fp)
			fclose(fp);
		return -1;
	}
	/* One byte at least: malloc(0) may return NULL, and the target gets size 0 anyway. */
	buf = malloc((size_t)st.st_size + !st.st_size);
	if (!buf) {
		fclose(fp);
		return -1;
	}
	n = fread(buf, 1, (size_t)st.st_size, fp);
	fclose(fp);
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned inputs = 0, errors = 0;

	for (int i = 1; i < argc; i++) {
		struct dirent *de;
		DIR *d = opendir(argv[i]);

		if (!d) {
			if (run_file(argv[i]) == 0)
				inputs++;
			else
				errors++;
			continue;
		}
		while ((de = readdir(d))) {
			char path[4096];

			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
			if (run_file(path) == 0)
				inputs++;
			else
				errors++;
		}
		closedir(d);
	}
	printf("replay: %u inputs, %u unreadable\n", inputs, errors);
	return inputs && !errors ? 0 : 1;
}
