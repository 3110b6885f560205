"""Drive the real LaunchDarkly Python server SDK against a flagstream.

Usage: ld_sdk_driver.py EVENTS_URI SDK_KEY FLAGS_JSON USERS [diagnostics]

Evaluates two flags per user (both with trackEvents, so every evaluation becomes a full
feature event), tracks one custom event and identifies each user, then flushes and closes.
Prints one JSON line with what it did, for the Rust test to compare with the export.
With `diagnostics`, the SDK also sends its diagnostic payloads (`/diagnostic`).
"""
import json
import sys

import ldclient
from ldclient import Context
from ldclient.config import Config
from ldclient.integrations import Files


def main():
    events_uri, sdk_key, flags_path, users = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    diagnostics = sys.argv[5:] == ["diagnostics"]
    config = Config(
        sdk_key,
        update_processor_class=Files.new_data_source(paths=[flags_path], auto_update=False),
        send_events=True,
        events_uri=events_uri,
        diagnostic_opt_out=not diagnostics,
        flush_interval=0.2,
        events_max_pending=100000,
    )
    ldclient.set_config(config)
    client = ldclient.get()
    if not client.is_initialized():
        print(json.dumps({"error": "client did not initialize"}))
        sys.exit(1)
    evaluations = tracks = identifies = 0
    for n in range(users):
        context = Context.builder(f"user-{n}").name(f"U{n}").build()
        client.variation("new-checkout", context, False)
        client.variation("banner-color", context, "red")
        evaluations += 2
        client.track("purchase", context, data={"sku": "x", "n": n}, metric_value=float(n))
        tracks += 1
        client.identify(context)
        identifies += 1
    client.flush()
    client.close()
    print(json.dumps({"feature": evaluations, "custom": tracks, "identify": identifies, "users": users}))


if __name__ == "__main__":
    main()
