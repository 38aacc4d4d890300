"""Bench output: the live progress line, the final table, JSON, and a self-contained HTML
report with inline SVG plots (no scripts, no network: it opens anywhere).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from voice.bench.runner import OVERLOADED_MS, BenchResult, Snapshot
from voice.bench.stats import percentile

STAGES = ("vad_ms", "asr_ms", "first_sentence_ms", "tts_ttfb_ms", "overhead_ms")
COLORS = ("#8ecae6", "#219ebc", "#ffb703", "#fb8500", "#d62828", "#adb5bd")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def progress_line(s: Snapshot) -> str:
    return (
        f"[{s.elapsed_s:6.1f}s] sessions {s.sessions_up:4d}  turns {s.turns_done:5d}  "
        f"v2v p50 {_ms(s.v2v_p50)} ms  p95 {_ms(s.v2v_p95)} ms  errors {s.errors}"
    )


def table(result: BenchResult) -> str:
    summary = result.summary()
    rows = [("voice_to_voice_ms (at the caller)", summary["voice_to_voice_ms"])]
    if summary["barge_in_stop_ms"]["count"]:
        rows.append(("barge_in_stop_ms (at the caller)", summary["barge_in_stop_ms"]))
    rows += [(f"server {name}", stats) for name, stats in summary["server"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}} {'n':>5} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}"]
    for name, stats in rows:
        lines.append(
            f"{name:<{width}} {stats['count']:>5} {_ms(stats['p50']):>7} {_ms(stats['p95']):>7} "
            f"{_ms(stats['p99']):>7} {_ms(stats['max']):>7}"
        )
    rate = summary["sessions_per_s"]
    lines.append(
        f"turns {summary['turns']}, sessions {summary['sessions']} (peak {summary['peak_sessions']}"
        f" at once), {rate:.2f} sessions/s, wall {summary['wall_s']:.1f} s"
        if rate
        else f"turns {summary['turns']}"
    )
    wer = summary["word_error_rate"]
    if wer["rate"] is not None:
        lines.append(
            f"word error rate {wer['rate']:.1%} ({wer['words']} words in {wer['turns']} turns, "
            "transcripts against the manifest's text)"
        )
    errors = summary["errors"]
    lines.append(
        "errors: " + (", ".join(f"{k} ×{n}" for k, n in errors.items()) if errors else "none")
    )
    lag = summary["generator_lag_ms"]
    if lag > OVERLOADED_MS:
        lines.append(
            f"warning: this load generator ran up to {lag:.0f} ms behind real time: it is "
            "overloaded, and the latencies above are partly its own. Run fewer sessions per "
            "process, or the generator on another machine."
        )
    return "\n".join(lines)


def write_json(result: BenchResult, path: Path) -> None:
    path.write_text(json.dumps(result.as_dict(), indent=2))


def _histogram(values: list[float], *, width: int = 560, height: int = 200) -> str:
    if not values:
        return "<p>No turns were heard.</p>"
    lo, hi = min(values), max(values)
    bins = 24
    step = max((hi - lo) / bins, 1.0)
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    top = max(counts)
    bar_w = width / bins
    bars = "".join(
        f'<rect x="{i * bar_w:.1f}" y="{height - 20 - c / top * (height - 40):.1f}" '
        f'width="{bar_w - 2:.1f}" height="{c / top * (height - 40):.1f}" fill="#219ebc">'
        f"<title>{lo + i * step:.0f}–{lo + (i + 1) * step:.0f} ms: {c}</title></rect>"
        for i, c in enumerate(counts)
    )
    p50, p95 = percentile(values, 50), percentile(values, 95)

    def x(value: float) -> float:
        return (value - lo) / (step * bins) * width

    marks = "".join(
        f'<line x1="{x(p):.1f}" x2="{x(p):.1f}" y1="10" y2="{height - 20}" stroke="{color}" '
        f'stroke-dasharray="4"/><text x="{x(p) + 4:.1f}" y="20" fill="{color}">'
        f"{label} {p:.0f}</text>"
        for p, label, color in ((p50, "p50", "#023047"), (p95, "p95", "#d62828"))
        if p is not None
    )
    axis = (
        f'<text x="0" y="{height - 4}">{lo:.0f} ms</text>'
        f'<text x="{width - 60}" y="{height - 4}">{lo + step * bins:.0f} ms</text>'
    )
    return f'<svg width="{width}" height="{height}" font-size="11">{bars}{marks}{axis}</svg>'


def _timeline(result: BenchResult, *, width: int = 560, height: int = 220) -> str:
    points = [(t.at_s, t.voice_to_voice_ms, t.concurrency) for t in result.turns]
    heard = [(x, y, c) for x, y, c in points if y is not None]
    if not heard:
        return "<p>No turns were heard.</p>"
    x_max = max(x for x, _, _ in points) or 1.0
    y_max = max(y for _, y, _ in heard) * 1.1
    c_max = max(c for _, _, c in points) or 1
    plot_h = height - 30

    def px(x: float) -> float:
        return 40 + x / x_max * (width - 80)

    dots = "".join(
        f'<circle cx="{px(x):.1f}" cy="{10 + plot_h - y / y_max * plot_h:.1f}" r="2.5" '
        f'fill="#219ebc"><title>{y:.0f} ms at {c} sessions</title></circle>'
        for x, y, c in heard
    )
    steps = sorted((x, c) for x, _, c in points)
    line = " ".join(f"{px(x):.1f},{10 + plot_h - c / c_max * plot_h:.1f}" for x, c in steps)
    return (
        f'<svg width="{width}" height="{height}" font-size="11">'
        f'<polyline points="{line}" fill="none" stroke="#fb8500" stroke-width="1.5"/>{dots}'
        f'<text x="0" y="14">{y_max:.0f} ms</text><text x="0" y="{height - 18}">0</text>'
        f'<text x="{width}" y="8" text-anchor="end" fill="#fb8500">{c_max} sessions</text>'
        f'<text x="40" y="{height - 2}">0 s</text>'
        f'<text x="{width - 80}" y="{height - 2}">{x_max:.0f} s</text></svg>'
    )


def _stages(result: BenchResult, *, width: int = 560) -> str:
    summary = result.summary()
    medians = [(name, (summary["server"].get(name) or {}).get("p50")) for name in STAGES]
    v2v = summary["voice_to_voice_ms"]["p50"]
    first_audio = (summary["server"].get("first_audio_ms") or {}).get("p50")
    if v2v is not None and first_audio is not None:
        medians.append(("network_and_playout_ms", max(0.0, v2v - first_audio)))
    known = [(n, v) for n, v in medians if v is not None]
    total = sum(v for _, v in known)
    if not total:
        return "<p>The transport carried no server timings.</p>"
    x, parts, legend = 0.0, [], []
    for (name, value), color in zip(known, COLORS, strict=False):
        w = max(0.0, value) / total * width
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="28" fill="{color}">'
            f"<title>{name}: {value:.0f} ms</title></rect>"
        )
        legend.append(
            f'<span style="border-left:12px solid {color};padding-left:4px;margin-right:12px;'
            f'white-space:nowrap;display:inline-block">'
            f"{html.escape(name)} {value:.0f} ms</span>"
        )
        x += w
    return f'<svg width="{width}" height="28">{"".join(parts)}</svg><p>{"".join(legend)}</p>'


def write_html(result: BenchResult, path: Path) -> None:
    summary = result.summary()
    v2v = summary["voice_to_voice_ms"]
    workload: dict[str, Any] = result.workload
    headline = (
        f"voice-to-voice p50 <b>{_ms(v2v['p50'])} ms</b>, p95 <b>{_ms(v2v['p95'])} ms</b> "
        f"over {v2v['count']} turns at up to {summary['peak_sessions']} concurrent sessions; "
        f"error rate {summary['error_rate']:.1%}"
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voice bench</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font:14px system-ui,sans-serif;max-width:640px;margin:24px auto;padding:0 12px;color:#023047}}
h1{{font-size:20px}} h2{{font-size:15px;margin-top:28px}} svg{{max-width:100%;height:auto}}
pre{{background:#f1f3f5;padding:10px;overflow-x:auto;font-size:12px}}
</style></head><body>
<h1>voice bench — {html.escape(result.url)}</h1>
<p>{headline}</p>
<h2>Voice-to-voice latency at the caller (distribution)</h2>{_histogram(result.voice_to_voice())}
<h2>Latency over the run (dots) and concurrent sessions (line)</h2>{_timeline(result)}
<h2>Where the median turn's time goes</h2>{_stages(result)}
<h2>Figures</h2><pre>{html.escape(table(result))}</pre>
<h2>Workload</h2><pre>{html.escape(json.dumps(workload, indent=2))}</pre>
</body></html>
"""
    path.write_text(page)
