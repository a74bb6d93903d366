"""Cost benchmark: AdapMTL's training overhead, and the latency, memory and size of the sparse exports.

Run it with `python -m benchmarks.cost [--quick]` (cli.py). Modules:

- `machine`: the machine record, clocks, sample statistics, element-wise op costs of the CPU;
- `training`: the dense / adapmtl / naive Trainers (`_assemble` is the one place a Trainer is built) and the
  interleaved step timing, read through `Trainer.phase_hook`;
- `components`: standalone timings of AdapMTL's parts, the profiler attribution, the component estimate;
- `training_section`: the `demo` and `paper` configurations and what the training section records;
- `exports`, `sizes`, `runtime`, `inference`: the exported variants, their sizes, latency and memory;
- `int8`: dense fp32 / pruned fp32 / pruned int8 ONNX Runtime latency and size (`deploy.latency_table`);
- `report`: results.md.
"""
