#!/usr/bin/env python3
"""A webhook receiver for Alertmanager, for Scripts/e2e-compose.sh: stands in for the person
or service that ALERT_WEBHOOK_URL names.

    alert-receiver.py ADDRESS OUTPUT PORT_FILE

Listens on ADDRESS (an address of this machine that the containers reach: the Compose
network's gateway), on a free port which it writes to PORT_FILE once it listens. Every POST
is answered 200 and appended to OUTPUT as one line: the arrival time (Unix seconds), then per
alert of the notification "<status> <alertname>", e.g.

    1764662400.12 firing BillingQueueNoConsumer
    1764662431.80 resolved BillingQueueNoConsumer

Standard library only; runs until it is killed.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def main() -> int:
    address, output, port_file = sys.argv[1:4]

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                alerts = json.loads(body).get("alerts", [])
                seen = " ".join(f"{a.get('status')} {a.get('labels', {}).get('alertname')}"
                                for a in alerts)
            except (ValueError, AttributeError):
                seen = "unreadable"
            with open(output, "a", encoding="utf-8") as f:
                f.write(f"{time.time():.2f} {seen}\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer((address, 0), Receiver)
    with open(port_file, "w", encoding="utf-8") as f:
        f.write(f"{server.server_address[1]}\n")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
