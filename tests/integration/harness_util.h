/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Small utilities of the integration-test harness, for its own files only (tests include
 * harness.h): a growable string, allocation that aborts on failure, the monotonic clock, the
 * environment, files and directories, and running a command. Out of memory in a test process is
 * not worth recovering from, so nothing here returns a failed allocation.
 */
#ifndef PRESENCE_HARNESS_UTIL_H
#define PRESENCE_HARNESS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* How much of the log end a failure message shows (harness_tail). */
#define HARNESS_LOG_TAIL 6000

/* A growable NUL-terminated string; zero-initialised is empty. */
struct strbuf {
	char *s;
	size_t len;
	size_t cap;
};

/* realloc, calloc and strdup that abort the test process on failure (never return NULL). */
void *harness_xrealloc(void *p, size_t n);
void *harness_xcalloc(size_t count, size_t size);
char *harness_xstrdup(const char *s);

/* Appends n bytes of p (or the string s, or printf output) and keeps sb NUL-terminated. */
void sb_append(struct strbuf *sb, const char *p, size_t n);
void sb_puts(struct strbuf *sb, const char *s);
__attribute__((format(printf, 2, 3))) void sb_printf(struct strbuf *sb, const char *fmt, ...);

/* Appends everything fd still has to read (until end of file or an error). */
void sb_read_fd(struct strbuf *sb, int fd);

/* Returns the buffer's string (never NULL) and leaves sb empty; the caller frees it. */
char *sb_take(struct strbuf *sb);

/* Milliseconds on the monotonic clock. */
long long harness_now_ms(void);

/* The value of an environment variable, or fallback when it is unset or empty. */
const char *harness_env(const char *name, const char *fallback);

/* PRESENCE_TIMEOUT_SCALE as a factor from 1 to 100 (1 when unset or invalid). */
int harness_env_scale(void);

/* timeout_ms * scale without overflow, at most a day; non-positive timeouts give 0. */
int harness_scaled(int timeout_ms, int scale);

/* Reads a whole file. Returns a NUL-terminated string the caller frees and stores its length
 * in *len (if not NULL); returns NULL when the file cannot be opened. */
char *harness_read_file(const char *path, size_t *len);

/* Creates path and its missing parents (mode 0755). Returns 0, or -1 (errno set) when one of
 * them cannot be made. */
int harness_mkdir_p(const char *path);

/* Removes path and, for a directory, everything below it (at most 16 levels deep); errors are
 * ignored. Call with depth 0. */
void harness_rm_rf(const char *path, int depth);

/* Finds an executable by name in PATH (or takes a path with a slash as is). Returns a string the
 * caller frees, or NULL when there is none. */
char *harness_which(const char *name);

/* The last HARNESS_LOG_TAIL bytes of text, starting at a line ("(no log)" for NULL). Points
 * into text. */
const char *harness_tail(const char *text);

/* Appends entry (taken over) to a NULL-terminated array of strings (*v may be NULL). */
void strv_push(char ***v, size_t *n, char *entry);

/* Frees a NULL-terminated array of strings and each of them; NULL is allowed. */
void strv_free(char **v);

/* Forks a child that runs exe with argv and envp, reading /dev/null and writing stdout and
 * stderr to out_fd, with no other descriptor of the test process open (so that no client
 * socket keeps a connection alive in a broker), and killed by the kernel when the test process
 * dies. Returns the child's pid, or -1 when fork fails. out_fd stays open in the caller. */
pid_t harness_spawn(const char *exe, char *const argv[], char *const envp[], int out_fd);

/* A waitpid status as the harness reports it: the exit code, or 128 + the signal number, or -1
 * for anything else. */
int harness_exit_code(int wait_status);

/* Runs argv (argv[0] found in PATH) with stdout and stderr appended to out_path, waiting at
 * most timeout_ms. Returns the exit status (as harness_exit_code), or -1 when it cannot run or
 * times out (then it is killed). */
int harness_run(char *const argv[], const char *out_path, int timeout_ms);

#endif
