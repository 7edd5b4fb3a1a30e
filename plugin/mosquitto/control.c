/* SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause */
/*
 * The query API on $CONTROL/presence/v1: requests in, one response per request out. The
 * request and response formats are the core's (core/query.h); this file only connects them to
 * the broker.
 *
 * What Mosquitto 2.0 does with a publish to a registered $CONTROL topic decides the design:
 *
 * - The broker checks the WRITE ACL first (acl_file, dynamic-security, or this plugin's acl
 *   option, which covers $CONTROL like any topic outside its namespace), so whoever may
 *   publish to $CONTROL/presence/v1 may query; a denied request never reaches this callback.
 * - The request is then handed to this callback only: never delivered to any subscriber, never
 *   retained. The callback must return success; any error makes the broker disconnect the
 *   client after acknowledging the publish. So every problem is answered in the response
 *   (or, for the broker running out of memory, logged) and the callback always succeeds.
 * - The response is a publish targeted at the requesting client id. Mosquitto 2.0 queues such a
 *   publish for that one client, without matching subscriptions and without a READ ACL check,
 *   so no other client can receive it whatever it subscribes to (the requester receives it
 *   even without a subscription). It goes to the request's MQTT 5 Response Topic when that is
 *   a valid publish topic, otherwise to $CONTROL/presence/v1/response; the request's
 *   Correlation Data is copied in either case. A Response Topic inside the plugin's
 *   namespace or under $ is refused like an invalid one (core/policy.h), but for
 *   $CONTROL/presence/v1/response itself, which is where the answer goes anyway. The QoS is always
 * 0: a response is an answer to be re-asked, not a transaction, and QoS 0 is what bounds what a
 *   client that asks and never reads can make the broker hold: Mosquitto 2.0 drops a QoS 0
 *   message for a client that already has max_queued_messages (default 1000) packets waiting,
 *   while at QoS 1 an MQTT 5 client could let up to 65535 (its Receive Maximum) wait in
 *   flight.
 * - The targeted publish is resolved by client id when the broker delivers it, at the start of
 *   the next loop iteration: if the requester's id was taken over in between, the new
 *   connection gets the answer (as it would get the old session's queued messages), and an
 *   offline persistent session gets it queued.
 * - A QoS 1 or 2 request the client retransmits reaches this callback again and is answered
 *   again; queries change nothing, so that is harmless.
 * - Each client has a budget of response bytes (core/querylimit.h): a query that comes while
 *   the client's budget is spent is not answered (and logged, within the log budget). No
 *   plugin API says what the broker still holds for a client, and Mosquitto 2.0 never frees a
 *   targeted publish it drops for a full queue, so a client that asks and never reads must not
 *   be answered at its own pace.
 */
#include <stdlib.h>
#include <string.h>

#include "callbacks.h"
#include "plugin.h"
#include "clock.h"
#include "publish.h"
#include "query.h"
#include "sight.h"

/*
 * Builds the properties of the response to a request with properties request_props: the
 * request's Correlation Data, copied. Sets *topic to the request's Response Topic when it has a
 * valid one (the caller frees it with mosquitto_free), NULL otherwise. Returns
 * MOSQ_ERR_SUCCESS or MOSQ_ERR_NOMEM (nothing allocated then).
 */
