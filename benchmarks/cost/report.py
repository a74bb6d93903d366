"""results.md of the cost benchmark, rendered from results.json's content."""

from __future__ import annotations

from typing import Any

from benchmarks.cost.components import PROFILE_KEYS
from benchmarks.cost.int8 import render_int8


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        "# Cost benchmark results",
        "",
        f"Produced by `{results['command']}` on commit `{m.get('git_commit')}`"
        + (f" (uncommitted changes in {', '.join(m['git_dirty_files'])})" if m.get("git_dirty_files") else "")
        + f", {results['finished']}.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), shared with other "
        f"jobs (load average {', '.join(f'{x:.1f}' for x in m['loadavg_start'])} at the start, "
        f"{', '.join(f'{x:.1f}' for x in m.get('loadavg_end', []))} at the end); torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}, onnx {m['onnx']}; {m['threads']} thread(s) for torch and ORT.",
        "",
        "Times are CPU time of the process (`time.process_time`, one compute thread), which a busy shared machine "
        "disturbs far less than wall time; wall times are in results.json. Ratios compare variants measured "
        "interleaved in the same process.",
        "",
    ] + [
        f"Later: sections {', '.join(u['sections'])} by `{u['command']}` on commit `{str(u.get('git_commit'))[:12]}`, "
        f"{u.get('finished', u['date'])}"
        + (f" (load average at the end {', '.join(f'{x:.1f}' for x in u['loadavg_end'])})" if u.get("loadavg_end") else "")
        + ".\n"
        for u in results.get("updates", [])
    ]


