"""Machine state per cell, sampled on the host (never in the container) while the cell runs.

sampler.py   one thread per running cell: reads its sources every PERIOD_S and keeps the raw samples
cpu.py       host load from /proc/stat, the cell's CPU time and memory from its cgroup (docker) or /proc (local)
gpu.py       NVML reads (nvidia-ml-py): clocks, power, energy, throttle reasons; manifest facts; --gpu-settle
summary.py   raw samples + the harness's timed window -> the record's compact `machine` summary
cell.py      the glue the pipeline calls: start sampling a cell, stop, write raw samples, summarise

The GPU and CPU paths share everything but the reads: a source is an object with `read() -> dict`, and the
summary treats every numeric field as either a gauge (min/median/max) or a counter (difference over the window).
"""
