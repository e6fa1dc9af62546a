"""Draw bench/results/*.json as one SVG chart: throughput and latency percentiles per bench kind
(files written by `iggy-fast bench --output`) and, when present, the peers run
(bench/results/peers.json, written by `bench/peers.py --output`).

    python bench/chart.py [results_dir] [out.svg]   # default bench/results, <dir>/chart.svg

Throughput: messages/s of each kind's producers and consumers (totals). Latency: p50 ... p99.9
and max of every actor's batch round trips merged (the totals; files from before totals had
percentiles fall back to the worst actor's), and end-to-end per-message latency where the kind
measured it. Plain SVG text, no plotting library.
"""

import glob
import json
import math
import os
import sys

PCTS = ("p50", "p90", "p95", "p99", "p99.9", "max")
COLORS = ("#2e7d32", "#f9a825", "#ef6c00", "#c62828", "#6a1b9a", "#424242")
WIDTH, BAR, LEFT = 1000, 22, 340


def load(directory):
    """([(label, msg/s)], [(label, {pct: us})], [peer rows]) from the result files."""
    rates, latencies, peers = [], [], None
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            report = json.load(f)
        name = os.path.basename(path)[:-5]
        if "rounds" in report and "best" in report:
            peers = report
            continue
        if "totals" not in report:
            continue                        # not a bench report
        for role, total in report["totals"].items():
            label = f"{name} ({role}s)"
            rates.append((label, total["messages_per_second"]))
            lat = total.get("latency_us")
            if lat is None:
                actors = [a for a in report["actors"] if a["role"] == role]
                lat = {p: max(a["latency_us"].get(p, 0) for a in actors) for p in PCTS}
            latencies.append((label + " batch", lat))
            if "end_to_end_us" in total:
                latencies.append((f"{name} per message, end to end", total["end_to_end_us"]))
    return rates, latencies, peers


def bars(svg, y, rows, top, color):
    for label, rate in rows:
        w = (WIDTH - LEFT - 150) * rate / top if top else 0
        svg.append(f'<text x="10" y="{y + 15}">{label}</text>')
        svg.append(f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR}" fill="{color}"/>')
        svg.append(f'<text x="{LEFT + w + 6:.1f}" y="{y + 15}">{rate:,.0f} msg/s</text>')
        y += BAR + 8
    return y


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                                     "results")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(directory, "chart.svg")
    rates, latencies, peers = load(directory)
    peer_rows = []
    if peers:
        for server, phases in peers["best"].items():
            for phase in ("produce", "consume"):
                best = phases.get(phase)
                if best:
                    peer_rows.append((f"{server} {phase} ({best['client']})",
                                      best["messages_per_second"]))
    if not rates and not peer_rows:
        raise SystemExit(f"no results in {directory}")
    svg = []
    y = 24
    if rates:
        svg.append(f'<text x="10" y="{y}" font-size="16" font-weight="bold">iggy-fast bench: '
                   f'throughput (messages/s, totals)</text>')
        y = bars(svg, y + 14, rates, max(r for _, r in rates), "#3b7dd8") + 16
    if latencies:
        svg.append(f'<text x="10" y="{y}" font-size="16" font-weight="bold">latency '
                   f'percentiles, all actors merged (µs, log scale)</text>')
        y += 18
        for i, p in enumerate(PCTS):
            svg.append(f'<circle cx="{LEFT + 20 + 80 * i}" cy="{y}" r="5" fill="{COLORS[i]}"/>'
                       f'<text x="{LEFT + 30 + 80 * i}" y="{y + 4}">{p}</text>')
        y += 14
        span = math.log10(max(10, max(max(lat.get(p, 1) for p in PCTS)
                                      for _, lat in latencies)))
        for label, lat in latencies:
            svg.append(f'<text x="10" y="{y + 15}">{label}</text>')
            svg.append(f'<line x1="{LEFT}" y1="{y + 11}" x2="{WIDTH - 80}" y2="{y + 11}" '
                       f'stroke="#ccc"/>')
            for i, p in enumerate(PCTS):
                value = lat.get(p, 0)
                x = LEFT + (WIDTH - LEFT - 80) * math.log10(max(value, 1)) / span
                svg.append(f'<circle cx="{x:.1f}" cy="{y + 11}" r="5" fill="{COLORS[i]}">'
                           f'<title>{p} {value:.0f} µs</title></circle>')
            svg.append(f'<text x="{WIDTH - 75}" y="{y + 15}">p99 {lat.get("p99", 0):,.0f}</text>')
            y += BAR + 8
        y += 16
    if peer_rows:
        s = peers["settings"]
        svg.append(f'<text x="10" y="{y}" font-size="16" font-weight="bold">peers: '
                   f'{s["messages"]:,} x {s["message_size"]} B, batches of {s["batch"]}, '
                   f'best of {s["rounds"]} round(s) (messages/s)</text>')
        y = bars(svg, y + 14, peer_rows, max(r for _, r in peer_rows), "#00897b")
    svg.insert(0, f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + 10}" '
                  f'font-family="sans-serif" font-size="12">\n'
                  '<rect width="100%" height="100%" fill="white"/>')
    svg.append('</svg>')
    with open(out, "w") as f:
        f.write("\n".join(svg))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
