/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/* libFuzzer harness: presence_state_set_key (see state_write.h for the input and invariants). */
#include "state_write.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_state_write(data, size, false);
}
