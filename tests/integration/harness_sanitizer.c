/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Sanitizer and valgrind verdicts (see harness_sanitizer.h): how the broker runs so that its
 * reports name the plugin, and how a stopped broker's reports are judged.
 */
#include "harness_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How much of the sanitizer or valgrind findings a report keeps. */
#define HARNESS_REPORT_MAX 20000
/* The exit status LSan gives a process in which it found leaks. */
#define HARNESS_LSAN_EXITCODE 23

extern char **environ;

/* ---------------------------------------------------------------------------------------- */
/* Running the broker                                                                          */
/* ---------------------------------------------------------------------------------------- */

bool harness_have_valgrind(void)
{
	char *vg = harness_which(harness_env("VALGRIND_BIN", "valgrind"));
	bool have = vg != NULL;

	free(vg);
	return have;
}

/* Whether an environment entry sets one of the variables the harness controls. */
static bool env_is_controlled(const char *entry)
{
	static const char *const names[] = {
	    "LD_PRELOAD=", "ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS="};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strncmp(entry, names[i], strlen(names[i])) == 0)
			return true;
	return false;
}

char **broker_env(const struct broker *b, const char *conf)
{
	const char *asan = harness_env("PRESENCE_ASAN_RUNTIME", NULL);
	char **envp = NULL;
	size_t n = 0;
	char **e;

	for (e = environ; *e; e++)
		if (!env_is_controlled(*e))
			strv_push(&envp, &n, harness_xstrdup(*e));
	if (asan && !b->valgrind) {
		struct strbuf v = {0};

		if (access(asan, R_OK) != 0)
			fail_msg("$PRESENCE_ASAN_RUNTIME=%s is not readable", asan);
		sb_printf(&v, "LD_PRELOAD=%s", asan);
		/* Keep the plugin mapped after the broker's dlclose(), so LSan can name it. */
		if (b->plugin && strstr(conf, b->plugin))
			sb_printf(&v, ":%s", b->plugin);
		strv_push(&envp, &n, sb_take(&v));
		sb_printf(&v,
		          "ASAN_OPTIONS=log_path=%s/asan:detect_leaks=1:halt_on_error=1:"
		          "abort_on_error=0:exitcode=23:symbolize=1:fast_unwind_on_malloc=0:"
		          "stack_trace_format='    #%%n %%p in %%f %%L (%%m+%%o)'",
		          b->dir);
		strv_push(&envp, &n, sb_take(&v));
		sb_printf(&v, "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=%s/ubsan",
		          b->dir);
		strv_push(&envp, &n, sb_take(&v));
	}
	if (!envp)
		strv_push(&envp, &n, harness_xstrdup("HARNESS=1"));
	return envp;
}

char *broker_valgrind_argv(const struct broker *b, char ***argv, size_t *argc)
{
	struct strbuf xml = {0};
	char *exe = harness_which(harness_env("VALGRIND_BIN", "valgrind"));

	if (!exe)
		fail_msg("valgrind mode requested but valgrind is not installed");
	strv_push(argv, argc, harness_xstrdup(exe));
	strv_push(argv, argc, harness_xstrdup("--leak-check=full"));
	strv_push(argv, argc, harness_xstrdup("--show-leak-kinds=definite,indirect"));
	strv_push(argv, argc, harness_xstrdup("--errors-for-leak-kinds=definite,indirect"));
	strv_push(argv, argc, harness_xstrdup("--track-origins=yes"));
	strv_push(argv, argc, harness_xstrdup("--keep-debuginfo=yes"));
	strv_push(argv, argc, harness_xstrdup("--num-callers=40"));
	strv_push(argv, argc, harness_xstrdup("--xml=yes"));
	sb_printf(&xml, "--xml-file=%s/vg.%%p.xml", b->dir);
	strv_push(argv, argc, sb_take(&xml));
	return exe;
}

