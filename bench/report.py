"""Turns the raw results of bench/run.sh into the markdown report: medians of the repetitions,
each figure beside what bounds it, and whether each target is met.

usage: report.py RESULTS_TSV VERSIONS_TEXT
"""

import statistics
import sys
from collections import defaultdict

# The targets, as ratios measured side by side in the same run.
GATEWAY_VS_DIRECT = 0.8
GATEWAY_VS_NGINX = 1.0
P99_VS_DIRECT = 1.3
PUBLISH_VS_RAW = 0.5
DRAIN_VS_RAW = 0.5
IDLE_RSS_MIB = 20


def load(path):
    http = defaultdict(list)  # (request, target, concurrency) -> [(rps, p50, p99, errors)]
    other = defaultdict(list)  # kind -> [values]
    publish = defaultdict(list)  # messages in flight -> [orders/s]
    rss = {}  # (kind, service) -> KiB
    for line in open(path):
        fields = line.rstrip("\n").split("\t")
        kind = fields[0]
        if kind == "http":
            request, target = fields[1].split("|")
            rps, p50, p99, errors = map(float, fields[3:7])
            http[(request, target, int(fields[2]))].append((rps, p50, p99, errors))
        elif kind == "publish_raw":
            publish[int(fields[1])].append(float(fields[2]))
        elif kind in ("drain", "insert_raw", "consume_raw"):
            other[kind].append(float(fields[2]))
        elif kind.startswith("rss"):
            rss[(kind, fields[1])] = float(fields[2])
    return http, other, publish, rss


def median_run(runs):
    """The per-column medians of several runs."""
    return tuple(statistics.median(column) for column in zip(*runs))


def verdict(ok):
    return "**met**" if ok else "**missed**"


def main():
    http, other, publish, rss = load(sys.argv[1])
    versions = sys.argv[2]
    out = []
    targets = []

    out.append("# Benchmark results\n")
    out.append(versions + "\n")

    out.append("## HTTP through the gateway, straight to inventory-app, and through nginx\n")
    out.append("| request | c | via | req/s | p50 ms | p99 ms | errors | gateway ÷ direct | gateway ÷ nginx | gateway p99 ÷ direct p99 |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for request in ("GET /api/movies/42", "GET /api/movies"):
        for concurrency in sorted({c for (r, _, c) in http if r == request}):
            runs = {t: median_run(http[(request, t, concurrency)]) for t in ("direct", "gateway", "nginx")
                    if http.get((request, t, concurrency))}
            if len(runs) < 3:
                continue
            direct, gateway, nginx = runs["direct"], runs["gateway"], runs["nginx"]
            vs_direct = gateway[0] / direct[0]
            vs_nginx = gateway[0] / nginx[0]
            p99_ratio = gateway[2] / direct[2]
            for target, (rps, p50, p99, errors) in runs.items():
                ratios = (f"{vs_direct:.2f}", f"{vs_nginx:.2f}", f"{p99_ratio:.2f}") if target == "gateway" else ("", "", "")
                out.append(f"| `{request}` | {concurrency} | {target} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors:.0f} | " + " | ".join(ratios) + " |")
            label = f"`{request}` c={concurrency}"
            targets.append((f"gateway ≥ {GATEWAY_VS_DIRECT}× direct, {label}", f"{vs_direct:.2f}×", vs_direct >= GATEWAY_VS_DIRECT))
            targets.append((f"gateway ≥ {GATEWAY_VS_NGINX}× nginx, {label}", f"{vs_nginx:.2f}×", vs_nginx >= GATEWAY_VS_NGINX))
            targets.append((f"gateway p99 ≤ {P99_VS_DIRECT}× direct, {label}", f"{p99_ratio:.2f}×", p99_ratio <= P99_VS_DIRECT))
    out.append("")

    out.append("## Orders: confirmed publishing through the gateway, and the broker's ceiling\n")
    out.append("The gateway answers an order only after its confirm, so c clients keep at most c messages in flight; "
               "the raw publisher is shown with as many in flight as the clients, and with more. "
               "The ceiling is the best raw figure.\n")
    out.append("| measurement | in flight | orders/s | p99 ms | errors | ÷ raw, same in flight | ÷ ceiling |")
    out.append("|---|---|---|---|---|---|---|")
    raw = {window: statistics.median(rates) for window, rates in publish.items()}
    ceiling = max(raw.values(), default=0)
    for (request, _, concurrency), runs in sorted(http.items()):
        if request != "POST /api/billing":
            continue
        rps, _, p99, errors = median_run(runs)
        same = raw.get(concurrency)
        vs_same = f"{rps / same:.2f}" if same else "—"
        ratio = rps / ceiling if ceiling else 0
        out.append(f"| `POST /api/billing` via gateway | {concurrency} | {rps:,.0f} | {p99:.2f} | {errors:.0f} | {vs_same} | {ratio:.2f} |")
        targets.append((f"POST /api/billing ≥ {PUBLISH_VS_RAW}× the raw confirmed-publish ceiling, c={concurrency}", f"{ratio:.2f}×", ratio >= PUBLISH_VS_RAW and errors == 0))
    for window, rate in sorted(raw.items()):
        out.append(f"| raw publisher (lapin, confirms) | {window} | {rate:,.0f} | — | 0 | 1.00 | {rate / ceiling:.2f} |")
    out.append("")

    out.append("## Billing drain: a queued backlog stored by billing-app, and the ceilings\n")
    out.append("The clock runs from billing-app's start until the last order is stored. A drain can go no faster than "
               "the broker delivers (raw consumer: same prefetch and batched acks, storing nothing) nor than the database "
               "stores (raw batched INSERTs of the same rows, no broker).\n")
    out.append("| measurement | orders/s | ÷ raw inserts | ÷ raw consumer |")
    out.append("|---|---|---|---|")
    if other["drain"] and other["insert_raw"] and other["consume_raw"]:
        drain = statistics.median(other["drain"])
        insert = statistics.median(other["insert_raw"])
        consume = statistics.median(other["consume_raw"])
        out.append(f"| billing-app draining the backlog | {drain:,.0f} | {drain / insert:.2f} | {drain / consume:.2f} |")
        out.append(f"| raw consumer (the broker's delivery ceiling) | {consume:,.0f} | {consume / insert:.2f} | 1.00 |")
        out.append(f"| raw batched INSERTs, 1000 rows per statement (the database's ceiling) | {insert:,.0f} | 1.00 | {insert / consume:.2f} |")
        targets.append((f"drain ≥ {DRAIN_VS_RAW}× raw batched inserts", f"{drain / insert:.2f}×", drain / insert >= DRAIN_VS_RAW))
    out.append("")

    out.append("## Resident memory\n")
    out.append("| service | idle MiB | right after load MiB |")
    out.append("|---|---|---|")
    for service in ("api-gateway", "inventory-app", "billing-app"):
        idle = rss.get(("rss_idle", service), 0) / 1024
        loaded = rss.get(("rss_loaded", service), 0) / 1024
        out.append(f"| {service} | {idle:.1f} | {loaded:.1f} |")
        targets.append((f"{service} idle resident memory ≤ {IDLE_RSS_MIB} MiB", f"{idle:.1f} MiB", 0 < idle <= IDLE_RSS_MIB))
    out.append("")

    out.append("## Targets\n")
    out.append("| target | measured | |")
    out.append("|---|---|---|")
    for name, measured, ok in targets:
        out.append(f"| {name} | {measured} | {verdict(ok)} |")
    met = sum(ok for _, _, ok in targets)
    out.append(f"\n{met} of {len(targets)} targets met.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
