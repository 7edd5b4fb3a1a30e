/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * How a stopped broker is judged (broker_stop_verdict, broker_stop in harness_process.h): a
 * finding of the plugin under a sanitizer or valgrind fails the test; the broker's own records
 * are counted and mentioned but do not fail.
 *
 * Sanitizer verdict (PRESENCE_ASAN_RUNTIME non-empty, i.e. the plugin is built with
 * -fsanitize=address,undefined): the broker runs with LD_PRELOAD=$PRESENCE_ASAN_RUNTIME,
 * ASAN_OPTIONS=log_path=@DIR@/asan:detect_leaks=1:exitcode=23:fast_unwind_on_malloc=0:... and
 * UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=@DIR@/ubsan. What was found with
 * Debian 12's mosquitto 2.0.11 decides the design:
 *   - Mosquitto dlclose()s its plugins before exit, and LSan symbolizes leak stacks only at
 *     exit, so frames in our plugin would print as "(<unknown module>)". When the config loads
 *     $PRESENCE_PLUGIN, the harness therefore also puts the plugin in LD_PRELOAD: the dlopen()
 *     of the same file then only takes a reference, dlclose() does not unmap it, and stacks
 *     name its functions. stack_trace_format adds each frame's module path, and
 *     fast_unwind_on_malloc=0 lets ASan unwind through the broker's code (built without frame
 *     pointers), so an allocation made through mosquitto_malloc still shows the plugin frame
 *     that asked for it.
 *   - LSan on the bare broker (no plugin): clean at SIGTERM after everything test_harness.c
 *     does (v3/v5 clients, QoS 0/1/2, retained messages, wills, persistent sessions,
 *     take-over, password file and ACL, SIGHUP, a second plugin that kicks clients). It does
 *     leak when it refuses to start (a config error, or a plugin whose init fails): one to
 *     three records allocated under config__read / config__parse_args, e.g. a 400-byte
 *     mosquitto__realloc and a 10-byte mosquitto__strdup. So the verdict filters: an LSan leak
 *     record counts only when its stack has a frame in mosquitto_presence (by module path, or
 *     by a source path under $PRESENCE_SOURCE_DIR/plugin/); the broker's own records are
 *     counted and mentioned on stderr but do not fail. Every non-leak report (an ASan memory
 *     error, any UBSan "runtime error:") fails regardless of its stack: the broker is not
 *     instrumented, so UBSan can only fire in sanitized code, and a memory error in a broker
 *     that runs our plugin is ours to explain. GCC's combined runtime prints UBSan reports to
 *     stderr, i.e. into broker.log, which the verdict scans too.
 *   - exitcode=23 marks an exit forced by LSan (also when the broker had meant to exit with
 *     another status: a failing broker that leaks exits with 23). Status 23 together with an
 *     LSan report is not a finding by itself; death by a signal, or any other non-zero exit of
 *     a broker that was not expected to fail, is.
 *
 * Valgrind verdict (broker_opts.valgrind): the broker runs as
 *   valgrind --leak-check=full --show-leak-kinds=definite,indirect
 *            --errors-for-leak-kinds=definite,indirect --track-origins=yes --keep-debuginfo=yes
 *            --xml=yes --xml-file=@DIR@/vg.<pid>.xml mosquitto -c ...
 * with @PLUGIN@ = $PRESENCE_PLAIN_PLUGIN (valgrind and ASan do not mix). --keep-debuginfo=yes
 * is required for the same dlclose() reason: without it valgrind drops the plugin's symbols
 * when it is unloaded and leak stacks lose every plugin frame. The verdict counts each <error>
 * record (any kind but Leak_PossiblyLost and Leak_StillReachable) whose text names
 * mosquitto_presence; errors only in the broker or libc are counted and mentioned but do not
 * fail.
 */
#ifndef PRESENCE_HARNESS_SANITIZER_H
#define PRESENCE_HARNESS_SANITIZER_H

#include <stdbool.h>

/* Whether a valgrind binary is available (tests may skip() their valgrind variant). */
bool harness_have_valgrind(void);

#endif
