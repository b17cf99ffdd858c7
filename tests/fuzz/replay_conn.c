/* SPDX-License-Identifier: Apache-2.0 */
/* Replays the committed fuzz_conn corpus through its target in every build (no libFuzzer needed). */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;
	FILE *f = fopen(path, "rb");

	if (!f) {
		fprintf(stderr, "replay_conn: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		n = fread(buf + len, 1, cap - len, f);
		if (!n)
			break;
		len += n;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

/* Usage: replay_conn DIR|FILE...; a failing input aborts, naming itself first. */
int main(int argc, char **argv)
{
	unsigned count = 0;
	char path[4096];

	for (int i = 1; i < argc; i++) {
		DIR *dir = opendir(argv[i]);
		struct dirent *de;

		if (!dir) {
			if (errno != ENOTDIR || replay_file(argv[i]) < 0)
				return 1;
			count++;
			continue;
		}
		while ((de = readdir(dir))) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
			fprintf(stderr, "%s\n", path);
			if (replay_file(path) < 0) {
				closedir(dir);
				return 1;
			}
			count++;
		}
		closedir(dir);
	}
	printf("replay_conn: %u inputs\n", count);
	return count ? 0 : 1;
}