/* ---------------------------------------------------------------------------------------- */
/* Verdicts                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Counts of what a verdict found. */
struct verdict {
	/* Findings that fail the test. */
	int ours;
	/* Leak or error records attributed to the broker itself (reported, not failing). */
	int theirs;
	/* Whether an LSan report was found (explains exit status 23). */
	bool lsan_report;
	/* Where findings are described (the caller's). */
	struct strbuf *report;
};

/* Appends text to the report, up to HARNESS_REPORT_MAX bytes in all. */
static void verdict_note(struct verdict *v, const char *text, size_t n)
{
	if (v->report->len >= HARNESS_REPORT_MAX)
		return;
	if (n > HARNESS_REPORT_MAX - v->report->len)
		n = HARNESS_REPORT_MAX - v->report->len;
	sb_append(v->report, text, n);
	if (v->report->len >= HARNESS_REPORT_MAX)
		sb_puts(v->report, "\n[report truncated]\n");
}

/* Whether a stack text has a frame in our plugin: by module name, or (for symbolized frames)
 * by a source path under $PRESENCE_SOURCE_DIR/plugin/. */
static bool stack_is_ours(const char *text, size_t n)
{
	const char *src = harness_env("PRESENCE_SOURCE_DIR", NULL);
	struct strbuf needle = {0};
	char *copy = harness_xrealloc(NULL, n + 1);
	bool ours;

	memcpy(copy, text, n);
	copy[n] = '\0';
	ours = strstr(copy, "mosquitto_presence") != NULL;
	if (!ours && src) {
		sb_printf(&needle, "%s/plugin/", src);
		ours = strstr(copy, needle.s) != NULL;
		free(needle.s);
	}
	free(copy);
	return ours;
}

/* Judges one ASan/LSan/UBSan report file (or stderr text). Leak records count only when they
 * are ours; every other sanitizer report counts. */
static void verdict_sanitizer_text(struct verdict *v, const char *name, const char *text)
{
	const char *p;
	bool fatal;

	if (!text || !*text)
		return;
	fatal = strstr(text, "ERROR: AddressSanitizer") || strstr(text, "runtime error:") ||
	        strstr(text, "ERROR: UndefinedBehaviorSanitizer");
	if (fatal) {
		v->ours++;
		sb_printf(v->report, "--- sanitizer error in %s:\n", name);
		verdict_note(v, text, strlen(text));
		sb_puts(v->report, "\n");
	}
	if (!strstr(text, "ERROR: LeakSanitizer"))
		return;
	v->lsan_report = true;
	p = text;
	while ((p = strstr(p, " leak of ")) != NULL) {
		const char *start = p;
		const char *end = strstr(p, "\n\n");
		size_t n;

		while (start > text && start[-1] != '\n')
			start--;
		n = end ? (size_t)(end - start) : strlen(start);
		if (stack_is_ours(start, n)) {
			v->ours++;
			sb_printf(v->report, "--- leak in the plugin (%s):\n", name);
			verdict_note(v, start, n);
			sb_puts(v->report, "\n");
		} else {
			v->theirs++;
		}
		p = start + n;
	}
}

/* The text between <tag> and </tag> in [p, end), or "" (in buf of size cap). */
static const char *xml_field(const char *p, const char *end, const char *tag, char *buf, size_t cap)
{
	char open[64];
	char close_tag[64];
	const char *a;
	const char *b;
	size_t n;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close_tag, sizeof(close_tag), "</%s>", tag);
	buf[0] = '\0';
	a = strstr(p, open);
	if (!a || a >= end)
		return buf;
	a += strlen(open);
	b = strstr(a, close_tag);
	if (!b || b > end)
		return buf;
	n = (size_t)(b - a);
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, a, n);
	buf[n] = '\0';
	return buf;
}

