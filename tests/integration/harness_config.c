/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * Configuration and other files of a broker (see harness_config.h): the placeholders, the
 * standard config, password files, and the `user root` a root run needs.
 */
#include "harness_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *harness_write_file(const char *dir, const char *name, const char *content)
{
	struct strbuf path = {0};
	size_t n = strlen(content);
	size_t off = 0;
	int fd;

	sb_printf(&path, "%s/%s", dir, name);
	fd = open(path.s, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail_msg("cannot create %s: %s", path.s, strerror(errno));
	while (off < n) {
		ssize_t w = write(fd, content + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			close(fd);
			fail_msg("cannot write %s: %s", path.s, strerror(errno));
		}
		off += (size_t)w;
	}
	if (close(fd) != 0)
		fail_msg("cannot write %s: %s", path.s, strerror(errno));
	return sb_take(&path);
}

char *broker_subst(const struct broker *b, const char *text)
{
	struct strbuf out = {0};
	const char *p = text;
	char port[16];

	snprintf(port, sizeof(port), "%d", b->port);
	sb_append(&out, "", 0);
	while (*p) {
		const char *at = strchr(p, '@');
		const char *value = NULL;
		size_t skip = 0;

		if (!at) {
			sb_puts(&out, p);
			break;
		}
		sb_append(&out, p, (size_t)(at - p));
		if (strncmp(at, "@PORT@", 6) == 0) {
			value = port;
			skip = 6;
		} else if (strncmp(at, "@DIR@", 5) == 0) {
			value = b->dir;
			skip = 5;
		} else if (strncmp(at, "@PLUGIN@", 8) == 0) {
			value = b->plugin;
			skip = 8;
			if (!value)
				fail_msg("@PLUGIN@ used but $%s is not set",
				         b->valgrind ? "PRESENCE_PLAIN_PLUGIN" : "PRESENCE_PLUGIN");
		} else if (strncmp(at, "@HELPER@", 8) == 0) {
			value = harness_env("PRESENCE_HELPER_PLUGIN", NULL);
			skip = 8;
			if (!value)
				fail_msg("@HELPER@ used but $PRESENCE_HELPER_PLUGIN is not set");
		}
		if (value) {
			sb_puts(&out, value);
			p = at + skip;
		} else {
			sb_append(&out, "@", 1);
			p = at + 1;
		}
	}
	return sb_take(&out);
}

const char *broker_write_file(struct broker *b, const char *name, const char *content)
{
	char *text = broker_subst(b, content);
	char *path = harness_write_file(b->dir, name, text);

	free(text);
	b->files = harness_xrealloc(b->files, (b->nfiles + 1) * sizeof(*b->files));
	b->files[b->nfiles++] = path;
	return path;
}

const char *broker_password_file(struct broker *b, const char *name, const char *pairs)
{
	const char *path = broker_write_file(b, name, pairs);
	char *argv[4];
	struct strbuf out = {0};
	int rc;

	argv[0] = harness_xstrdup(harness_env("MOSQUITTO_PASSWD_BIN", "mosquitto_passwd"));
	argv[1] = harness_xstrdup("-U");
	argv[2] = harness_xstrdup(path);
	argv[3] = NULL;
	sb_printf(&out, "%s/mosquitto_passwd.out", b->dir);
	rc = harness_run(argv, out.s, HARNESS_COMMAND_TIMEOUT_MS);
	free(argv[0]);
	free(argv[1]);
	free(argv[2]);
	if (rc != 0) {
		char *output = harness_read_file(out.s, NULL);

		fail_msg("mosquitto_passwd -U %s failed (status %d): %s", path, rc,
		         output ? output : "");
	}
	free(out.s);
	return path;
}

/* Whether conf has a `user` line of its own. */
static bool conf_has_user_line(const char *conf)
{
	const char *line = conf;

	while (line && *line) {
		const char *p = line;

		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, "user", 4) == 0 && (p[4] == ' ' || p[4] == '\t'))
			return true;
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return false;
}

char *broker_final_conf(struct broker *b, const char *conf)
{
	struct strbuf out = {0};
	char *text = broker_subst(b, conf);

	sb_puts(&out, text);
	free(text);
	if (geteuid() == 0) {
		if (!conf_has_user_line(out.s)) {
			if (out.len > 0 && out.s[out.len - 1] != '\n')
				sb_puts(&out, "\n");
			sb_puts(&out, "# Added by the test harness: keep root, see "
			              "tests/integration/harness_process.h.\n"
			              "user root\n");
		} else {
			/* The broker drops privileges: let it write its files. */
			(void)chmod(b->dir, 0777);
		}
	}
	return sb_take(&out);
}

static char *broker_conf_common(bool with_plugin, const char *extra)
{
	struct strbuf sb = {0};

	sb_puts(&sb, "listener @PORT@ 127.0.0.1\n"
	             "allow_anonymous true\n"
	             "log_type all\n"
	             "persistence false\n");
	if (with_plugin)
		sb_puts(&sb, "plugin @PLUGIN@\n");
	if (extra) {
		sb_puts(&sb, extra);
		if (sb.len > 0 && sb.s[sb.len - 1] != '\n')
			sb_puts(&sb, "\n");
	}
	return sb_take(&sb);
}

char *broker_conf(const char *extra)
{
	return broker_conf_common(true, extra);
}

char *broker_conf_without_plugin(const char *extra)
{
	return broker_conf_common(false, extra);
}
