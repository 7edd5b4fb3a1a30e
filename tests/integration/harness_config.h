/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Configuration and other files of a broker, written into its directory @DIR@ between
 * broker_prepare and broker_launch (harness_process.h). In every text written, @PORT@, @DIR@,
 * @PLUGIN@ (the plugin under test: $PRESENCE_PLUGIN, or $PRESENCE_PLAIN_PLUGIN under valgrind)
 * and @HELPER@ ($PRESENCE_HELPER_PLUGIN) stand for the broker's values.
 */
#ifndef PRESENCE_HARNESS_CONFIG_H
#define PRESENCE_HARNESS_CONFIG_H

struct broker;

/* Substitutes @PORT@, @PLUGIN@, @HELPER@ and @DIR@ in text, then writes it to @DIR@/name and
 * returns the file's path (owned by b, valid until broker_stop). Fails the test on error. */
const char *broker_write_file(struct broker *b, const char *name, const char *content);

/* Writes a Mosquitto password file @DIR@/name from pairs, which holds one "user:password" per
 * line, by running `mosquitto_passwd -U` on it. Returns its path (owned by b, valid until
 * broker_stop). Fails the test on error. */
const char *broker_password_file(struct broker *b, const char *name, const char *pairs);

/* Returns text with @PORT@, @PLUGIN@, @HELPER@ and @DIR@ substituted. The caller frees the
 * result with free(). Fails the test when a used placeholder has no value (e.g. @PLUGIN@
 * without $PRESENCE_PLUGIN). */
char *broker_subst(const struct broker *b, const char *text);

/* The standard config: listener @PORT@ 127.0.0.1, allow_anonymous true, log_type all,
 * persistence false, plugin @PLUGIN@, then extra (NULL = none) as further lines
 * (plugin_opt_... lines apply to our plugin; further plugin lines, acl_file, ...). The caller
 * frees the result. */
char *broker_conf(const char *extra);

/* The standard config without the plugin line (for the harness self-test). */
char *broker_conf_without_plugin(const char *extra);

/* Writes content to dir/name (created or truncated) and returns the path; the caller frees
 * it. Fails the test on error. */
char *harness_write_file(const char *dir, const char *name, const char *content);

#endif
