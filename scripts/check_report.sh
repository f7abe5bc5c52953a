#!/usr/bin/env bash
# Open a comparison report (metalearn reproduce, docs/report.md) in a real browser, headless
# Chromium from Debian's packages (installed here when missing), and check what a reader sees:
#   - no broken links: every <img> is a PNG data URI that decodes or an existing file, every
#     local <a href> target exists (metalearn.sweep.comparison.broken_links);
#   - the tables and images render: the DOM Chromium built holds every table and image of the
#     page, and the screenshot holds the figures' colours (grey tables alone would not);
#   - a screenshot (1400 x 4000) beside the report, to commit with it.
# Usage: scripts/check_report.sh [REPORT_HTML] [SCREENSHOT_PNG]
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-benchmarks/results/report_smoke/report.html}"
screenshot="${2:-$(dirname "$report")/screenshot.png}"
[ -f "$report" ] || { echo "error: no report at $report: run metalearn reproduce first" >&2; exit 1; }

if ! command -v chromium >/dev/null; then
  echo "installing Chromium from Debian's packages (apt-get install chromium)"
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
fi
url="file://$(realpath "$report")"
# --no-sandbox: Chromium refuses to run as root with its sandbox; the page is our own file.
browser=(chromium --headless --no-sandbox --disable-gpu --hide-scrollbars)
"${browser[@]}" --screenshot="$(realpath -m "$screenshot")" --window-size=1400,4000 "$url" 2>/dev/null
dom="$(mktemp)"
trap 'rm -f "$dom"' EXIT
"${browser[@]}" --dump-dom "$url" > "$dom" 2>/dev/null

python - "$report" "$dom" "$screenshot" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from metalearn.sweep.comparison import broken_links

report, dom, screenshot = Path(sys.argv[1]), Path(sys.argv[2]).read_text(), Path(sys.argv[3])
source = report.read_text()
problems = broken_links(report)
for tag in ("<table", "<img"):
    expected, rendered = source.count(tag), dom.count(tag)
    if expected == 0 or rendered != expected:
        problems.append(f"{tag}>: {expected} in the page, {rendered} in the DOM Chromium built")
pixels = np.asarray(Image.open(screenshot).convert("HSV"), dtype=float) / 255
if pixels.shape[:2] != (4000, 1400):
    problems.append(f"screenshot of {pixels.shape[1]} x {pixels.shape[0]} pixels, not 1400 x 4000")
coloured = float(((pixels[..., 1] > 0.3) & (pixels[..., 2] > 0.2)).mean())
if coloured < 0.005:  # the heatmaps and curves are coloured; text and table borders are grey
    problems.append(f"only {coloured:.2%} of the screenshot is coloured: the figures did not render")
for problem in problems:
    print(f"error: {report}: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{report}: {source.count('<table')} tables and {source.count('<img')} images rendered, no broken "
      f"links; {coloured:.1%} of the screenshot coloured; screenshot: {screenshot}")
PY
