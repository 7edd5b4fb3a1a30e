# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
# presence_warnings: the warning set every target of this project compiles with.
add_library(presence_warnings INTERFACE)
target_compile_options(presence_warnings INTERFACE
  -Wall -Wextra -Wconversion -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wformat=2 -Wwrite-strings -Wcast-qual -Wundef -Wpointer-arith -Wvla)
if(PRESENCE_WERROR)
  target_compile_options(presence_warnings INTERFACE -Werror)
endif()

# presence_sanitize: AddressSanitizer + UBSan, stopping at the first error.
add_library(presence_sanitize INTERFACE)
target_compile_options(presence_sanitize INTERFACE
  -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
target_link_options(presence_sanitize INTERFACE -fsanitize=address,undefined)
