"""wandb runs for real in offline mode and what it wrote is read back; failures only warn."""

from __future__ import annotations

import glob
import json
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from sample_run import CONFIG, ENVIRONMENT
from metalearn.tracking import RunFolder, Trackers, WandbTracker, resolve_mode
from metalearn.tracking.wandb_tracker import RUN_ID_FILE
from wandb_log import finished_records, logged


@pytest.fixture(autouse=True)
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home without wandb keys or settings, and a silent wandb."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL",
                 "NETRC"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_offline_run_holds_config_training_evaluation_and_summary(tmp_path: Path, drive) -> None:
    run_dir = tmp_path / "run"
    wandb = WandbTracker(mode="offline", project="tests", tags=["ci"], train_every=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning here means wandb was switched off
        results = drive(Trackers([RunFolder(), wandb]), run_dir)
    found = logged(run_dir)
    run = found["run"]
    assert (run.project, run.run_group, run.job_type) == (
        "tests", "finetune-split_mnist-class", "finetune")
    assert run.display_name == "finetune-class-seed3"
    assert list(run.tags) == ["ci", "finetune", "split_mnist", "class"]
    assert found["config"]["learner"] == {"name": "finetune"}
    assert found["config"]["scenario"] == "class"
    assert found["config"]["environment"] == ENVIRONMENT
    assert found["metrics"]["train/*"] == "global_step" and found["metrics"]["eval/*"] == "task"
    assert found["metrics"]["validation/*"] == "global_step"  # beside the training curves

    train = [row for row in found["history"] if "train/loss" in row]
    assert [row["global_step"] for row in train] == list(range(5, 61, 5))
    assert train[0]["train/loss"] == pytest.approx(np.mean([1 / s for s in range(1, 6)]))
    assert train[0]["train/lr"] == pytest.approx(0.1)

    validation = [row for row in found["history"] if "validation/mean_seen" in row]
    assert [row["global_step"] for row in validation] == list(range(10, 61, 10))
    assert validation[1] == {"validation/0/1": 0.6, "validation/2/3": 0.5, "validation/4/5": 0.4,
                             "validation/mean_seen": 0.6, "global_step": 20,  # task 0 only
                             **{k: v for k, v in validation[1].items() if k.startswith("_")}}
    assert validation[3]["validation/mean_seen"] == pytest.approx((0.7 + 0.6) / 2)  # in task 1

    evaluation = [row for row in found["history"] if "eval/acc_task_0" in row]
    assert [row["task"] for row in evaluation] == [-1, 0, 1, 2]
    assert evaluation[0]["eval/acc_task_0"] == 0.5  # b[0]
    assert "eval/avg_acc_seen" not in evaluation[0]
    assert evaluation[3]["eval/acc_task_2"] == 0.97
    assert evaluation[3]["eval/avg_acc_seen"] == pytest.approx((0.5 + 0.7 + 0.97) / 3)

    assert found["summary"]["acc"] == 0.7233 and found["summary"]["bwt"] == -0.385
    assert found["summary"]["completed_tasks"] == 3
    final = found["history"][-1]
    assert final["accuracy_matrix/_type"] == "table-file"
    for figure in ("accuracy_matrix", "accuracy_per_task", "learning_curves"):
        assert final[f"figures/{figure}/_type"] == "image-file"
    (table_file,) = (found["folder"] / "files" / "media" / "table").glob("accuracy_matrix*.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["after_task", *results.task_names]
    assert table["data"][0] == ["before training", 0.5, 0.4, 0.3]
    assert table["data"][3] == ["4/5", 0.5, 0.7, 0.97]
    assert found["exit_code"] == 0 and wandb.run is None


def test_runs_differing_only_in_their_seed_share_a_group(tmp_path: Path) -> None:
    """The runner's group: one per configuration, the same for every seed."""
    from metalearn.cli.config import RunConfig
    from metalearn.cli.runner import run_group

    def config(**changes) -> RunConfig:
        return RunConfig.model_validate({
            "benchmark": {"name": "split_mnist"}, "learner": {"name": "ewc"},
            "model": {"name": "mlp"},
            "protocol": {"steps_per_task": 10}, "scenario": "task", **changes})

    group = run_group(config(seed=0))
    assert group.startswith("ewc-split_mnist-task-")
    assert run_group(config(seed=7)) == group
    assert run_group(config(seed=7, output_dir="elsewhere")) == group  # not a result setting
    assert run_group(config(protocol={"steps_per_task": 20})) != group
    assert run_group(config(learner={"name": "ewc", "options": {"strength": 5}})) != group
    tracker = WandbTracker(mode="offline", group=group)
    tracker.start(tmp_path, CONFIG, {}, total_steps=1)
    tracker.close()
    assert logged(tmp_path)["run"].run_group == group


def test_learner_values_and_images_are_logged_against_the_task(tmp_path: Path, partial) -> None:
    tracker = WandbTracker(mode="offline")
    tracker.start(tmp_path, CONFIG, {}, total_steps=60)
    tracker.log_task(0, partial)
    tracker.log_images(0, {"samples": np.random.default_rng(0).random((4, 1, 6, 6))})
    tracker.finish(partial)
    found = logged(tmp_path)
    after_task = [row for row in found["history"] if row.get("task") == 0]
    assert after_task[0]["learner/capacity_used"] == 0.5
    assert after_task[1]["images/samples/_type"] == "image-file"
    assert found["metrics"]["learner/*"] == "task" and found["metrics"]["images/*"] == "task"


def test_a_partial_run_exits_failed_under_the_name_it_was_given(tmp_path: Path, partial) -> None:
    tracker = WandbTracker(mode="offline", name="finetune-class-seed3-3fa2c1")
    tracker.start(tmp_path, CONFIG, {}, total_steps=60)
    tracker.log_task(-1, partial)
    tracker.finish(partial)
    tracker.close()
    found = logged(tmp_path)
    assert found["run"].display_name == "finetune-class-seed3-3fa2c1"
    assert found["exit_code"] == 1  # shown as failed: it stopped after 2 of 3 tasks
    assert (tmp_path / "accuracy_matrix.png").exists()  # made for wandb without a RunFolder
    assert found["history"][-1]["figures/accuracy_matrix/_type"] == "image-file"


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path: Path, partial, capsys) -> None:
    for attempt in range(2):  # the first start is killed after task 0; the second resumes
        if attempt:
            time.sleep(1)  # wandb names offline folders by the second they start
        tracker = WandbTracker(mode="offline")
        tracker.start(tmp_path, CONFIG, {}, total_steps=60)
        tracker.log_task(0, partial)
        tracker.close()
    run_id = (tmp_path / RUN_ID_FILE).read_text().strip()
    parts = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(parts) == 2 and all(part.name.endswith(f"-{run_id}") for part in parts)
    for part in parts:
        (log,) = part.glob("*.wandb")
        (run,) = [r.run for r in finished_records(log) if r.WhichOneof("record_type") == "run"]
        assert run.run_id == run_id
    where, command = capsys.readouterr().err.splitlines()[-2:]
    assert where == f"wandb: logged offline to {parts[1]}"  # this session's part
    assert command.startswith("wandb: upload with: wandb sync ")
    assert sorted(map(Path, glob.glob(command.split()[-1]))) == parts  # both parts, one upload


@pytest.fixture
def silent_server() -> str:
    """The address of a server that accepts connections and never answers: a cluster node
    whose firewall swallows traffic. The kernel completes the handshakes from the backlog."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_key_without_network_logs_offline_within_seconds(tmp_path: Path, monkeypatch, partial,
                                                          silent_server: str, capsys) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    tracker = WandbTracker(mode="auto", init_timeout=2)
    began = time.monotonic()
    with pytest.warns(UserWarning, match=r"wandb could not start an online run \(Timed out.*\); "
                                         r"logging offline instead") as caught:
        tracker.start(tmp_path, CONFIG, {}, total_steps=60)
    assert time.monotonic() - began < 15 and len(caught) == 1
    tracker.log_task(0, partial)
    tracker.finish(partial)
    found = logged(tmp_path)  # the offline run holds what was logged
    assert [row["task"] for row in found["history"] if "eval/acc_task_0" in row] == [0]
    assert "wandb sync" in capsys.readouterr().err


def test_init_failure_is_one_warning_and_then_nothing(tmp_path: Path, monkeypatch, drive) -> None:
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", broken)
    tracker = WandbTracker(mode="offline")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drive(tracker, tmp_path)
    assert len(caught) == 1
    assert "wandb failed in start (RuntimeError: no wandb today)" in str(caught[0].message)
    assert "the run continues without wandb" in str(caught[0].message)
    assert tracker.run is None and not (tmp_path / "wandb").exists()


def test_log_failure_mid_run_warns_once_and_closes_the_run(tmp_path: Path, monkeypatch,
                                                          partial) -> None:
    tracker = WandbTracker(mode="offline", train_every=1)
    tracker.start(tmp_path, CONFIG, {}, total_steps=60)
    tracker.log_train(0, 0, 1, {"loss": 1.0})

    def lost(*args, **kwargs):
        raise ConnectionError("connection lost")

    monkeypatch.setattr(tracker.run, "log", lost)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_train(0, 1, 2, {"loss": 0.5})
        tracker.log_train(0, 2, 3, {"loss": 0.4})
        tracker.log_task(0, partial)
        tracker.finish(partial)
        tracker.close()
    assert [str(w.message) for w in caught] == [
        "wandb failed in log (ConnectionError: connection lost); the run continues without wandb"]
    found = logged(tmp_path)
    assert [row["train/loss"] for row in found["history"] if "train/loss" in row] == [1.0]
    assert found["exit_code"] == 1  # the tracker finished its run when it gave up


def test_disabled_mode_never_starts_wandb(tmp_path: Path, drive) -> None:
    tracker = WandbTracker(mode="disabled")
    drive(tracker, tmp_path)
    assert tracker.run is None and not (tmp_path / "wandb").exists()


def test_online_without_credentials_logs_offline_instead_of_prompting(tmp_path: Path,
                                                                       partial) -> None:
    tracker = WandbTracker(mode="online")
    with pytest.warns(UserWarning, match="no API key was found.*logging offline instead"):
        tracker.start(tmp_path, CONFIG, {}, total_steps=1)
    tracker.finish(partial)
    assert logged(tmp_path)["run"].display_name == "finetune-class-seed3"


def test_auto_mode_is_offline_without_credentials() -> None:
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("online") == "online" and resolve_mode("disabled") == "disabled"


def test_auto_mode_is_online_with_a_netrc_entry_or_a_key(no_credentials: Path, monkeypatch) -> None:
    netrc = no_credentials / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"
    netrc.write_text("machine example.org\n  login user\n  password secret\n")
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode("auto") == "online"


def test_auto_mode_follows_wandb_mode_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    assert resolve_mode("offline") == "offline"  # an explicit mode wins


def test_unknown_modes_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="unknown wandb mode 'sometimes'"):
        WandbTracker(mode="sometimes")
    with pytest.raises(ValueError, match="train_every"):
        WandbTracker(train_every=0)
    with pytest.raises(ValueError, match="init_timeout"):
        WandbTracker(init_timeout=0)
