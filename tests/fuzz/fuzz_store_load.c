/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * libFuzzer harness: presence_store_load of arbitrary files. The input is the snapshot, and,
 * after a line "=====" if there is one, the journal.
 * Invariants: loading never crashes and either refuses the files with a reason or restores
 * them; what was restored saves, loads back identically and saves again to the same bytes
 * (fuzz_check_round_trip).
 */
#include "store_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[4096], err[PRESENCE_STORE_ERR_SIZE] = "";
	struct presence_store_loaded loaded;
	struct presence_registry *reg;
	enum presence_err rc;

	static const char separator[] = "\n=====\n";
	const uint8_t *journal = NULL;
	char journal_path[4200];

	for (size_t i = 0; i + sizeof(separator) - 1 <= size; i++) {
		if (memcmp(data + i, separator, sizeof(separator) - 1) == 0) {
			journal = data + i + sizeof(separator) - 1;
			break;
		}
	}
	fuzz_clear(fuzz_path(path, "input.json"));
	snprintf(journal_path, sizeof(journal_path), "%s.journal", path);
	if (journal != NULL) {
		fuzz_write_file(path, data, (size_t)(journal - data) - (sizeof(separator) - 1) + 1);
		fuzz_write_file(journal_path, journal, size - (size_t)(journal - data));
	} else {
		fuzz_write_file(path, data, size);
	}
	rc = fuzz_load(path, &reg, &loaded, err, sizeof(err));
	if (rc != PRESENCE_OK) {
		FUZZ_CHECK(rc == PRESENCE_ERR_INVAL && err[0] != '\0');
	} else {
		FUZZ_CHECK(loaded.found && loaded.users == presence_registry_known_count(reg));
		fuzz_check_round_trip(reg);
	}
	presence_registry_free(reg);
	return 0;
}
