#!/usr/bin/env python3
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
"""A terminal buddy list for mosquitto-presence, with paho-mqtt 1.6 (Debian 12) or 2.x.

Against the demo broker (examples/run-broker.sh), as bob, watching alice, carol and zed:

    /usr/bin/python3 examples/clients/python/buddy_list.py -u bob -P bob-pw alice carol zed

It subscribes to presence/+ and, once subscribed, asks one query about the buddies it has not
seen yet (MQTT 5, with a Response Topic and Correlation Data). Documents are ordered by seq, so
a late answer never undoes a newer document. A zero-length message on presence/<user> means the
user is gone for you (forgotten by the broker, or no longer visible to you: README, "Who sees
whom"): it is removed from the list. It prints one line per change. Each line typed on stdin
sets your own status (state key "status"; an empty line removes it); Ctrl-D quits.
"""
import argparse
import json
import re
import signal
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PREFIX = "presence"
QUERY_TOPIC = "$CONTROL/presence/v1"
RESPONSE_TOPIC = "$CONTROL/presence/v1/response"


def level(name):
    """A user name as one topic level, encoded as the plugin does (README, "The contract")."""
    for char, code in (("%", "%25"), ("/", "%2F"), ("+", "%2B"), ("#", "%23")):
        name = name.replace(char, code)
    return name


def user_of(topic):
    """The user name of a document topic (presence/<level>), or None for any other topic."""
    level = topic[len(PREFIX) + 1:] if topic.startswith(PREFIX + "/") else ""
    if not level or "/" in level:
        return None
    codes = {"%25": "%", "%2F": "/", "%2B": "+", "%23": "#"}
    return re.sub("%(25|2F|2B|23)", lambda m: codes[m.group(0)], level)


class BuddyList:
    def __init__(self, me, buddies):
        self.me = me
        self.buddies = buddies
        self.docs = {}  # user name -> newest document (highest seq)
        self.token = uuid.uuid4().hex.encode()  # our query's Correlation Data
        self.connected = threading.Event()
        self.refused = None

    def show(self, doc):
        old = self.docs.get(doc["username"])
        if old is not None and old["seq"] >= doc["seq"]:
            return  # an older document (a retained copy or a query answer that came late)
        self.docs[doc["username"]] = doc
        sessions = doc["sessions"]
        since = time.strftime("%H:%M:%S", time.localtime(doc["since"] / 1000))
        print("%s is %s (%d session%s) since %s, state %s" % (
            doc["username"], "online" if doc["available"] else "offline", sessions,
            "" if sessions == 1 else "s", since, json.dumps(doc["state"], separators=(",", ":"))),
            flush=True)

    def on_connect(self, client, userdata, flags, reason, properties=None):
        if reason != 0:
            self.refused = reason
        else:
            client.subscribe(PREFIX + "/+", qos=1)
        self.connected.set()

    def on_subscribe(self, client, userdata, mid, reasons, properties=None):
        # The retained documents of users known to the broker are arriving; ask about the rest.
        unseen = [name for name in self.buddies if name not in self.docs]
        if not unseen:
            return
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = RESPONSE_TOPIC
        props.CorrelationData = self.token
        request = {"commands": [{"command": "getPresence", "usernames": unseen}]}
        # The plugin addresses its answer to this client alone: no subscription is needed.
        client.publish(QUERY_TOPIC, json.dumps(request), qos=1, properties=props)

    def on_message(self, client, userdata, msg):
        if msg.topic == RESPONSE_TOPIC:
            if getattr(msg.properties, "CorrelationData", None) != self.token:
                return
            for response in json.loads(msg.payload)["responses"]:
                for doc in response.get("presences", []):
                    if doc.pop("known"):
                        self.show(doc)
                    else:
                        print("%s is unknown (never seen)" % doc["username"], flush=True)
        elif not msg.payload:
            # Deleted: forgotten, or hidden from us. A newer document may bring the user back
            # (its seq then starts from the broker's clock, above any we had).
            name = user_of(msg.topic)
            if name is not None and self.docs.pop(name, None) is not None:
                print("%s is gone (forgotten, or hidden from you)" % name, flush=True)
        else:
            self.show(json.loads(msg.payload))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="localhost")
    parser.add_argument("-p", "--port", type=int, default=1883)
    parser.add_argument("-u", "--username", required=True)
    parser.add_argument("-P", "--password")
    parser.add_argument("buddies", nargs="*", help="users to ask about if not seen")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C quits at once, without a traceback
    buddies = BuddyList(args.username, args.buddies)
    try:  # paho 2.x: the callback signatures used here are its VERSION2 ones
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    except AttributeError:  # paho 1.6: with MQTT 5 its callbacks take the same arguments
        client = mqtt.Client(protocol=mqtt.MQTTv5)
    client.username_pw_set(args.username, args.password)
    client.on_connect = buddies.on_connect
    client.on_subscribe = buddies.on_subscribe
    client.on_message = buddies.on_message
    client.connect(args.host, args.port)
    client.loop_start()
    if not buddies.connected.wait(30) or buddies.refused is not None:
        sys.exit("could not log in: %s" % (buddies.refused or "no answer from the broker"))
    my_status = "%s/%s/state/status" % (PREFIX, level(args.username))
    for line in sys.stdin:  # each line: my new status; an empty payload removes the key
        client.publish(my_status, line.strip(), qos=1).wait_for_publish()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
