"""Running a model for real, beside its analysis.

- `clock`: the one timing harness (warm-up, timed passes, per-layer hooks), used by
  `archprof profile` and `archprof compare --profile`;
- `device`: which device, its name, the real model and random inputs;
- `ceilings`: the device's peak FLOP/s and bandwidth, measured once and cached;
- `crosscheck`: shapes, FLOPs and peak memory of the real run against the analysis;
- `profile`: the profile itself, joined to the Report's rows;
- `peak_memory`: the peak memory of an inference forward and a training step, measured on
  CUDA (the allocator's counter) or the CPU (the allocator's events, through torch.profiler).
"""

# Passes of `archprof profile`: untimed first, then timed (the median is reported). Here,
# not in `clock`, so that the CLI can show them without importing torch.
DEFAULT_WARMUP = 5
DEFAULT_REPEAT = 20
MAX_PASSES = 1_000_000  # of either: more is a typo, and would run for days