def _step_table(tr: dict[str, Any], title: str) -> list[str]:
    s = tr["setup"]
    lines = [
        f"## Training step: {title}",
        "",
        f"`{s['model']}` ({s['params'] / 1e6:.2f} M parameters, {s['prunable_weights'] / 1e6:.2f} M prunable), "
        f"batch {s['batch']}, {s['height']}x{s['width']}, {s['data']}; steps {s['steps'][0]}, "
        f"{s['steps'][1]}..{s['steps'][-1]} ({s['warmup_steps']} warm-up, {s['timed_steps']} timed per variant; "
        f"target sparsity {s['target_at_timed_steps']:.2f} there). The offset solve runs every "
        f"`sparsity.update_every` = {s['update_every']} steps, the snapshot every `train.log_every` = "
        f"{s['log_every']} steps.",
        "",
        "| variant | median step (CPU ms) | p25-p75 | min-max | solve extra (ms, every "
        f"{s['update_every']}) | snapshot (ms, every {s['log_every']}) | amortised step (ms) | "
        "ratio to dense: median | pairwise median [min, max] | amortised |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, r in tr["variants"].items():
        t = r["timed_cpu_ms"]
        vs = r.get("vs_dense")
        pr = vs["pairwise_cpu_ratio"] if vs else None
        lines.append(
            f"| {v} | {t['median']:.1f} | {t['p25']:.1f}-{t['p75']:.1f} | {t['min']:.1f}-{t['max']:.1f} | "
            f"{abs(r['solve_extra_cpu_ms']) if abs(r['solve_extra_cpu_ms']) < 0.05 else r['solve_extra_cpu_ms']:.1f} | "
            f"{r['log_cpu_ms']:.1f} | {r['amortized_cpu_ms']:.1f} | "
            + (f"{vs['median_cpu_ratio']:.3f} | {pr['median']:.3f} [{pr['min']:.3f}, {pr['max']:.3f}] | "
               f"**{vs['amortized_cpu_ratio']:.3f}** |" if vs else "1 | 1 | 1 |")
        )
    return lines


def _phase_table(tr: dict[str, Any]) -> list[str]:
    ad = tr["variants"].get("adapmtl", {}).get("vs_dense")
    if not ad:
        return []
    lines = [
        "",
        f"Wall-time median ratio adapmtl/dense: {ad['median_wall_ratio']:.3f} (pairwise median "
        f"{ad['pairwise_wall_ratio']['median']:.3f}).",
        "",
        "Where the difference goes (median CPU ms per plain step, adapmtl - dense, from phase timers in the timed "
        "steps):",
        "",
        "| phase | dense | adapmtl | naive | adapmtl - dense |",
        "|---|---|---|---|---|",
    ]
    for p, d in ad["phase_diff_cpu_ms"].items():
        vals = [tr["variants"][v]["phases_cpu_ms"].get(p, 0.0) for v in ("dense", "adapmtl", "naive")
                if v in tr["variants"]]
        lines.append(f"| {p} | " + " | ".join(f"{x:.1f}" for x in vals) + f" | {d:+.1f} |")
    return lines


def _estimate_and_profile(tr: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    est = tr.get("component_estimate")
    if est:
        lines += ["", "Component estimate of AdapMTL's added CPU ms per step: " + ", ".join(
            f"{k} {x:.1f}" for k, x in est["parts_ms"].items()) + f"; total {est['total_ms']:.1f} ms, "
            f"ratio **{est['ratio']:.3f}** (against the amortised dense step)."]
    prof = tr.get("profile")
    if prof:
        vs = [v for v in ("dense", "adapmtl") if v in prof]
        lines += ["", f"torch.profiler, one extra step (step {prof['step']}) per variant, inclusive CPU ms "
                  "(the profiler's per-op cost inflates many small ops):", "",
                  "| | " + " | ".join(vs) + " |", "|---|" + "---|" * len(vs)]
        for label in ["profiled_step_cpu_ms", *PROFILE_KEYS]:
            lines.append(f"| {label} | " + " | ".join(f"{prof[v].get(label, 0.0):.1f}" for v in vs) + " |")
    return lines


def _components(c: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Components at this model's size ({c['layers']} prunable convs, {c['prunable_weights'] / 1e6:.2f} M "
        "weights; standalone, median CPU ms):",
        "",
        "| W_eff implementation | forward (incl. tau graph) | backward | extra saved for backward |",
        "|---|---|---|---|",
    ]
    for impl, r in c["w_eff"].items():
        lines.append(f"| {impl} | {r['forward_ms']['median']:.2f} | {r['backward_ms']['median']:.2f} | "
                     f"{r['saved_extra_bytes'] / 2**20:.1f} MiB |")
    sp = c["solve_parts_ms"]
    kth = c["kth_value_ms"]
    return lines + [
        "",
        f"- tau graph alone (`_set_taus`): {c['set_taus_ms']['median']:.2f} ms per step;",
        f"- a solve step's `before_forward`: {c['before_forward_solve_ms']['median']:.1f} ms (plain step: "
        f"{c['before_forward_plain_ms']['median']:.2f} ms), of which "
        + ", ".join(f"{k} {v['median']:.1f}" for k, v in sp.items())
        + f"; k-th value: torch.kthvalue {kth['torch.kthvalue']['median']:.1f} ms vs numpy "
        f"{kth['_kth_smallest (numpy introselect on CPU)']['median']:.1f} ms (same value: "
        f"{kth['same_value']});",
        f"- snapshot (`measure`, at log steps): adapmtl {c['snapshot_ms']['adapmtl']['median']:.1f} ms, dense "
        f"{c['snapshot_ms']['dense']['median']:.1f} ms.",
        "",
    ]


def _training(tr: dict[str, Any], title: str) -> list[str]:
    return _step_table(tr, title) + _phase_table(tr) + _estimate_and_profile(tr) + _components(tr["components"])


def _cpu_effects(eff: dict[str, Any]) -> list[str]:
    lines = ["## Element-wise ops on subnormal and zero values (this CPU)", "",
             f"Median CPU ms per {eff['n']:,} float32 values:", "",
             "| values | sqrt | lerp_ | mul_ | addcdiv_ |", "|---|---|---|---|---|"]
    for name, r in eff.items():
        if isinstance(r, dict):
            lines.append(f"| {name} | {r['sqrt']:.2f} | {r['lerp_']:.2f} | {r['mul_']:.2f} | {r['addcdiv_']:.2f} |")
    return lines + [""]


def _latency_and_memory(inf: dict[str, Any]) -> list[str]:
    lines = [
        f"## Inference: `{inf['model']}` {inf['input'][0]}x{inf['input'][1]}",
        "",
        f"Weights: the demo preset trained {inf['train_steps_for_weights']} steps with `train_run` (dense), then "
        "pruned; BN folded; dynamo export + onnxsim.",
        "",
        "| runtime | variant | batch | p50 ms | p90 ms | p50 / dense |",
        "|---|---|---|---|---|---|",
    ]
    for rt, by in inf["latency"].items():
        for name, bb in by.items():
            for b, s in bb.items():
                lines.append(f"| {rt} | {name} | {b} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
                             f"{s.get('p50_vs_dense', 1):.3f} |")
    lines += ["", f"Peak memory: {inf['memory_method']}.", "",
              "| runtime | variant | batch | peak RSS MiB | increase over baseline MiB |", "|---|---|---|---|---|"]
    for rt, by in inf["memory"].items():
        for name, bb in by.items():
            for b, s in bb.items():
                lines.append(f"| {rt} | {name} | {b} | {_f(s.get('peak_mib'), '.1f')} | "
                             f"{_f(s.get('increase_mib'), '.1f')} |")
    return lines


def _sizes(inf: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Artifact size",
        "",
        "gzip9 = `compress_artifact` (what the export stage ships). limit = survivors at 32 bits + the zero mask "
        "at its entropy + everything else stored raw. Ratios are to the dense ONNX of the same weights.",
        "",
        "| weights / pattern | sparsity (prunable) | zeros stored as -0.0 | ONNX bytes | gzip9 bytes | "
        "gzip9 / dense ONNX | xz9 / dense | limit / dense | survivor bits (byte entropy) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in inf["sizes"].items():
        lines.append(
            f"| {key} | {s['prunable_sparsity']:.3f} | {s['float_negative_zeros']:,} | {s['onnx_bytes']:,} | "
            f"{s['gzip9_bytes']:,} | "
            f"**{s['gzip9_vs_dense_onnx']:.3f}** | {_f(s.get('xz9_vs_dense_onnx'), '.3f')} | "
            f"{s['limit_vs_dense_onnx']:.3f} | {_f(s.get('survivor_bits_per_value_byte_entropy'), '.1f')} |"
        )
    zst = [s.get("zstd19_bytes") for s in inf["sizes"].values()]
    return lines + ["", "zstd: " + ("not installed (the optional `zstandard` package); not added." if not any(zst)
                                    else "see results.json.")]


def render_markdown(results: dict[str, Any]) -> str:
    lines = _header(results)
    for name, title in (("demo", "demo preset"), ("paper", "paper configuration")):
        tr = results.get("training", {}).get(name)
        if tr:
            lines += _training(tr, title)
    eff = results.get("cpu_effects")
    if eff:
        lines += _cpu_effects(eff)
    inf = results.get("inference")
    if inf:
        lines += _latency_and_memory(inf) + _sizes(inf)
    if results.get("int8"):
        lines += render_int8(results["int8"])
    return "\n".join(lines) + "\n"
