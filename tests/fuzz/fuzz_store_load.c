/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: presence_store_load of an arbitrary file.
 * Invariants: loading never crashes and either refuses the file with a reason or restores it;
 * what was restored saves, loads back identically and saves again to the same bytes
 * (fuzz_check_round_trip).
 */
#include "store_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[4096], err[PRESENCE_STORE_ERR_SIZE] = "";
	struct presence_store_loaded loaded;
	struct presence_registry *reg;
	enum presence_err rc;

	fuzz_write_file(fuzz_path(path, "input.json"), data, size);
	rc = fuzz_load(path, &reg, &loaded, err, sizeof(err));
	if (rc != PRESENCE_OK) {
		FUZZ_CHECK(rc == PRESENCE_ERR_INVAL && err[0] != '\0');
	} else {
		FUZZ_CHECK(loaded.found && loaded.users == presence_registry_user_count(reg));
		fuzz_check_round_trip(reg);
	}
	presence_registry_free(reg);
	return 0;
}
