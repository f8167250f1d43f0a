"""Profile a model for real and read the measurements with pandas.

    python examples/profile_model.py                   # resnet18 at 3x64x64, on CUDA if there is a GPU
    python examples/profile_model.py mobilenet_v2 3x224x224

Prints the whole-model figures, the layers that take the most time beside the time the
roofline allows them, the cross-check, and writes `<model>_profile.csv` (every analytic
column plus the measured ones) and, with matplotlib installed, `<model>_roofline.png`.
"""

import sys
from pathlib import Path

import archprof


def main(name: str = "resnet18", size: str = "3x64x64") -> None:
    input_size = tuple(int(part) for part in size.split("x"))
    report = archprof.profile(name, input_size=input_size, warmup=3, repeat=10)
    measured = report.measured

    print(f"{name} on {measured.device} ({measured.device_name}), input {report.input_shapes[0]}")
    print(f"  latency: median {measured.median_ms:.2f} ms, p90 {measured.p90_ms:.2f} ms")
    print(f"  throughput: {measured.throughput_per_s:.1f} samples/s")
    print(f"  achieved: {measured.achieved_flops_per_s / 1e9:.1f} GFLOP/s (flops + elementwise_flops)")
    ceilings = measured.ceilings
    print(
        f"  ceilings: {ceilings.peak_flops_per_s / 1e9:.0f} GFLOP/s ({ceilings.origin('peak_flops')}), "
        f"{ceilings.bandwidth_bytes_per_s / 1e9:.0f} GB/s ({ceilings.origin('bandwidth')})"
    )
    print(
        f"  with per-layer hooks: {measured.hooked_median_ms:.2f} ms, of which between hooks "
        f"{measured.unattributed_ms:.2f} ms"
    )

    layers = report.layers.dropna(subset=["time_ms"])
    slowest = layers.nlargest(8, "time_ms").assign(gap=lambda d: d["time_ms"] / d["roofline_time_ms"])
    columns = ["layer", "module_type", "time_ms", "time_share", "roofline_time_ms", "gap", "bound"]
    print("\nSlowest layers (gap = measured / roofline time):")
    print(slowest[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nTime by bound:")
    print(layers.groupby("bound")["time_ms"].sum().to_string(float_format=lambda v: f"{v:.2f} ms"))

    for note in measured.notes:  # a busy machine, ceilings measured again or still beaten, cache effects
        print(f"  note: {note}")
    print("\nCross-check:")
    for check in measured.checks:
        print(f"  {check.status:8} {check.name}: {check.summary}")
    for line in measured.mismatches:
        print(f"  MISMATCH {line}")

    report.to_csv(f"{name}_profile.csv")
    print(f"\nwrote {name}_profile.csv")
    chart = Path(f"{name}_roofline.png")
    try:
        from archprof.render.roofline import roofline_image

        chart.write_bytes(roofline_image(report, chart))  # the image's bytes, in the suffix's format
        print(f"wrote {chart}")
    except archprof.ArchprofError as error:  # matplotlib not installed
        print(f"no roofline plot: {error}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
