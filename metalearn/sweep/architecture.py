"""Architecture search on the sweep engine (docs/architecture_search.md): each candidate a Tune
trial (one ordinary run of the spec's config with ``model.options.blocks`` set, scored on
validation data only), proposed by a searcher of metalearn.nas; DARTS as two trials (the
supernet, then its derived architecture). Writes ``search.json`` beside the runs: the
candidates in the order proposed, with FLOPs, parameters and the best score so far (for
DARTS also the supernet's training time and final architecture weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ray.tune.search import Searcher

from metalearn.cli.config import RunConfig
from metalearn.models import build_model
from metalearn.nas import (Architecture, ArchitectureSearcher, DartsOptions, as_blocks,
                           build_searcher, from_blocks)
from metalearn.protocol.checkpoint import load_checkpoint
from metalearn.sweep.engine import fit, import_tune, run_trials
from metalearn.sweep.spec import BLOCKS_KEY, SweepSpec, Trial, trials
from metalearn.tracking.run_folder import load_results

FAILED_SCORE = 0.0  # what a searcher is told of a candidate whose run failed
SEARCH_FILE = "search.json"
REDRAWS = 100  # proposals drawn again while one repeats an architecture of the same round


class ProposalRounds(Searcher):
    """Tune's side of an architecture searcher: proposes ``batch`` candidates a round and tells
    the searcher their scores in the order proposed once the round is in (Tune waits meanwhile),
    so the proposals depend on the scores alone, never on which run ended first: a search
    started again after a kill proposes the same candidates and reuses their runs. A round holds
    no architecture twice; a later round's repeat reuses the earlier run."""

    def __init__(self, searcher: ArchitectureSearcher, candidates: int, batch: int, metric: str) -> None:
        super().__init__(metric=metric, mode="max")
        self.proposer, self.candidates, self.batch = searcher, candidates, batch
        self.proposed: list[Architecture] = []
        self.round: dict[str, Architecture] = {}  # trial id -> its architecture, this round
        self.scores: dict[str, float] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if len(self.proposed) == self.candidates:
            return Searcher.FINISHED
        if len(self.round) == self.batch:
            if len(self.scores) < self.batch:
                return None  # the round's scores are not all in
            for done, architecture in self.round.items():
                self.proposer.observe(architecture, self.scores[done])
            self.round, self.scores = {}, {}
        architecture = self.proposer.propose()
        for _ in range(REDRAWS):  # two runs of one architecture at once would share a run folder
            if architecture not in self.round.values():
                break
            architecture = self.proposer.propose()
        self.round[trial_id] = architecture
        self.proposed.append(architecture)
        return {BLOCKS_KEY: as_blocks(architecture)}

    def get_state(self) -> dict[str, Any]:
        """What Tune saves in its experiment state (a search resumes by reusing runs instead)."""
        return {"proposed": [as_blocks(architecture) for architecture in self.proposed]}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        score = (result or {}).get(self.metric)
        self.scores[trial_id] = FAILED_SCORE if error or score is None else float(score)


def run_architecture_search(spec: SweepSpec, command: Sequence[str], address: str | None) -> list[dict]:
    """Run the search of ``spec.architecture``; one summary row per trial, and ``search.json``."""
    search = spec.architecture
    if isinstance(search.searcher, DartsOptions):
        return _run_darts(spec, search.searcher, command, address)
    tune = import_tune()
    rounds = ProposalRounds(build_searcher(search.searcher, search.space, spec.seeds[0]),
                            search.candidates, search.batch, spec.metric)
    tune_config = tune.TuneConfig(search_alg=rounds, num_samples=search.candidates, reuse_actors=True)
    rows = fit({}, tune_config, lambda params: _candidate(spec, params[BLOCKS_KEY]), spec.resources,
               spec.output_dir, command, address, spec.metric, spec.scheduler, spec.mode)
    by_blocks = {json.dumps(row["settings"][BLOCKS_KEY]): row for row in rows}
    candidates = [by_blocks.get(json.dumps(as_blocks(architecture))) for architecture in rounds.proposed]
    _write_search(spec, [row for row in candidates if row is not None])
    return rows


def _candidate(spec: SweepSpec, blocks: list[dict]) -> Trial:
    return trials(spec, {BLOCKS_KEY: blocks})[0]


def _run_darts(spec: SweepSpec, options: DartsOptions, command: Sequence[str],
               address: str | None) -> list[dict]:
    """The supernet's trial, then the trial of the architecture derived from it."""
    supernet = trials(spec, {"model.name": "darts", "model.options.depth": options.depth,
                             "model.options.width": options.width,
                             "model.options.reductions": options.reductions,
                             "protocol.steps_per_task": options.supernet_steps})[0]
    rows = run_trials([supernet], spec.resources, spec.output_dir, command, address, spec.metric)
    if rows[0]["status"] == "failed":
        return rows
    run_dir = Path(rows[0]["run_dir"])
    space = spec.architecture.space
    model = _trained_supernet(supernet.run_config(), run_dir, space.image_shape)
    derived = _candidate(spec, model.derive(flops_limit=space.flops_limit()))
    rows += run_trials([derived], spec.resources, spec.output_dir, command, address, spec.metric)
    _write_search(spec, rows[1:], supernet={
        "run_dir": _portable(run_dir), "steps": options.supernet_steps, "val_acc": rows[0][spec.metric],
        "train_s": load_results(run_dir).timings["train_s/task_0"],
        "architecture_weights": model.architecture_weights()})
    return rows


def _trained_supernet(config: RunConfig, run_dir: Path, image_shape: tuple[int, int, int]) -> Any:
    """The supernet of a finished run, its trained weights loaded from the run's checkpoint."""
    model = build_model("darts", image_shape, config.protocol.n_way, **config.model.options)
    state = load_checkpoint(run_dir / "checkpoint.pt", "cpu", holds=("learner",))["learner"]["model"]
    model.features.load_state_dict({key.removeprefix("features."): value for key, value in state.items()
                                    if key.startswith("features.")})
    return model


def _portable(path: str | Path) -> str:
    """``path`` relative to the working folder where it lies inside it (search.json is
    committed with results: anyone's clone can follow it), else as it is."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _write_search(spec: SweepSpec, rows: list[dict], supernet: dict | None = None) -> Path:
    """``search.json``: every candidate in the order proposed, with its FLOPs, parameters and
    the best validation score of the candidates up to it."""
    space, best = spec.architecture.space, None
    candidates = []
    for index, row in enumerate(rows):
        blocks = row["settings"][BLOCKS_KEY]
        model = build_model("searchable", space.image_shape, space.n_way, blocks=blocks)
        score = row[spec.metric]
        if score is not None and (best is None or score > best):
            best = score
        candidates.append({
            "candidate": index + 1, "blocks": blocks, "flops": space.flops(from_blocks(blocks)),
            "parameters": sum(p.numel() for p in model.parameters()), spec.metric: score,
            "best_so_far": best, "status": row["status"], "run_dir": _portable(row["run_dir"]), "error": row["error"]})
    path = spec.output_dir / SEARCH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "searcher": spec.architecture.searcher.model_dump(), "space": spec.architecture.space.model_dump(),
        "flops_limit": space.flops_limit(), "metric": spec.metric, "candidates": candidates,
        **({"supernet": supernet} if supernet else {})}, indent=2) + "\n")
    return path
