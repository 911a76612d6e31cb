#!/usr/bin/env bash
# The API's docs page, as a person sees it: headless Chromium opens GET /api/docs on a running
# gateway in a network namespace of its own, where nothing but loopback exists, so the page
# can only work if every file it needs comes from the gateway. Then it checks that every
# operation of api-gateway/openapi.json is rendered, that Chromium asked nothing of any other
# host (its network log), and writes a screenshot to target/api-docs/api-docs.png.
#
# Needs root (for the network namespace, and to install Debian's chromium when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/api-docs
if [ "${1:-}" != --inside ]; then
  if ! command -v chromium >/dev/null; then
    echo "installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  cargo build --locked --quiet -p api-gateway
  rm -rf "$out" && mkdir -p "$out"
  if ! unshare --net true 2>/dev/null; then
    echo "error: cannot make a network namespace (unshare --net); run as root" >&2
    exit 1
  fi
  exec unshare --net "$0" --inside
fi

# --- inside the namespace: loopback only ------------------------------------------------------
ip link set lo up
port=3999
# No broker here: the page needs none, and the gateway keeps retrying in the background.
API_GATEWAY_PORT=$port RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT=1 RUST_LOG=warn \
  target/debug/api-gateway >"$out/api-gateway.log" 2>&1 &
gateway=$!
trap 'kill $gateway 2>/dev/null; wait $gateway 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$port/health" && break
  sleep 0.1
done
url=http://127.0.0.1:$port/api/docs

# A fresh profile each run; no first-run, update, or background traffic of Chromium's own.
# --virtual-time-budget lets the page's scripts fetch the document and render it before the
# DOM is dumped or the screenshot taken.
browse() {
  local profile
  profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --no-first-run --user-data-dir="$profile" \
    --virtual-time-budget=15000 --window-size=1280,2600 "$@" "$url" 2>>"$out/chromium.log"
  rm -rf "$profile"
}
started=$(date +%s)
browse --dump-dom --log-net-log="$out/netlog.json" >"$out/page.html"
browse --screenshot="$out/api-docs.png" >/dev/null

python3 - api-gateway/openapi.json "$out/page.html" "$out/netlog.json" "$port" <<'EOF'
import json, re, sys

document, page, netlog, port = sys.argv[1:]
spec = json.load(open(document))
html = open(page).read()
missing = []
operations = 0
for path, item in spec["paths"].items():
    for method, operation in item.items():
        if method == "parameters":
            continue
        operations += 1
        # Swagger UI gives each operation a block with the id operations-<tag>-<operationId>,
        # showing its method and path.
        block = f'id="operations-{operation["tags"][0]}-{operation["operationId"]}"'
        if block not in html or f'data-path="{path}"' not in html:
            missing.append(f"{method.upper()} {path}")
if missing:
    sys.exit(f"error: the docs page does not show {len(missing)} operation(s): {', '.join(missing)}")

# What the page asked for, from Chromium's network log. A page's own requests carry its
# credentials (privacy mode disabled); Chromium's background requests (component updates, the
# spelling dictionary, which the flags above do not all silence) go without, and fail here
# anyway, as nothing but loopback exists.
log = open(netlog).read()
requests = re.findall(r'\{"params":\{[^{}]*"is_preconnect":false,"privacy_mode":"(\w+)","url":"([^"]+)"', log)
page_urls = {url for mode, url in requests if mode == "disabled"}
elsewhere = sorted(u for u in page_urls if not u.startswith(f"http://127.0.0.1:{port}/"))
if elsewhere:
    sys.exit("error: the docs page asked for files elsewhere: " + ", ".join(elsewhere))
if not any(u.endswith("/api/openapi.json") for u in page_urls):
    sys.exit("error: the docs page never fetched /api/openapi.json")
background = {url for mode, url in requests if mode != "disabled"}
print(f"the page requested {len(page_urls)} URLs, all from the gateway "
      f"({len(background)} background requests of Chromium's own ignored)")
print(f"the docs page shows all {operations} operations of the document")
EOF
echo "docs page rendered in $(($(date +%s) - started)) s; screenshot: $out/api-docs.png"
