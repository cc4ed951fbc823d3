"""What the benchmark prints (one table per workload or family) and the environment it records in the JSON."""

from __future__ import annotations

from typing import Any

from .settings import FREQ, OURS


def print_family(workload: str, name: str, res: dict[str, Any]) -> None:
    load = res["loadavg_1_5_15min"]
    print(
        f"\n{workload} / {name} ({res['note']}); load average (1 min) before/after timing: "
        f"{load['before_timing'][0]:.2f} / {load['after_timing'][0]:.2f}"
    )
    extra = " refreshes |" if res["refreshing"] else ""
    print(
        f"| {'optimizer':<33} | {'mean ms':>8} | {'median ms':>9} | {'×ours':>6} | {'×AdamW':>7} | state MiB "
        f"| {'state ×ours':>11} | steps |{extra}"
    )
    widths = (9, 10, 7, 8, 10, 12, 6) + ((10,) if res["refreshing"] else ())
    print("|" + "-" * 35 + "|" + "|".join("-" * w + ":" for w in widths) + "|")
    for label, row in res["optimizers"].items():
        refreshes = f" {row['refreshes_timed']:9d} |" if res["refreshing"] else ""
        print(
            f"| {label:<33} | {row['mean_ms']:8.2f} | {row['median_ms']:9.2f} | {row['x_ours']:6.2f} | "
            f"{row['x_adamw']:7.2f} | {row['state_mib']:9.2f} | {row['state_x_ours']:11.2f} | "
            f"{row['timed_steps']:5d} |{refreshes}"
        )
    print(
        f"  ×ours: mean step time / {res['ours']}'s; state ×ours: state memory / {res['ours']}'s; "
        f"{res['wall_s']:.0f} s for this family, warm-up included"
    )


def print_workload(workload: str, res: dict[str, Any]) -> None:
    floor = res["floor"]
    print(
        f"\n{workload}: {len(res['matrices'])} matrices; floor {floor['mean_ms']:.2f} ms/step "
        f"(per-step matmuls {floor['per_step_median_ms']:.2f} ms + refresh "
        f"{floor['refresh_extra_median_ms']:.2f} ms / {FREQ})"
    )
    load = res["loadavg_1_5_15min"]
    print(f"  load average (1 min) before/after timing: {load['before_timing'][0]:.2f} / {load['after_timing'][0]:.2f}")
    width = max(24, *(len(label) for label in res["optimizers"]))
    print(
        f"| {'optimizer':<{width}} | {'mean ms':>8} | {'p50 ms':>8} | {'p99 ms':>8} | {'×AdamW':>7} | {'×floor':>7} "
        f"| state MiB | state/param B | {'plain ms':>8} | {'refresh ms':>10} | refreshes |"
    )
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * w + ":" for w in (9, 9, 9, 8, 8, 10, 14, 9, 11, 10)) + "|")
    for label, row in res["optimizers"].items():
        per_byte = row.get("state_per_param_byte")
        per_byte_text = f"{per_byte:13.2f}" if per_byte is not None else f"{'-':>13}"
        print(
            f"| {label:<{width}} | {row['mean_ms']:8.2f} | {row['p50_ms']:8.2f} | {row['p99_ms']:8.2f} | "
            f"{row['x_adamw']:7.2f} | {row['x_floor']:7.2f} | {row['state_mib']:9.2f} | {per_byte_text} | "
            f"{row['plain_median_ms']:8.2f} | {row['slowest_tenth_median_ms']:10.2f} | {row['refreshes_timed']:9d} |"
        )
    print("  state/param B: optimizer-state bytes per parameter byte (peak, every tensor reachable from opt.state)")
    for label, ratio in res.get("options_vs_default", {}).items():
        print(
            f"  {label} / {OURS}: {ratio['mean']:.2f}× mean, {ratio['p50']:.2f}× p50, {ratio['p99']:.2f}× p99 step time"
        )
    print(
        f"  plain ms: median of all but the slowest 1/{FREQ} of the steps; refresh ms: median of that slowest "
        f"1/{FREQ} (the steps that refresh the eigenbases); refreshes: basis refreshes in the timed steps"
    )
    for label, ratio in res["ours_vs_peers"].items():
        print(f"  {OURS} / {label}: {ratio['mean']:.2f}× mean, {ratio['median']:.2f}× median step time")
    if "targets" in res:
        t = res["targets"]
        ok_floor = "met" if t["ours_x_floor"] <= t["ours_x_floor_target"] else "MISSED"
        ok_peer = "met" if t["ours_x_fastest_peer"] <= t["ours_x_fastest_peer_target"] else "MISSED"
        print(
            f"  targets: ours/floor {t['ours_x_floor']:.2f} (≤ {t['ours_x_floor_target']}: {ok_floor}); ours/fastest "
            f"peer ({t['fastest_peer']}) {t['ours_x_fastest_peer']:.2f} (≤ {t['ours_x_fastest_peer_target']}: "
            f"{ok_peer}); "
            f"ours/floor with direct transport {t['ours_x_floor_direct_transport']:.2f}"
        )
    if "profile_ours" in res:
        print("\n" + res["profile_ours"])
