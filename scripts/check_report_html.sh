#!/usr/bin/env bash
# Renders a `medq validate` report folder's report.html in headless Chromium and checks that it
# is a real, error-free page:
#   - Chromium exits 0 and logs no console message (JS error, failed resource load, ...);
#   - the DOM shows the same verdict as report.json and holds the charts (inline SVG);
#   - the screenshot is not blank: >= 3% non-white pixels, >= 20 distinct colours, and the
#     verdict banner's colour (green APPROVED / red REJECTED) in the top 300 rows.
# Usage: scripts/check_report_html.sh REPORT_DIR [SCREENSHOT.png]
# (default screenshot: REPORT_DIR/report.png). Exit 0 = all checks pass, 1 = a check failed,
# 2 = bad usage / missing tools. CHROMIUM=... picks another browser binary.
set -euo pipefail

die() { echo "check_report_html: $*" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 REPORT_DIR [SCREENSHOT.png]"
dir=$(cd "$1" 2>/dev/null && pwd) || die "no such folder: $1"
html="$dir/report.html"
json="$dir/report.json"
[ -f "$html" ] || die "$html: missing"
[ -f "$json" ] || die "$json: missing"
shot=${2:-$dir/report.png}
case "$shot" in /*) ;; *) shot="$PWD/$shot" ;; esac
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$chromium" ] || die "chromium not found (apt-get install chromium, or set CHROMIUM)"
command -v python3 >/dev/null || die "python3 is needed to read the screenshot"

work=$(mktemp -d /tmp/check_report.XXXXXX)
trap 'rm -rf "$work"' EXIT
sandbox=()
[ "$(id -u)" = 0 ] && sandbox=(--no-sandbox)

echo "rendering $html ..." >&2
rc=0
DBUS_SYSTEM_BUS_ADDRESS=disabled: DBUS_SESSION_BUS_ADDRESS=disabled: timeout 120 "$chromium" --headless --disable-gpu \
  "${sandbox[@]}" --no-first-run --disable-extensions --disable-dev-shm-usage --user-data-dir="$work/profile" \
  --enable-logging=stderr --v=0 --window-size=1280,2000 --screenshot="$shot" --dump-dom "file://$html" \
  > "$work/dom.html" 2> "$work/chromium.log" || rc=$?
if [ "$rc" != 0 ] || [ ! -s "$shot" ]; then
  echo "FAIL: chromium exited $rc without a screenshot; log:" >&2
  tail -20 "$work/chromium.log" >&2
  exit 1
fi

python3 - "$json" "$work/dom.html" "$work/chromium.log" "$shot" <<'EOF'
import json, struct, sys, zlib

rep_path, dom_path, log_path, png_path = sys.argv[1:5]
fails = []
verdict = json.load(open(rep_path))["gate"]["verdict"]
dom = open(dom_path, encoding="utf-8", errors="replace").read()
console = [l for l in open(log_path, errors="replace") if ":CONSOLE" in l or "Uncaught" in l]
if console:
    fails.append("console messages while rendering:\n  " + "  ".join(console))
cls = "ok" if verdict == "APPROVED" else "bad"
if f'class="verdict {cls}">{verdict}' not in dom:
    fails.append(f"the rendered page does not show the verdict {verdict} of report.json")
nsvg = dom.count("<svg")
if nsvg < 2:
    fails.append(f"only {nsvg} inline SVG charts in the page")

def read_png(path):
    # Minimal decoder for Chromium's screenshots: 8-bit RGB/RGBA, not interlaced.
    d = open(path, "rb").read()
    if d[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, w = 8, b"", 0
    while pos < len(d):
        n, typ = struct.unpack(">I4s", d[pos:pos + 8])
        body = d[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            w, h, depth, ctype, _, _, inter = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or inter:
                raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype}, interlace {inter})")
            bpp = 3 if ctype == 2 else 4
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride = zlib.decompress(idat), w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows

w, h, bpp, rows = read_png(png_path)
banner = (0x2e, 0x7d, 0x32) if verdict == "APPROVED" else (0xc6, 0x28, 0x28)
inked, colours, banner_px = 0, set(), 0
for y, row in enumerate(rows):
    for x in range(0, w * bpp, bpp):
        r, g, b = row[x], row[x + 1], row[x + 2]
        if r < 240 or g < 240 or b < 240:
            inked += 1
        colours.add((r >> 3, g >> 3, b >> 3))
        if y < 300 and abs(r - banner[0]) <= 4 and abs(g - banner[1]) <= 4 and abs(b - banner[2]) <= 4:
            banner_px += 1
frac = inked / (w * h)
if frac < 0.03:
    fails.append(f"screenshot looks blank: {100 * frac:.2f}% non-white pixels")
if len(colours) < 20:
    fails.append(f"screenshot has only {len(colours)} distinct colours")
if banner_px < 20000:
    fails.append(f"no {verdict} banner colour at the top of the screenshot ({banner_px} pixels)")
print(f"{w}x{h} screenshot: {100 * frac:.1f}% non-white, {len(colours)} colours, {banner_px} banner pixels; "
      f"verdict {verdict}; {nsvg} SVG charts; {len(console)} console messages")
if fails:
    print("FAIL:\n- " + "\n- ".join(fails), file=sys.stderr)
    sys.exit(1)
print("OK: report.html renders cleanly")
EOF
echo "screenshot: $shot" >&2
