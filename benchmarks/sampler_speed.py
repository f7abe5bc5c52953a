"""Episode-sampler throughput against learn2learn's TaskDataset, and against a MAML iteration.

For each episode shape, both samplers draw meta-batches of episodes from the same pool (the
MAML-split Omniglot training characters with their rotations): metalearn's EpisodeSampler,
and learn2learn's TaskDataset with NWays, KShots, LoadData and RemapLabels over a
TensorDataset holding the same images, each episode split into support and query tensors and
the meta-batch stacked. The ratio of episodes per second is the figure of merit (goal: >= 10).
A second-order MAML meta-iteration (Conv4, meta-batch 32, one inner step) is timed as well, to
report sampling as a share of a meta-iteration (goal: < 2%).

    python benchmarks/sampler_speed.py [--data-root DIR] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from metalearn.models import Conv4
from metalearn.tasks import ClassPool, EpisodeBatch, EpisodeSampler, omniglot_few_shot

SHAPES = [(5, 1, 15), (20, 5, 15)]  # (N ways, K shots, Q queries per class)
RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(step: Callable[[], object], repeats: int, calls: int) -> float:
    """Median over ``repeats`` of the mean time of ``calls`` consecutive calls, after a warm-up."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            step()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def learn2learn_meta_batch(pool: ClassPool, n_way: int, k_shot: int, q_query: int, batch_size: int):
    """A callable drawing one meta-batch with learn2learn, or None when it is not installed."""
    try:
        import learn2learn as l2l
        from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels
    except ImportError:
        return None
    images = pool.images.float().div(255).unsqueeze(1)
    labels = torch.repeat_interleave(torch.arange(len(pool)), pool.sizes)
    dataset = l2l.data.MetaDataset(torch.utils.data.TensorDataset(images, labels))
    tasks = l2l.data.TaskDataset(
        dataset,
        task_transforms=[NWays(dataset, n_way), KShots(dataset, k_shot + q_query),
                         LoadData(dataset), RemapLabels(dataset)],
        num_tasks=-1,
    )

    def episode() -> tuple[torch.Tensor, ...]:
        x, y = tasks.sample()
        order = torch.as_tensor(y).argsort(stable=True)  # group by class, then split K | Q
        x = x[order].view(n_way, k_shot + q_query, *x.shape[1:])
        y = torch.as_tensor(y)[order].view(n_way, k_shot + q_query)
        return (x[:, :k_shot].flatten(0, 1), y[:, :k_shot].flatten(),
                x[:, k_shot:].flatten(0, 1), y[:, k_shot:].flatten())

    def meta_batch() -> EpisodeBatch:
        parts = zip(*(episode() for _ in range(batch_size)))
        return EpisodeBatch(*(torch.stack(p) for p in parts))

    return meta_batch


def maml_iteration(batch: EpisodeBatch, device: torch.device, inner_lr: float = 0.4):
    """One second-order MAML meta-iteration over ``batch`` (a reference cost, not the learner)."""
    model = Conv4(n_outputs=batch.support_y.max().item() + 1).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    names = [n for n, _ in model.named_parameters()]

    def step() -> None:
        optimizer.zero_grad()
        params = dict(model.named_parameters())
        for i in range(len(batch)):
            logits = torch.func.functional_call(model, params, (batch.support_x[i],))
            grads = torch.autograd.grad(F.cross_entropy(logits, batch.support_y[i]),
                                        list(params.values()), create_graph=True)
            adapted = {n: params[n] - inner_lr * g for n, g in zip(names, grads)}
            query = torch.func.functional_call(model, adapted, (batch.query_x[i],))
            (F.cross_entropy(query, batch.query_y[i]) / len(batch)).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="folder with omniglot-py/ (else $METALEARN_DATA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="result file (default: results/)")
    args = parser.parse_args()
    device = torch.device(args.device)

    pool = omniglot_few_shot("maml", data_root=args.data_root, device=device)[0].train
    cpu_pool = pool.to("cpu")
    rows = []
    for n_way, k_shot, q_query in SHAPES:
        sampler = EpisodeSampler(pool, n_way, k_shot, q_query, seed=0)
        ours = args.batch_size / median_seconds(lambda: sampler.sample(args.batch_size),
                                                args.repeats, calls=20)
        theirs_step = learn2learn_meta_batch(cpu_pool, n_way, k_shot, q_query, args.batch_size)
        theirs = (args.batch_size / median_seconds(theirs_step, args.repeats, calls=2)
                  if theirs_step else None)
        rows.append({"n_way": n_way, "k_shot": k_shot, "q_query": q_query,
                     "metalearn_episodes_per_s": round(ours, 1),
                     "learn2learn_episodes_per_s": round(theirs, 1) if theirs else None,
                     "ratio": round(ours / theirs, 2) if theirs else None})

    sampler = EpisodeSampler(pool, 5, 1, 15, seed=0)
    maml_seconds = median_seconds(maml_iteration(sampler.sample(args.batch_size), device),
                                  max(2, args.repeats // 2), calls=1)
    sample_seconds = median_seconds(lambda: sampler.sample(args.batch_size), args.repeats, calls=20)

    try:
        import learn2learn
        l2l_version = learn2learn.__version__
    except ImportError:
        l2l_version = None
    result = {
        "benchmark": "sampler_speed",
        "command": "python " + " ".join(["benchmarks/sampler_speed.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "learn2learn": l2l_version,
                     "python": platform.python_version()},
        "meta_batch": args.batch_size,
        "pool": "Omniglot MAML split, training characters x 4 rotations (4400 classes)",
        "samplers": rows,
        "maml_5w1s_iteration_s": round(maml_seconds, 4),
        "sampling_5w1s_meta_batch_s": round(sample_seconds, 6),
        "sampling_share_of_maml_iteration": round(sample_seconds / maml_seconds, 5),
    }

    print(f"Episode sampling, meta-batches of {args.batch_size}, {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'episode':<18}{'metalearn ep/s':>16}{'learn2learn ep/s':>18}{'ratio':>8}")
    for row in rows:
        shape = f"{row['n_way']}-way {row['k_shot']}-shot {row['q_query']}q"
        theirs = row["learn2learn_episodes_per_s"]
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1f}x"
        print(f"{shape:<18}{row['metalearn_episodes_per_s']:>16,.0f}"
              f"{'-' if theirs is None else f'{theirs:,.0f}':>18}{ratio:>8}")
    print(f"second-order MAML iteration (5-way 1-shot, Conv4): {maml_seconds * 1e3:.0f} ms; "
          f"sampling its meta-batch: {sample_seconds * 1e3:.2f} ms "
          f"({100 * result['sampling_share_of_maml_iteration']:.2f}% of the iteration)")
    if l2l_version is None:
        print("learn2learn is not installed (bash scripts/install_peers.sh): no ratio measured")

    out = args.out or RESULTS / f"sampler_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
