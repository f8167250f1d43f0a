"""Compare CNN architectures with pandas, and chart parameters against MACs.

    python examples/compare_architectures.py [CHART.png]

archprof.compare() analyses each model on PyTorch's meta device (no weights are
allocated) and returns one DataFrame row per model: exact int64 counts and bytes, and
ratios against the first model. The chart needs matplotlib (`pip install matplotlib`);
without it the script says so and skips it."""

import sys

import archprof

MODELS = ["vgg16", "resnet50", "mobilenet_v2", "densenet121", "googlenet", "alexnet"]


def main(chart_path: str = "params_vs_macs.png") -> None:
    frame = archprof.compare(MODELS, input_size=(3, 224, 224)).set_index("model")

    # Derived columns are plain pandas: MACs per parameter (how much each weight is reused),
    # and parameters and activations in millions / megabytes for reading.
    frame["macs_per_param"] = frame["macs"] / frame["param_count"]
    shown = frame[["param_count", "macs", "activation_bytes", "param_ratio", "macs_ratio", "macs_per_param"]]
    shown = shown.assign(
        param_count=shown["param_count"] / 1e6,
        macs=shown["macs"] / 1e9,
        activation_bytes=shown["activation_bytes"] / 1e6,
    ).rename(columns={"param_count": "params (M)", "macs": "MACs (G)", "activation_bytes": "activations (MB)"})
    print(f"Architectures at 1x3x224x224 (ratios against {MODELS[0]}):\n")
    print(shown.sort_values("MACs (G)").round(2).to_string())

    cheapest = frame["macs"].idxmin()
    smallest = frame["param_count"].idxmin()
    print(f"\nFewest MACs: {cheapest} ({frame.loc[cheapest, 'macs']:,}); fewest parameters: {smallest}")
    print(f"Most MACs per parameter: {frame['macs_per_param'].idxmax()} ({frame['macs_per_param'].max():.0f})")

    try:
        import matplotlib
    except ImportError:
        print("\nmatplotlib is not installed: chart skipped (pip install matplotlib to draw it)")
        return
    matplotlib.use("Agg")  # draw to a file, no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    axes.scatter(frame["param_count"] / 1e6, frame["macs"] / 1e9)
    for model, row in frame.iterrows():
        axes.annotate(model, (row["param_count"] / 1e6, row["macs"] / 1e9), textcoords="offset points", xytext=(5, 5))
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    axes.set_xlabel("parameters (millions)")
    axes.set_ylabel("MACs (billions) at 224x224")
    axes.set_title("Parameters vs. compute")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(chart_path, dpi=120)
    print(f"\nwrote {chart_path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
