#!/usr/bin/python3
"""raw_bot.py: an mqim bot with nothing but MQTT and JSON (no SDK).

Needs Debian 12's python3-paho-mqtt (paho-mqtt 1.6.x API): apt-get install python3-paho-mqtt, and
Debian's own interpreter /usr/bin/python3, which is the one that sees that package.

    MQIM_URL=mqtt://localhost:1883 MQIM_BOT_ID=rawbot MQIM_BOT_KEY=mqk_... /usr/bin/python3 examples/bots/raw_bot.py

Commands, in any conversation the bot is a member of (groups it is added to later included):
/help, /echo <text>, /time.

How to do the same in any language (full protocol: topics.md):
  1. Connect with MQTT 3.1.1: username = the bot's id, password = its API key (mqk_...),
     clientId = "<bot>:<device>" (device: 1-64 of A-Z a-z 0-9 _ -).
  2. Subscribe at QoS 1 to im/u/<bot>/m (messages of all its conversations), im/u/<bot>/e (events,
     e.g. {"type":"member","action":"added",...}) and im/u/<bot>/r/<device> (replies to its requests).
     A bot needs no per-conversation subscription: being added to a group is enough to get its
     messages on im/u/<bot>/m.
  3. Each message is a JSON envelope {"conv","seq","msgId","from","ts","kind","body"[,"replyTo"]}.
     Ignore your own ("from" == bot id): you receive what you send, too.
  4. Answer by publishing to im/req/send at QoS 1:
     {"id":"<request id>","conv":"<conv>","msgId":"<your id>","kind":"text","body":"...","replyTo":<seq>}
     and read the reply {"id","op":"send","ok":true,"result":{"seq",...}} on im/u/<bot>/r/<device>.
     Choose msgId deterministically (here "re-<seq>"): resending the same msgId is stored only once,
     so retries and redeliveries never duplicate an answer.
  5. On {"ok":false,"error":{"code":"RATE_LIMITED"|"UNAVAILABLE"}} wait and resend the same request.
"""
import datetime
import json
import os
import sys
import threading
import urllib.parse
import uuid

import paho.mqtt.client as mqtt

BOT = os.environ["MQIM_BOT_ID"]
KEY = os.environ["MQIM_BOT_KEY"]
DEVICE = os.environ.get("MQIM_BOT_DEVICE", "raw")
URL = urllib.parse.urlparse(os.environ.get("MQIM_URL", "mqtt://localhost:1883"))

TOPIC_M = f"im/u/{BOT}/m"
TOPIC_E = f"im/u/{BOT}/e"
TOPIC_R = f"im/u/{BOT}/r/{DEVICE}"
HELP = "Commands: /help (this list), /echo <text> (I repeat <text>), /time (the current time, UTC)"
RETRY_CODES = {"RATE_LIMITED", "UNAVAILABLE"}

pending = {}  # request id -> (op, payload) until the reply comes
answered = {}  # conv -> highest seq answered (QoS 1 may deliver a message twice)
lock = threading.Lock()


def log(text):
    print(f"raw_bot: {text}", flush=True)


def answer(text):
    """The answer to a message, or None when it is not a command."""
    words = text.strip().split(None, 1)
    if not words or not words[0].startswith("/"):
        return None
    command = words[0][1:].split("@", 1)[0]
    arg = words[1].strip() if len(words) > 1 else ""
    if command == "help":
        return HELP
    if command == "echo":
        return arg if arg else "Usage: /echo <text>"
    if command == "time":
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    return f"Unknown command /{command}. {HELP}"


def request(client, op, fields):
    """Publishes {"id", ...fields} to im/req/<op>; the reply arrives on TOPIC_R."""
    req_id = uuid.uuid4().hex
    payload = json.dumps({"id": req_id, **fields})
    with lock:
        pending[req_id] = (op, payload)
    client.publish(f"im/req/{op}", payload, qos=1)


def resend(client, op, payload):
    req_id = json.loads(payload)["id"]
    with lock:
        pending[req_id] = (op, payload)
    client.publish(f"im/req/{op}", payload, qos=1)


def on_connect(client, userdata, flags, rc):
    if rc != 0:
        log(f"connection refused: {mqtt.connack_string(rc)}")
        client.disconnect()
        return
    client.subscribe([(TOPIC_M, 1), (TOPIC_E, 1), (TOPIC_R, 1)])
    log(f"online as {BOT}")


def on_message(client, userdata, msg):
    try:
        data = json.loads(msg.payload.decode("utf-8"))
    except ValueError:
        return
    if msg.topic == TOPIC_M:
        on_envelope(client, data)
    elif msg.topic == TOPIC_E:
        if data.get("type") == "member" and data.get("action") == "added" and BOT in data.get("users", []):
            log(f"added to {data.get('kind')} {data.get('conv')} by {data.get('by')}")
    elif msg.topic == TOPIC_R:
        on_reply(client, data)


def on_envelope(client, m):
    if m.get("from") == BOT or m.get("kind") != "text" or not isinstance(m.get("body"), str):
        return
    conv, seq = m["conv"], m["seq"]
    with lock:
        if seq <= answered.get(conv, 0):
            return
        answered[conv] = seq
    text = answer(m["body"])
    if text is None:
        return
    request(client, "send", {"conv": conv, "msgId": f"re-{seq}", "kind": "text", "body": text, "replyTo": seq})
    request(client, "read", {"conv": conv, "seq": seq})


def on_reply(client, reply):
    with lock:
        entry = pending.pop(reply.get("id"), None)
    if entry is None:
        return
    op, payload = entry
    if reply.get("ok"):
        return
    code = reply["error"]["code"]
    if code in RETRY_CODES:
        threading.Timer(1.0, resend, (client, op, payload)).start()
    else:
        log(f"{op} failed: {code}: {reply['error']['message']}")


def main():
    client = mqtt.Client(client_id=f"{BOT}:{DEVICE}", clean_session=False, protocol=mqtt.MQTTv311)
    client.username_pw_set(BOT, KEY)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.connect(URL.hostname or "localhost", URL.port or 1883, keepalive=30)
    try:
        client.loop_forever(retry_first_connection=True)
    except KeyboardInterrupt:
        client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
