"""Stands in for ``python -m metalearn`` in the sweep tests: takes ``run CONFIG [key=value ...]
--run-dir DIR`` or ``run --resume DIR`` and writes the run folder a run would, in milliseconds.

Its validation accuracy peaks at lr=0.01 (for an architecture search's candidates, with
``model.options.blocks``: the fraction of conv3x3 blocks) and its test accuracy is the opposite (so a sweep that
tuned on the test set would choose another lr); lr above 1000 fails as a NaN loss does. It
"trains" two tasks of ``protocol.steps_per_task`` steps, writing a validation point (scored as
its final validation accuracy) every ``protocol.validate_every`` steps into validation.jsonl,
POINT_S apart. Each call is appended to ``<output_dir>/calls.txt`` as ``run|resume <seed> <lr>``,
and a stop by SIGTERM (as a run stops: exit status 143) as ``stopped <seed> <lr> <step>``.
"""

import json
import math
import signal
import sys
import time
from pathlib import Path

import yaml

from metalearn.results import RunResults

POINT_S = 0.3  # seconds between validation points

def main(arguments: list[str]) -> int:
    if arguments[:2] == ["run", "--resume"]:
        run_dir, how = Path(arguments[2]), "resume"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    else:
        config, run_dir, how = yaml.safe_load(Path(arguments[1]).read_text()), Path(arguments[-1]), "run"
        for override in arguments[2:-2]:
            key, _, value = override.partition("=")
            *sections, name = key.split(".")
            section = config
            for part in sections:
                section = section.setdefault(part, {})
            section[name] = yaml.safe_load(value)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    lr = config["learner"]["options"]["lr"]
    log = Path(config["output_dir"]) / "calls.txt"
    with open(log, "a") as calls:
        calls.write(f"{how} {config['seed']} {lr}\n")
    if lr > 1000:
        print("error: the loss is NaN at step 3 of task 0: lower learner.options.lr", file=sys.stderr)
        return 1
    val_acc = 1 - (math.log10(lr) + 2) ** 2 / 100
    blocks = config["model"].get("options", {}).get("blocks")
    if blocks:
        val_acc = sum(block["op"] == "conv3x3" for block in blocks) / len(blocks)
    step = 0

    def stop(number, frame):
        with open(log, "a") as calls:
            calls.write(f"stopped {config['seed']} {lr} {step}\n")
        print("stopped by SIGTERM: continue with: metalearn run --resume", file=sys.stderr)
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    protocol = config["protocol"]
    for step in range(protocol["validate_every"], 2 * protocol["steps_per_task"] + 1, protocol["validate_every"]):
        if step > protocol["validate_every"]:
            time.sleep(POINT_S)
        with open(run_dir / "validation.jsonl", "a") as points:
            points.write(json.dumps({"task": (step - 1) // protocol["steps_per_task"], "step": step,
                                     "score": val_acc, "accuracies": {}}) + "\n")
    results = RunResults.empty("split_mnist", "finetune", "class", config["seed"], ["a", "b"], [1, 1], False)
    results.completed_tasks = 2
    results.metrics = {"val_acc": val_acc, "acc": (math.log10(lr) + 2) ** 2 / 100}
    (run_dir / "results.json").write_text(json.dumps(results.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
