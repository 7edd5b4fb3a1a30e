/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
 *
 * A sleepy device for mosquitto-presence, with libmosquitto: it wakes up, connects as its
 * user, sets its state to {"battery":<level>}, waits until the broker has acknowledged that,
 * disconnects and sleeps; then again. With the broker's plugin_opt_keep_state true the state
 * stays in the user's document while the device sleeps, and with plugin_opt_offline_delay
 * longer than the sleep the device never shows as offline between two wake-ups (README,
 * "Recipes").
 *
 * Built by the project's CMake (option PRESENCE_EXAMPLES, on when libmosquitto is found) as
 * build/examples/clients/c/device, or alone: cc -o device device.c -lmosquitto
 * Against the demo broker started as `KEEP_STATE=true OFFLINE_DELAY=90 examples/run-broker.sh`:
 *
 *   build/examples/clients/c/device -u alice -P alice-pw -b 87 -s 60 -n 3
 *
 * Options: -h host (localhost), -p port (1883), -u user, -P password, -b battery level (87),
 * -s seconds to sleep (60), -n wake-ups (0: for ever). Exits 1 on any error.
 */
#define _POSIX_C_SOURCE 200809L /* getopt, sleep */
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the callbacks report back to the loop of one wake-up. */
struct wakeup {
	const char *topic;   /* presence/<user>/state */
	const char *payload; /* {"battery":<level>} */
	int failed;          /* set when the broker refused the connection */
};

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	struct wakeup *w = obj;
	if (rc != 0) {
		fprintf(stderr, "device: connection refused: %s\n", mosquitto_connack_string(rc));
		w->failed = 1;
		mosquitto_disconnect(mosq);
		return;
	}
	/* QoS 1: on_publish runs once the broker has the state, so disconnecting then loses
	 * nothing. */
	if (mosquitto_publish(mosq, NULL, w->topic, (int)strlen(w->payload), w->payload, 1,
	                      false) != MOSQ_ERR_SUCCESS) {
		w->failed = 1;
		mosquitto_disconnect(mosq);
	}
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
	(void)obj;
	(void)mid;
	mosquitto_disconnect(mosq);
}

/* One wake-up: connect, set the state, disconnect. Returns 0 on success. */
static int wake_up(const char *host, int port, const char *user, const char *password,
                   struct wakeup *w)
{
	struct mosquitto *mosq = mosquitto_new(NULL, true, w);
	int rc = 1;
	if (mosq == NULL)
		return 1;
	mosquitto_connect_callback_set(mosq, on_connect);
	mosquitto_publish_callback_set(mosq, on_publish);
	if (mosquitto_username_pw_set(mosq, user, password) == MOSQ_ERR_SUCCESS &&
	    mosquitto_connect(mosq, host, port, 30) == MOSQ_ERR_SUCCESS) {
		/* Returns when on_publish (or a refusal) disconnects. */
		rc = mosquitto_loop_forever(mosq, -1, 1) == MOSQ_ERR_SUCCESS && !w->failed ? 0 : 1;
	}
	mosquitto_destroy(mosq);
	return rc;
}

int main(int argc, char *argv[])
{
	const char *host = "localhost", *user = NULL, *password = NULL;
	int port = 1883, battery = 87, seconds = 60, count = 0, opt;
	char topic[512], payload[64];

	while ((opt = getopt(argc, argv, "h:p:u:P:b:s:n:")) != -1) {
		switch (opt) { // clang-format off
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'u': user = optarg; break;
		case 'P': password = optarg; break;
		case 'b': battery = atoi(optarg); break;
		case 's': seconds = atoi(optarg); break;
		case 'n': count = atoi(optarg); break;
		default: return 1;
		} // clang-format on
	}
	/* A user name with '/', '+', '#' or '%' would need encoding (README, "The contract"). */
	if (user == NULL || strpbrk(user, "/+#%") != NULL) {
		fprintf(stderr,
		        "usage: device -u user [-P password] [-h host] [-p port] [-b battery] "
		        "[-s seconds] [-n count] (user without / + # %%)\n");
		return 1;
	}
	if (snprintf(topic, sizeof topic, "presence/%s/state", user) >= (int)sizeof topic) {
		fprintf(stderr, "device: user name too long\n");
		return 1;
	}
	snprintf(payload, sizeof payload, "{\"battery\":%d}", battery);
	struct wakeup w = {topic, payload, 0};

	mosquitto_lib_init();
	for (int i = 1; count == 0 || i <= count; i++) {
		if (wake_up(host, port, user, password, &w) != 0) {
			fprintf(stderr, "device: wake-up %d failed\n", i);
			mosquitto_lib_cleanup();
			return 1;
		}
		printf("device: wake-up %d: %s set %s\n", i, user, payload);
		fflush(stdout);
		if (count == 0 || i < count)
			sleep((unsigned)seconds);
	}
	mosquitto_lib_cleanup();
	return 0;
}