/* Appends a readable summary of one valgrind <error> record: kind, what, and its frames. */
static void verdict_valgrind_record(struct verdict *v, const char *p, const char *end)
{
	char kind[128];
	char what[512];
	const char *f = p;

	xml_field(p, end, "kind", kind, sizeof(kind));
	xml_field(p, end, "what", what, sizeof(what));
	if (!what[0]) {
		const char *xw = strstr(p, "<xwhat>");

		if (xw && xw < end)
			xml_field(xw, end, "text", what, sizeof(what));
	}
	sb_printf(v->report, "--- valgrind %s: %s\n", kind, what);
	while ((f = strstr(f, "<frame>")) != NULL && f < end) {
		const char *fend = strstr(f, "</frame>");
		char fn[256];
		char obj[512];
		char file[256];
		char line[32];

		if (!fend || fend > end)
			break;
		xml_field(f, fend, "fn", fn, sizeof(fn));
		xml_field(f, fend, "obj", obj, sizeof(obj));
		xml_field(f, fend, "file", file, sizeof(file));
		xml_field(f, fend, "line", line, sizeof(line));
		if (file[0])
			sb_printf(v->report, "    %s (%s:%s)\n", fn[0] ? fn : "???", file, line);
		else
			sb_printf(v->report, "    %s (%s)\n", fn[0] ? fn : "???", obj);
		if (v->report->len >= HARNESS_REPORT_MAX)
			break;
		f = fend;
	}
}

/* Judges valgrind's XML: every error record but possible/reachable leaks, when it is ours. */
static void verdict_valgrind(struct verdict *v, const char *path)
{
	char *xml = harness_read_file(path, NULL);
	const char *p;

	if (!xml) {
		v->ours++;
		sb_printf(v->report, "--- valgrind wrote no report at %s\n", path);
		return;
	}
	if (!strstr(xml, "</valgrindoutput>")) {
		v->ours++;
		sb_printf(v->report, "--- valgrind report %s is incomplete\n", path);
	}
	p = xml;
	while ((p = strstr(p, "<error>")) != NULL) {
		const char *end = strstr(p, "</error>");
		char kind[128];

		if (!end)
			break;
		xml_field(p, end, "kind", kind, sizeof(kind));
		if (strcmp(kind, "Leak_PossiblyLost") != 0 &&
		    strcmp(kind, "Leak_StillReachable") != 0) {
			if (stack_is_ours(p, (size_t)(end - p))) {
				v->ours++;
				verdict_valgrind_record(v, p, end);
			} else {
				v->theirs++;
			}
		}
		p = end;
	}
	free(xml);
}

int broker_verdict(struct broker *b, struct strbuf *report)
{
	struct verdict v = {.report = report};
	struct strbuf path = {0};
	char *text;

	if (b->valgrind) {
		sb_printf(&path, "%s/vg.%ld.xml", b->dir, (long)b->pid);
		verdict_valgrind(&v, path.s);
	} else {
		sb_printf(&path, "%s/asan.%ld", b->dir, (long)b->pid);
		text = harness_read_file(path.s, NULL);
		verdict_sanitizer_text(&v, path.s, text);
		free(text);
		path.len = 0;
		sb_printf(&path, "%s/ubsan.%ld", b->dir, (long)b->pid);
		text = harness_read_file(path.s, NULL);
		verdict_sanitizer_text(&v, path.s, text);
		free(text);
		/* Reports go to stderr when log_path cannot be written. */
		verdict_sanitizer_text(&v, b->log_path, b->log.s);
	}
	free(path.s);

	if (b->status >= 128 && !b->killed_by_harness) {
		v.ours++;
		sb_printf(report, "--- broker died of signal %d\n", b->status - 128);
	} else if (!b->expect_failure && b->status != 0 && !b->killed_by_harness &&
	           !(b->status == HARNESS_LSAN_EXITCODE && v.lsan_report)) {
		v.ours++;
		sb_printf(report, "--- broker exited with status %d\n", b->status);
	}
	if (v.theirs > 0)
		fprintf(stderr,
		        "harness: %d leak/error record(s) of the broker itself (not the plugin) "
		        "ignored; see %s\n",
		        v.theirs, b->dir);
	return v.ours;
}
