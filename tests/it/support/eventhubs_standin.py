"""An Azure Event Hubs stand-in: an AMQP 1.0 peer on Apache Qpid Proton (python-qpid-proton).

It serves what Event Hubs producers need before and while they send, as Microsoft's clients
expect it (tests/it/support/eventhubs.rs starts one per test on a free loopback port):

- SASL ANONYMOUS, then claims-based security: `put-token` requests to the `$cbs` node are
  answered 202 when the SAS token's signature is right and 401 when not. The signature is
  checked here independently of flagstream, per Microsoft's documented algorithm:
  sig = base64(HMAC-SHA256(key, <url-encoded sr as it appears in the token> + "\n" + se)).
- `$management` READ requests for `com.microsoft:eventhub` (partition ids) and
  `com.microsoft:partition`.
- Sender links to `<hub>` and `<hub>/Partitions/<n>`, refused (amqp:unauthorized-access)
  until a token for the hub was accepted on the connection; every link advertises
  `--max-message-size` and a delivery larger than it is rejected
  (amqp:link:message-size-exceeded), as Event Hubs rejects batches over its limit.
- Batched messages (message format 0x80013700: each event an encoded AMQP message in a data
  section of the envelope) and single messages, accepted `--settle-delay-ms` after they
  arrive (as the service answers once the batch is stored).

Everything is recorded as JSON lines in `--record` (one per event, token request and refusal):
{"type": "event", "partition", "partition_key", "body", "properties", "message_id", "batch"}.
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.parse

from proton import UNDESCRIBED, Array, Condition, Data, Delivery, Endpoint, Message, symbol, timestamp
from proton.handlers import MessagingHandler
from proton.reactor import Container

CBS = "$cbs"
MANAGEMENT = "$management"
BATCH_SECTION_CODES = range(0x70, 0x79)


def check_token(token, policy, key):
    """Return None when `token` is a valid SAS token for `policy`/`key`, else the reason."""
    prefix = "SharedAccessSignature "
    if not token.startswith(prefix):
        return "not a SharedAccessSignature"
    fields = {}
    for part in token[len(prefix):].split("&"):
        name, _, value = part.partition("=")
        fields[name] = value
    if not {"sr", "sig", "se", "skn"} <= fields.keys():
        return "missing sr, sig, se or skn"
    if urllib.parse.unquote_plus(fields["skn"]) != policy:
        return "unknown policy"
    if not fields["se"].isdigit() or int(fields["se"]) < time.time():
        return "expired"
    signed = (fields["sr"] + "\n" + fields["se"]).encode()
    expected = base64.b64encode(hmac.new(key.encode(), signed, hashlib.sha256).digest())
    given = urllib.parse.unquote_plus(fields["sig"]).encode()
    if not hmac.compare_digest(expected, given):
        return "signature mismatch"
    return None


def authorized(connection):
    """The audiences with an accepted token on `connection` (kept on Proton's wrapper, which
    stores Python attributes with the C object)."""
    try:
        return connection.standin_audiences
    except AttributeError:
        connection.standin_audiences = set()
        return connection.standin_audiences


def sections(raw):
    """Split an encoded AMQP message into its sections: [(descriptor code, value)]."""
    out = []
    while raw:
        data = Data()
        used = data.decode(raw)
        raw = raw[used:]
        value = data.get_object()
        # Copy binaries now: Proton hands out views into `data`'s buffer, freed with it.
        content = bytes(value.value) if isinstance(value.value, memoryview) else value.value
        out.append((int(value.descriptor), content))
    return out


def is_encoded_message(blob):
    """A data section holding an encoded AMQP message (a batch member), not an event body."""
    return len(blob) > 3 and blob[0] == 0x00 and blob[1] == 0x53 and blob[2] in BATCH_SECTION_CODES


class SettleLater:
    """Accept a delivery when its timer fires."""

    def __init__(self, standin, delivery):
        self.standin, self.delivery = standin, delivery

    def on_timer_task(self, event):
        self.standin.settle(self.delivery, Delivery.ACCEPTED)


class EventHubsStandIn(MessagingHandler):
    def __init__(self, args):
        super().__init__(prefetch=500, auto_accept=False)
        self.args = args
        self.record = open(args.record, "a", buffering=1)
        self.partitions = [str(n) for n in range(args.partitions)]
        self.batches = 0
        self.round_robin = 0

    def write(self, entry):
        self.record.write(json.dumps(entry) + "\n")

    def on_start(self, event):
        self.container = event.container
        # Raises (and the process exits) when the port is taken; the harness starts another
        # stand-in on another port. Only a stand-in that holds its port says it is listening.
        event.container.listen("127.0.0.1:%d" % self.args.port)
        print(READY % self.args.port, flush=True)

    def on_connection_bound(self, event):
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")

    def on_connection_opening(self, event):
        event.connection.container = "eventhubs-standin"

    def on_link_opening(self, event):
        link = event.link
        if link.is_sender:
            link.source.address = link.remote_source.address
            link.target.address = link.remote_target.address
            return
        address = link.remote_target.address or ""
        link.target.address = address
        link.source.address = link.remote_source.address
        link.max_message_size = self.args.max_message_size
        if address in (CBS, MANAGEMENT):
            return
        if self.partition_of_address(address) is False:
            self.refuse(link, "amqp:not-found", "no event hub at `%s`" % address)
        elif not authorized(link.connection):
            self.refuse(link, "amqp:unauthorized-access", "no valid token for `%s`" % address)

    def refuse(self, link, condition, description):
        self.write({"type": "refused", "address": link.remote_target.address, "reason": description})
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def partition_of_address(self, address):
        """None for the hub itself, the partition id for `<hub>/Partitions/<n>`, False for
        anything else."""
        path = address.split("://", 1)[-1]
        if "/" in path and "://" in address:
            path = path.split("/", 1)[1]
        if path == self.args.hub:
            return None
        prefix = self.args.hub + "/Partitions/"
        if path.startswith(prefix) and path[len(prefix):] in self.partitions:
            return path[len(prefix):]
        return False

    def on_delivery(self, event):
        delivery = event.delivery
        link = delivery.link
        if not link.is_receiver:
            return
        if delivery.aborted:
            delivery.settle()
            return
        if not delivery.readable or delivery.partial:
            return
        raw = link.recv(delivery.pending)
        link.advance()
        address = link.target.address or ""
        if address == CBS:
            self.answer_cbs(link.connection, raw)
            self.settle(delivery, Delivery.ACCEPTED)
        elif address == MANAGEMENT:
            self.answer_management(link.connection, raw)
            self.settle(delivery, Delivery.ACCEPTED)
        else:
            self.receive_events(delivery, address, raw)

    def settle(self, delivery, outcome, condition=None):
        if condition is not None:
            delivery.local.condition = condition
        delivery.update(outcome)
        delivery.settle()

    def reply(self, connection, node, request, status, description, body=None):
        link = connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None and not (link.is_sender and link.source.address == node):
            link = link.next(Endpoint.LOCAL_ACTIVE)
        if link is None:
            return
        response = Message(
            body=body,
            correlation_id=request.id if request.id is not None else request.correlation_id,
            address=request.reply_to,
            properties={"status-code": status, "status-description": description},
        )
        link.send(response)

    def answer_cbs(self, connection, raw):
        request = Message()
        request.decode(raw)
        props = request.properties or {}
        audience = props.get("name", "")
        reason = None
        if props.get("operation") != "put-token":
            reason = "unsupported operation"
        else:
            reason = check_token(str(request.body), self.args.policy, self.args.key)
        if reason is None:
            authorized(connection).add(audience)
            self.write({"type": "cbs", "status": 202, "audience": audience})
            self.reply(connection, CBS, request, 202, "Accepted")
        else:
            self.write({"type": "cbs", "status": 401, "audience": audience, "reason": reason})
            self.reply(connection, CBS, request, 401, "Unauthorized: " + reason)

    def answer_management(self, connection, raw):
        request = Message()
        request.decode(raw)
        props = request.properties or {}
        if props.get("operation") != "READ" or props.get("name") != self.args.hub:
            self.reply(connection, MANAGEMENT, request, 404, "not found")
            return
        now = timestamp(int(time.time() * 1000))
        if props.get("type") == "com.microsoft:eventhub":
            body = {
                "name": self.args.hub,
                "type": "com.microsoft:eventhub",
                "created_at": now,
                "partition_count": len(self.partitions),
                "partition_ids": Array(UNDESCRIBED, Data.STRING, *self.partitions),
            }
        elif props.get("type") == "com.microsoft:partition":
            body = {
                "name": self.args.hub,
                "type": "com.microsoft:partition",
                "partition": props.get("partition", ""),
                "begin_sequence_number": 0,
                "last_enqueued_sequence_number": -1,
                "last_enqueued_offset": "-1",
                "last_enqueued_time_utc": now,
                "is_partition_empty": True,
            }
        else:
            self.reply(connection, MANAGEMENT, request, 400, "unknown type")
            return
        self.reply(connection, MANAGEMENT, request, 200, "OK", body)

    def receive_events(self, delivery, address, raw):
        if len(raw) > self.args.max_message_size:
            self.write({"type": "rejected", "reason": "message-size-exceeded", "size": len(raw)})
            condition = Condition(
                "amqp:link:message-size-exceeded",
                "the batch is %d bytes; the limit is %d" % (len(raw), self.args.max_message_size),
            )
            self.settle(delivery, Delivery.REJECTED, condition)
            return
        partition = self.partition_of_address(address)
        self.batches += 1
        envelope = sections(raw)
        blobs = [value for code, value in envelope if code == 0x75]
        if blobs and all(is_encoded_message(blob) for blob in blobs):
            messages = []
            for blob in blobs:
                message = Message()
                message.decode(blob)
                messages.append(message)
        else:
            message = Message()
            message.decode(raw)
            messages = [message]
        for message in messages:
            self.record_event(message, partition)
        # Event Hubs answers once the batch is stored (milliseconds). Answering within
        # microseconds loses the answer now and then in fe2o3-amqp 0.16 (the client under
        # Microsoft's crate), so the send times out and is re-sent: 2 of 6 loaded runs lost
        # one with no delay, none of 8 with 5 ms. `--settle-delay-ms 0` reproduces it.
        if self.args.settle_delay_ms > 0:
            self.container.schedule(self.args.settle_delay_ms / 1000, SettleLater(self, delivery))
        else:
            self.settle(delivery, Delivery.ACCEPTED)

    def record_event(self, message, partition):
        annotations = message.annotations or {}
        key = annotations.get(symbol("x-opt-partition-key"))
        if partition is None:
            if key is not None:
                partition = self.partitions[sum(str(key).encode()) % len(self.partitions)]
            else:
                partition = self.partitions[self.round_robin % len(self.partitions)]
                self.round_robin += 1
        body = message.body
        if isinstance(body, (bytes, memoryview)):
            body = bytes(body).decode("utf-8", "replace")
        properties = {str(k): v for k, v in (message.properties or {}).items()}
        self.write(
            {
                "type": "event",
                "partition": partition,
                "partition_key": None if key is None else str(key),
                "body": body if isinstance(body, str) else repr(body),
                "properties": {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in properties.items()},
                "message_id": None if message.id is None else str(message.id),
                "batch": self.batches,
            }
        )


READY = "eventhubs-standin listening on 127.0.0.1:%d"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hub", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--max-message-size", type=int, default=1024 * 1024)
    parser.add_argument("--record", required=True)
    parser.add_argument("--settle-delay-ms", type=float, default=5)
    args = parser.parse_args()
    Container(EventHubsStandIn(args)).run()


if __name__ == "__main__":
    sys.exit(main())
