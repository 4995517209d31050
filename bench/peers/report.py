"""Tables, headline and plots from bench.run_peers results (JSON-ready dicts, one per engine:
name, sweep rows with recall/p50/p99/batch QPS, memory, disk, build and insert figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench import peers
from bench.datasets import Dataset

__all__ = ["best_at", "headline", "plot", "plot_memory", "report"]

TARGETS = (0.9, 0.95)


def _fmt_setting(s: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.items())


def _mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:,.1f}"


def _memory(res: dict[str, Any]) -> int:
    """The memory an engine holds while serving: max of after-build and after-queries."""
    return max(res["rss_build"], res["rss_serve"])


def best_at(res: dict[str, Any], target: float) -> dict[str, Any] | None:
    """The lowest-p50 setting whose recall reaches target. Recall is a mean of fractions summed
    in floating point: 950 hits of 1,000 can come out as 0.94999..., so allow 1e-9."""
    ok = [r for r in res.get("sweep", []) if r["recall"] >= target - 1e-9]
    return min(ok, key=lambda r: r["p50_us"]) if ok else None


def headline(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Per target recall: Curator's best p50 and memory vs the best peer that reaches it."""
    ok = [r for r in results if r.get("status") == "ok"]
    cur = next((r for r in ok if r["engine"] == "curator"), None)
    real = [r for r in ok if r["engine"] in peers.PEERS]
    rows: list[tuple[str, ...]] = []
    if cur is None:
        return rows
    for target in TARGETS:
        c = best_at(cur, target)
        reached = [(r, best_at(r, target)) for r in real]
        reached = [(r, b) for r, b in reached if b]
        if not c:
            rows.append((f"{target}", "Curator does not reach it", "-", "-", "-"))
            continue
        if not reached:
            rows.append((f"{target}", f"{c['p50_us']:.0f} us", "no peer reaches it", "-", "-"))
            continue
        best_r, best = min(reached, key=lambda rb: rb[1]["p50_us"])
        lat = c["p50_us"] / best["p50_us"]
        least = min(reached, key=lambda rb: _memory(rb[0]))[0]
        mem = _memory(cur) / max(_memory(least), 1)
        met = lat <= 1.0 and all(_memory(cur) < _memory(r) for r, _ in reached)
        rows.append(
            (
                f"{target}",
                f"{c['p50_us']:.0f} us ({_fmt_setting(c['setting'])})",
                f"{best_r['engine']} {best['p50_us']:.0f} us ({_fmt_setting(best['setting'])})",
                f"{lat:.2f}x",
                f"{mem:.2f}x of {least['engine']} ({_mib(_memory(cur))} vs "
                f"{_mib(_memory(least))} MiB)",
                "met" if met else "not met",
            )
        )
    return rows


def report(ds: Dataset, results: list[dict[str, Any]], scale: str) -> str:
    lines = [
        f"### {ds.name} ({scale}): {len(ds.base):,} x {ds.base.shape[1]}, {ds.n_tenants:,} "
        f"tenants, {ds.grants:,} (vector, tenant) grants, metric {ds.metric}",
        "",
        "| engine | setting | queries | recall@10 | p50 us | p99 us | batch QPS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res in results:
        for r in res.get("sweep", []):
            lines.append(
                f"| {res['engine']} | {_fmt_setting(r['setting'])} | {res['queries']} | "
                f"{r['recall']:.3f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | "
                f"{r['batch_qps']:,.0f} |"
            )
    for res in results:
        for r in res.get("sweep", []):
            if r["unreadable"]:
                lines.append(
                    f"\n**ISOLATION: {res['engine']} {r['setting']} returned {r['unreadable']} "
                    "ids that the query's tenant may not read.**"
                )
    lines += [
        "",
        "| engine | version | build/ingest s | memory after build MiB | memory after queries "
        "MiB | on disk MiB | insert us one at a time | insert us/vector, batch of 2,000 | "
        "load avg before/after | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res in results:
        if res.get("status") != "ok":
            lines.append(f"| {res['engine']} | | | | | | | | | {res['status']} |")
            continue
        status = "ok"
        if res["skipped_settings"]:
            status = "sweep cut short by the time budget: skipped " + "; ".join(
                _fmt_setting(s) for s in res["skipped_settings"]
            )
        load = "/".join(f"{x:.1f}" for x in res.get("loadavg", [])) or "-"
        lines.append(
            f"| {res['engine']} | {res['version']} | {res['build_s']:.1f} | "
            f"{_mib(res['rss_build'])} | {_mib(res['rss_serve'])} | {_mib(res['disk_bytes'])} | "
            f"{res['insert_us']:,.0f} | {res['insert_batch_us']:,.1f} | {load} | {status} |"
        )
    lines += [
        "",
        f"Raw vectors {_mib(ds.base.nbytes)} MiB.",
        "",
        "| recall@10 >= | Curator p50 | best peer p50 | latency ratio | memory ratio (Curator / "
        "least-memory peer reaching it) | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in headline(results)]
    return "\n".join(lines) + "\n"


def plot(ds_name: str, results: list[dict[str, Any]], path: Path) -> None:
    """Recall@10 vs QPS (single-query 1/p50 and batch), one line per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for res in results:
        sweep = res.get("sweep", [])
        if not sweep:
            continue
        rec = [r["recall"] for r in sweep]
        style = "-o" if res["engine"] == "curator" else "--."
        axes[0].plot([1e6 / r["p50_us"] for r in sweep], rec, style, label=res["engine"])
        axes[1].plot([r["batch_qps"] for r in sweep], rec, style, label=res["engine"])
    for ax, title in zip(
        axes, ("single query (1 / p50 latency)", "batch QPS (one call per tenant)"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_xlabel("queries per second")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("recall@10")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(ds_name)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_memory(all_results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Memory while serving and bytes on disk, per engine, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(all_results)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ok = [r for r in all_results[name] if r.get("status") == "ok"]
        x = np.arange(len(ok))
        ax.bar(x - 0.2, [_memory(r) / 2**20 for r in ok], 0.4, label="memory (RSS/PSS delta)")
        ax.bar(x + 0.2, [(r["disk_bytes"] or 0) / 2**20 for r in ok], 0.4, label="on disk")
        ax.set_xticks(x, [r["engine"] for r in ok], rotation=35, ha="right", fontsize=8)
        ax.set_yscale("log")  # per-tenant hnswlib is 10-50x the others
        ax.set_ylabel("MiB (log scale)")
        ax.set_title(name, fontsize=10)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
