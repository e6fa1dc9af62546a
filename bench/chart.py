"""Draw bench/results/*.json (written by `iggy-fast bench --output`) as one SVG chart:
throughput per kind (bars) and per-batch latency percentiles per kind (dots).

    python bench/chart.py [results_dir] [out.svg]   # default bench/results, results/chart.svg

Plain SVG text, no plotting library.
"""

import glob
import json
import os
import sys

PCTS = ("p50", "p90", "p95", "p99", "p99.9")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                                     "results")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(directory, "chart.svg")
    rows = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        report = json.load(open(path))
        name = os.path.basename(path)[:-5]
        for role, total in report["totals"].items():
            actors = [a for a in report["actors"] if a["role"] == role]
            lat = {p: max(a["latency_us"][p] for a in actors) for p in PCTS}
            rows.append((f"{name} ({role}s)", total["messages_per_second"], lat))
    width, bar_h, left = 980, 26, 330
    height = 80 + len(rows) * (bar_h + 10) * 2 + 60
    top_rate = max(r[1] for r in rows)
    top_lat = max(max(r[2].values()) for r in rows)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="24" font-size="16" font-weight="bold">iggy-fast bench: '
           'throughput (messages/s) and per-batch latency percentiles (µs, log scale)</text>']
    y = 50
    for label, rate, _ in rows:
        w = (width - left - 120) * rate / top_rate
        svg.append(f'<text x="10" y="{y + 17}">{label}</text>')
        svg.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#3b7dd8"/>')
        svg.append(f'<text x="{left + w + 6:.1f}" y="{y + 17}">{rate:,.0f} msg/s</text>')
        y += bar_h + 10
    y += 20
    import math
    span = math.log10(max(top_lat, 10))
    colors = ("#2e7d32", "#f9a825", "#ef6c00", "#c62828", "#6a1b9a")
    for i, p in enumerate(PCTS):
        svg.append(f'<circle cx="{left + 20 + 90 * i}" cy="{y}" r="5" fill="{colors[i]}"/>'
                   f'<text x="{left + 30 + 90 * i}" y="{y + 4}">{p}</text>')
    y += 20
    for label, _, lat in rows:
        svg.append(f'<text x="10" y="{y + 17}">{label}</text>')
        svg.append(f'<line x1="{left}" y1="{y + 13}" x2="{width - 60}" y2="{y + 13}" '
                   f'stroke="#ccc"/>')
        for i, p in enumerate(PCTS):
            x = left + (width - left - 60) * math.log10(max(lat[p], 1)) / span
            svg.append(f'<circle cx="{x:.1f}" cy="{y + 13}" r="5" fill="{colors[i]}">'
                       f'<title>{p} {lat[p]:.0f} µs</title></circle>')
        svg.append(f'<text x="{width - 55}" y="{y + 17}">{lat["p99"]:.0f}µs</text>')
        y += bar_h + 10
    svg.append('</svg>')
    with open(out, "w") as f:
        f.write("\n".join(svg))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
