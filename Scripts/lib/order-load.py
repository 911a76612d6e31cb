#!/usr/bin/env python3
"""Orders posted continuously by several clients, and what became of them: the load and the
bookkeeping of Scripts/e2e-ha.sh.

    order-load.py post URL ANSWERS --clients N --first-user U [--interval SECONDS]
    order-load.py check ANSWERS ROWS [--bound SECONDS]

post: N clients (threads, each with its own keep-alive connection) POST /api/billing to URL
in a loop, each order with a user id of its own (U, U+1, ... spread over the clients), so that
every stored row names the request that made it. Each answer is appended to ANSWERS as one
line, "start end client user_id status order_id" (Unix seconds; status 000 when no HTTP
answer came; order_id "-" when the body named none). Runs until SIGTERM or SIGINT, then lets
each client finish the request in hand.

check: ANSWERS against ROWS, the orders stored for those user ids ("order_id user_id" lines,
as psql prints them). Prints one line of key=value figures (read by e2e-ha.sh) and exits 1
when the guarantee was broken:
  - every order answered 200 is stored, exactly once, under the id its client was given;
  - no request was stored twice (no user id in two rows);
  - nothing is stored whose client got neither a 200 nor its order id (a 503 may name the
    order id when the broker may have taken it: those count as "maybe", stored or not).
The degraded time is from the start of the first answer that was not a 200 to the end of
the last; with --bound, exceeding it fails too.

Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

USERS_PER_CLIENT = 1_000_000


def post(args: argparse.Namespace) -> int:
    url = urlsplit(args.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()
    out = open(args.answers, "a", buffering=1)

    def client(number: int) -> None:
        user = args.first_user + number * USERS_PER_CLIENT
        connection = None
        while not stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)
            body = json.dumps({"user_id": str(user), "number_of_items": "1", "total_amount": "1.00"})
            start = time.time()
            status, order_id = "000", "-"
            try:
                connection.request("POST", "/api/billing", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                status = f"{response.status:03d}"
                try:
                    order_id = json.loads(payload).get("order_id") or "-"
                except (ValueError, AttributeError):
                    pass
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = None
            end = time.time()
            with lock:
                out.write(f"{start:.3f} {end:.3f} {number} {user} {status} {order_id}\n")
            user += 1
            stop.wait(args.interval)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.close()
    return 0


def check(args: argparse.Namespace) -> int:
    answers = []
    with open(args.answers) as lines:
        for line in lines:
            start, end, _client, user, status, order_id = line.split()
            answers.append((float(start), float(end), int(user), status, order_id))
    stored: dict[int, list[str]] = {}
    with open(args.rows) as lines:
        for line in lines:
            if line.strip():
                order_id, user = line.split()[:2]
                stored.setdefault(int(user), []).append(order_id)

    accepted = [a for a in answers if a[3] == "200"]
    refused = [a for a in answers if a[3] == "503"]
    other = [a for a in answers if a[3] not in ("200", "503")]
    lost = [a for a in accepted if stored.get(a[2]) != [a[4]]]
    twice = {user: ids for user, ids in stored.items() if len(ids) > 1}
    known = {a[2]: a for a in answers}
    # Stored, although its client got neither a 200 nor a 503 naming that order.
    unknown = []
    maybe_stored = 0
    for user, ids in stored.items():
        answer = known.get(user)
        if answer is None or answer[3] == "200":
            if answer is None:
                unknown.append((user, ids))
            continue
        if answer[3] == "503" and answer[4] in ids:
            maybe_stored += 1
        else:
            unknown.append((user, ids))
    failed = [a for a in answers if a[3] != "200"]
    degraded = max(a[1] for a in failed) - min(a[0] for a in failed) if failed else 0.0
    first_failed = min((a[0] for a in failed), default=0.0)
    slowest = max((a[1] - a[0] for a in answers), default=0.0)
    figures = {
        "requests": len(answers),
        "ok": len(accepted),
        "refused": len(refused),
        "refused_with_id": sum(1 for a in refused if a[4] != "-"),
        "refused_stored": maybe_stored,
        "other": len(other),
        "lost": len(lost),
        "twice": len(twice),
        "unknown": len(unknown),
        "degraded": f"{degraded:.1f}",
        "first_failed": f"{first_failed:.3f}",
        "slowest": f"{slowest:.2f}",
    }
    print(" ".join(f"{key}={value}" for key, value in figures.items()))
    for answer in lost[:10]:
        print(f"  answered 200 but not stored exactly once as {answer[4]}: user {answer[2]}, "
              f"stored {stored.get(answer[2])}", file=sys.stderr)
    for user, ids in list(twice.items())[:10]:
        print(f"  stored twice: user {user} as {ids}", file=sys.stderr)
    for user, ids in unknown[:10]:
        print(f"  stored without its client knowing: user {user} as {ids}, answer {known.get(user)}",
              file=sys.stderr)
    for answer in other[:10]:
        print(f"  neither 200 nor 503: {answer}", file=sys.stderr)
    broken = lost or twice or unknown or other or not accepted
    if args.bound is not None and degraded > args.bound:
        broken = True
    return 1 if broken else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("post")
    p.add_argument("url")
    p.add_argument("answers")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--first-user", type=int, required=True)
    p.add_argument("--interval", type=float, default=0.02, help="pause between a client's requests")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for an answer")
    c = commands.add_parser("check")
    c.add_argument("answers")
    c.add_argument("rows")
    c.add_argument("--bound", type=float)
    args = parser.parse_args()
    return post(args) if args.command == "post" else check(args)


if __name__ == "__main__":
    sys.exit(main())
