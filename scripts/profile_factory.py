"""Where the sample factory's time goes, stage by stage, on any device (``--device cuda`` on a GPU).

For each group size it reports, per stage of :class:`~SSIMQualityLib.factory.SampleFactory`: wall time with the
device synchronised at the stage's edges (exclusive of nested stages), the number of aten operations (each one
a kernel launch or more on a GPU, where launches, not arithmetic, bound small images), and the copies between
host and device (each copy to the host waits for the device), the bytes its operations read and write a sample
(views excluded: a lower bound on memory traffic, which bounds elementwise kernels on a GPU, ~3 TB/s on an
H100); and the host's time a sample outside dispatched
tensor operations, in all and per stage (parameter draws, Python bookkeeping, index tables built in numpy, each
call's argument handling, and waits where a value is read back: on a GPU, where operations only launch, what
caps one process's rate; on a CPU it also holds the freeing of large tensors, so read it there only as a
comparison between versions).  That figure comes from a batch run with no sync at the stages' edges (until
2026-11-28 it had one at every edge, so on a GPU it also held the device's time: the fourth and fifth GPU
windows' "236" and "452 us a sample" are upper bounds, not the host's share).  Both include the operation
counter's own Python (``counter_overhead_us_per_op``, measured on small operations, times the operations).
Writes JSON with ``--out``.

``--gpu-path`` runs, on any device, the branches the factory takes on a GPU (DFT matrices instead of FFTs,
each group's crop-and-resize and thick slices as batched products, SSIM and CLAHE over the whole stack): with
no GPU at hand, its operation counts are what a GPU would launch.

Example::

    python3 scripts/profile_factory.py --device cpu --batch 64 --groups 16
    python3 scripts/profile_factory.py --device cpu --gpu-path --batch 512 --groups 64
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import SSIMQualityLib.factory as fm  # noqa: E402
from SSIMQualityLib.dft import HOST_READ_OPS  # noqa: E402

STAGES = ["mix_weights", "synthesize_mixed", "apply_contrast_batch", "normalize", "head_boxes", "apply_motion_draws",
          "nyquist_ghost", "head_mask_batch", "ssim", "fit_to_size", "resample", "crop"]
METHODS = ["_canvases", "_acquire", "_group"]


class _Counter(TorchDispatchMode):
    def __init__(self, current):
        super().__init__()
        self.current, self.ops, self.to_host, self.to_device = current, collections.Counter(), \
            collections.Counter(), collections.Counter()
        self.bytes = collections.Counter()  # tensor bytes each operation reads and writes (views: none)
        self.inside = 0.0  # seconds spent running (on a GPU: launching) the operations themselves
        self.inside_by_stage = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        stage = self.current[-1]
        self.ops[stage] += 1
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            dst = args[0].device if func is torch.ops.aten.copy_.default else (kwargs or {}).get("device", src.device)
            if isinstance(src, torch.Tensor) and dst is not None and torch.device(dst).type != src.device.type:
                (self.to_host if torch.device(dst).type == "cpu" else self.to_device)[stage] += 1
        if func in HOST_READ_OPS:
            self.to_host[stage] += 1  # a value read back, or an output sized by data: the host waits either way
        t = time.perf_counter()
        try:
            out = func(*args, **(kwargs or {}))
        finally:
            spent = time.perf_counter() - t
            self.inside += spent
            self.inside_by_stage[stage] += spent
        if not func.is_view:
            self.bytes[stage] += _tensor_bytes((args, kwargs)) + _tensor_bytes(out)
        return out


def _tensor_bytes(tree) -> int:
    """Bytes of the tensors in ``tree`` as the operation sees them (a view counts its own elements): a lower
    bound on the memory traffic an operation causes, which on a GPU bounds every elementwise kernel."""
    leaves, _ = pytree.tree_flatten(tree)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--groups", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--out", default="")
    p.add_argument("--gpu-path", action="store_true", help="the GPU's branches on this device (operation counts)")
    args = p.parse_args(argv)
    if args.gpu_path:
        _take_gpu_branches()
    dev = torch.device(args.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    current, wall = ["other"], collections.Counter()
    child = [0.0]
    edge_sync = [True]  # off for the counted run: a sync at a stage's edge would add the device's time to the host's

    def timed(label, fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            if edge_sync[0]:
                sync()
            current.append(label)
            outer_child, child[0] = child[0], 0.0
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if edge_sync[0]:
                    sync()
                spent = time.perf_counter() - t
                wall[label] += spent - child[0]  # exclusive of nested stages
                child[0] = outer_child + spent
                current.pop()
        return inner

    plain = {}
    for group in args.groups:  # before the stage timers are installed: they synchronise at every edge
        factory = fm.SampleFactory(seed=0, device=dev, group_size=group)
        factory.batch(0, args.batch)
        plain[group] = _plain_rate(factory, args.batch, sync)
    for name in STAGES:
        setattr(fm, name, timed(name, getattr(fm, name)))
    for name in METHODS:
        setattr(fm.SampleFactory, name, timed(name, getattr(fm.SampleFactory, name)))

    with _Counter(["other"]):  # its first use imports torch's compiler stack (seconds): not the factory's time
        torch.ones(2, device=dev).add(1).sum().item()
    overhead = _counter_overhead(dev)
    report = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "batch": args.batch,
              "gpu_path": args.gpu_path, "counter_overhead_us_per_op": 1e6 * overhead}
    for group in args.groups:
        factory = fm.SampleFactory(seed=0, device=dev, group_size=group)
        factory.batch(0, args.batch)  # sources loaded, kernels compiled
        wall.clear()
        sync()
        t = time.perf_counter()
        rounds = 2
        for i in range(rounds):
            factory.batch(1 + i, args.batch)
        sync()
        total = (time.perf_counter() - t) / rounds
        per_stage = {k: v / rounds for k, v in wall.items()}
        counter = _Counter(current)
        wall.clear()
        sync()
        edge_sync[0] = False
        t = time.perf_counter()
        with counter:
            factory.batch(9, args.batch)
        host = (time.perf_counter() - t - counter.inside) / args.batch  # before the last sync: the host's time
        sync()
        edge_sync[0] = True
        # A stage's time outside its own operations, no sync at its edges: the host's Python and numpy work
        # (index tables, draws, bookkeeping), which a GPU cannot take over, and its waits where it reads a value
        # back; on a CPU also the freeing of large tensors, which a GPU's caching allocator does not pay.
        # This includes the counter's own Python per operation (about counter_overhead_us_per_op times the
        # stage's operations): too variable from operation to operation to take off.
        outside = {k: max(0.0, wall[k] - counter.inside_by_stage[k]) for k in wall}
        rows = {}
        for k in sorted(set(per_stage) | set(counter.ops), key=lambda s: -per_stage.get(s, 0)):
            rows[k] = {"ms": round(1e3 * per_stage.get(k, 0.0), 2), "ops": counter.ops[k],
                       "to_host": counter.to_host[k], "to_device": counter.to_device[k],
                       "kb_per_sample": round(counter.bytes[k] / args.batch / 1024, 1),
                       "host_us_per_sample_outside_ops": round(1e6 * outside.get(k, 0.0) / args.batch, 1)}
        report[f"group{group}"] = {"samples_per_s_plain": plain[group], "samples_per_s_synced_stages": args.batch / total,
                                   "ms_per_batch_synced": 1e3 * total, "stages": rows,
                                   "host_us_per_sample_outside_ops": 1e6 * host,
                                   "mb_per_sample_moved": sum(counter.bytes.values()) / args.batch / 2 ** 20}
        print(f"group {group}: {plain[group]:.0f} samples/s ({args.batch / total:.0f} with a sync at every stage edge); "
              f"{1e6 * host:.0f} us a sample on the host outside dispatched tensor operations; "
              f"{sum(counter.bytes.values()) / args.batch / 2 ** 20:.1f} MB a sample read and written by operations")
        for k, r in rows.items():
            print(f"  {k:22s} {r['ms']:9.2f} ms  {r['ops']:7d} ops  {r['to_host']:5d} to host  {r['to_device']:5d} to device"
                  f"  {r['kb_per_sample']:8.1f} kB a sample  {r['host_us_per_sample_outside_ops']:7.1f} us a sample outside ops")
        sys.stdout.flush()
    report["fft_ms_new_shape"], report["fft_ms_cached_shape"] = _fft_plans(dev, sync)
    print(f"1-D FFT of a small batch: {report['fft_ms_new_shape']:.3f} ms at a new shape, "
          f"{report['fft_ms_cached_shape']:.3f} ms at a cached one (the factory's shapes vary by group)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


def _counter_overhead(dev, n: int = 2000) -> float:
    """Seconds the operation counter adds to each operation outside the operation itself (its Python)."""
    x = torch.ones(4, device=dev)

    def run(counter=None):
        t = time.perf_counter()
        with counter or contextlib.nullcontext():
            for _ in range(n):
                x.add(1)
        return time.perf_counter() - t

    run()
    plain = min(run() for _ in range(3))
    counted = min(run(_Counter(["other"])) for _ in range(3))
    return max(0.0, (counted - plain) / n)


def _fft_plans(dev, sync):
    """Mean time of a batched 1-D FFT at shapes never seen before against the same shape repeated: on a GPU a
    new shape builds a new plan."""
    def run(shapes):
        sync()
        t = time.perf_counter()
        for n, r, length in shapes:
            torch.fft.fft(torch.ones(n, r, length, device=dev), dim=-1)
        sync()
        return 1e3 * (time.perf_counter() - t) / len(shapes)

    new = [(32, 128, 150 + k) for k in range(40)]  # lengths 150 - 189
    return run(new), run([(32, 128, 170)] * 40)


def _take_gpu_branches() -> None:
    """Make every device take the factory's GPU branches (the device-type switches in dft, ssim and clahe)."""
    import SSIMQualityLib.clahe as clahe
    import SSIMQualityLib.dft as dft
    import SSIMQualityLib.ssim as ssim_module

    dft.MATMUL_DEVICES = {"cpu", "cuda", "mps", "xpu"}  # read by every matrix-product branch (dft.on_matmul_device)
    ssim_module._CHUNK = 1 << 30
    clahe._whole_stack = lambda device: True


def _plain_rate(factory, batch, sync) -> float:
    sync()
    t = time.perf_counter()
    factory.batch(20, batch)
    factory.batch(21, batch)
    sync()
    return 2 * batch / (time.perf_counter() - t)


if __name__ == "__main__":
    sys.exit(main())