static int response_properties(struct presence_plugin *p, const mosquitto_property *request_props,
                               const char *client_id, mosquitto_property **props, char **topic)
{
	struct presence_request_props request;
	const char *why = NULL;
	int rc;

	*props = NULL;
	*topic = NULL;
	rc = presence_lifecycle_request_props(request_props, &request);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	if (request.correlation != NULL) {
		rc = mosquitto_property_add_binary(props, MQTT_PROP_CORRELATION_DATA,
		                                   request.correlation, request.correlation_len);
		if (rc != MOSQ_ERR_SUCCESS) {
			presence_lifecycle_request_props_free(&request);
			return rc;
		}
	}
	/* The default response topic, named (as the README's mosquitto_rr example does), is the
	 * default: answered there without a notice. */
	if (request.response_topic != NULL &&
	    strcmp(request.response_topic, PRESENCE_CONTROL_RESPONSE_TOPIC) == 0) {
		presence_lifecycle_request_props_free(&request);
		return MOSQ_ERR_SUCCESS;
	}
	if (request.response_topic != NULL) {
		why = mosquitto_pub_topic_check(request.response_topic) != MOSQ_ERR_SUCCESS
		          ? "is not a valid publish topic"
		          : presence_policy_response_topic_refusal(&p->cfg, request.response_topic);
	}
	if (why != NULL) {
		presence_log_limited(
		    &p->denied_log, MOSQ_LOG_NOTICE,
		    "query by client %s names the response topic \"%s\", which %s; "
		    "answering on " PRESENCE_CONTROL_RESPONSE_TOPIC,
		    client_id, request.response_topic, why);
	} else {
		*topic = request.response_topic;
		request.response_topic = NULL;
	}
	presence_lifecycle_request_props_free(&request);
	return MOSQ_ERR_SUCCESS;
}

int presence_control_cb(int event, void *event_data, void *userdata)
{
	struct presence_sight_query sight_arg;
	struct presence_query_sight sight;
	struct mosquitto_evt_control *ed = event_data;
	struct presence_plugin *p = userdata;
	const char *client_id = mosquitto_client_id(ed->client);
	mosquitto_property *props = NULL;
	char *response_topic = NULL;
	struct presence_query q;
	char *text = NULL;
	size_t len = 0;
	int rc = MOSQ_ERR_NOMEM;
	bool allowed = false;

	(void)event;
	if (client_id == NULL) {
		/* The broker only lets clients with an id publish; nowhere to answer anyway. */
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX "ignored a query from a client without a "
		                                         "client id");
		return MOSQ_ERR_SUCCESS;
	}
	if (presence_query_limit_check(p->query_limit, ed->client, presence_clock_monotonic_ms(),
	                               &allowed) != PRESENCE_OK ||
	    !allowed) {
		presence_log_limited(
		    &p->denied_log, MOSQ_LOG_NOTICE,
		    "query by client %s (user %s) not answered: it was sent more "
		    "than its share of answers (a burst of %d x "
		    "max_query_reply_bytes, then one every %d s)",
		    client_id, presence_or_none(mosquitto_client_username(ed->client)),
		    PRESENCE_QUERY_LIMIT_BURST_REPLIES, PRESENCE_QUERY_LIMIT_REFILL_S);
		return MOSQ_ERR_SUCCESS;
	}
	if (presence_query_parse(&q, ed->payload, ed->payloadlen, p->cfg.max_query_users) ==
	    PRESENCE_OK) {
		mosquitto_log_printf(MOSQ_LOG_DEBUG,
		                     PRESENCE_LOG_PREFIX "query by client %s (user %s): %zu "
		                                         "command(s), %zu name(s)",
		                     client_id,
		                     presence_or_none(mosquitto_client_username(ed->client)),
		                     q.count, q.username_total);
		presence_sight_query_filter(p, ed->client, &sight_arg, &sight);
		text =
		    presence_query_respond(&q, p->reg, &sight, p->cfg.max_query_reply_bytes, &len);
		presence_query_free(&q);
	}
	if (text != NULL) {
		rc = response_properties(p, ed->properties, client_id, &props, &response_topic);
	}
	if (rc == MOSQ_ERR_SUCCESS) {
		rc = presence_publish_json(client_id,
		                           response_topic != NULL ? response_topic
		                                                  : PRESENCE_CONTROL_RESPONSE_TOPIC,
		                           text, len, 0, false, props);
	}
	if (rc == MOSQ_ERR_SUCCESS) {
		presence_query_limit_charge(p->query_limit, ed->client,
		                            len + PRESENCE_QUERY_LIMIT_RESPONSE_COST);
	} else {
		mosquitto_log_printf(MOSQ_LOG_WARNING,
		                     PRESENCE_LOG_PREFIX
		                     "could not answer the query of client %s: %s",
		                     client_id, presence_mosq_strerror(rc));
	}
	mosquitto_free(response_topic);
	presence_query_response_free(text);
	/* Anything but success would make the broker disconnect the client. */
	return MOSQ_ERR_SUCCESS;
}
