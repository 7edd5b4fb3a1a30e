#!/usr/bin/env python3
# SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
"""A backend service that reacts when users come online or go offline (paho-mqtt 1.6 or 2.x).

Against the demo broker (examples/run-broker.sh), as carol (any user who may read presence/#):

    /usr/bin/python3 examples/clients/python/offline_alerts.py -u carol -P carol-pw

The retained documents it gets when it first subscribes are the state before it started: it
remembers them and reports nothing. After that it prints one line each time a user's
"available" changes, including changes it missed while disconnected (documents of one user are
ordered by seq; "since" is when "available" changed):

    alice went offline at 10:41:07 (online since 10:12:55)

Replace report() with what your service does (send a notification, close a ticket ...).
"""
import argparse
import json
import signal
import threading
import time

import paho.mqtt.client as mqtt


def clock(ms):
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def report(doc, previous):
    if doc["available"]:
        print("%s came online at %s" % (doc["username"], clock(doc["since"])), flush=True)
    else:
        print("%s went offline at %s (online since %s)" % (
            doc["username"], clock(doc["since"]), clock(previous["since"])), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="localhost")
    parser.add_argument("-p", "--port", type=int, default=1883)
    parser.add_argument("-u", "--username", required=True)
    parser.add_argument("-P", "--password")
    args = parser.parse_args()
    last = {}  # topic (presence/<user>) -> the user's newest document

    def on_connect(client, userdata, flags, reason, properties=None):
        if reason == 0:
            client.subscribe("presence/+", qos=1)
        else:
            print("connection refused: %s" % reason, flush=True)
            client.disconnect()

    def on_subscribe(client, userdata, mid, reasons, properties=None):
        print("watching presence/+", flush=True)

    def on_message(client, userdata, msg):
        if not msg.payload:
            # presence/<user> deleted: the user was forgotten (or hidden from this service: put
            # its name in plugin_opt_see_everyone). Forget it too.
            last.pop(msg.topic, None)
            return
        doc = json.loads(msg.payload)
        previous = last.get(msg.topic)
        if previous is not None and previous["seq"] >= doc["seq"]:
            return  # not newer than what we know
        last[msg.topic] = doc
        if previous is None:
            if not msg.retain:  # a retained one is the state before we started: no event
                report(doc, doc)
        elif previous["available"] != doc["available"]:  # also a change missed while away
            report(doc, previous)

    try:  # paho 2.x: the callback signatures used here are its VERSION2 ones
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    except AttributeError:  # paho 1.6: with MQTT 5 its callbacks take the same arguments
        client = mqtt.Client(protocol=mqtt.MQTTv5)
    client.username_pw_set(args.username, args.password)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a service manager's stop
        signal.signal(sig, lambda signum, frame: stop.set())
    client.connect(args.host, args.port)
    client.loop_start()  # paho's own thread runs the network and reconnects by itself
    while not stop.wait(1):
        pass
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
