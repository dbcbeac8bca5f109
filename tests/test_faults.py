"""Runs that survive faults: a stop signal checkpoints mid-epoch and the run resumes with the losses of a run that was
never stopped; a run killed with SIGKILL resumes from its last checkpoint; a NaN loss stops the run and keeps the
last good checkpoint. Both signal paths go through the real command line in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.engine.train import Trainer, TrainingInterrupted, train

from test_train import read_log, tiny_config, train_losses


class _CallHook:
    """Wraps the loss: calls ``action(step)`` at the given (1-based) steps, then computes the loss."""

    def __init__(self, criterion, at: dict):
        self.criterion, self.at, self.calls = criterion, at, 0

    def __call__(self, logits, masks):
        self.calls += 1
        loss = self.criterion(logits, masks)
        action = self.at.get(self.calls)
        return action(loss) if action is not None else loss


def _val(run):
    return [(r["step"], r["mIoU"], r["train_loss"]) for r in read_log(run) if r["type"] == "val"]


def test_sigterm_checkpoints_mid_epoch_and_resume_matches_an_uninterrupted_run(tiny_dataset, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train(tiny_config(tiny_dataset), full, progress=False)

    def sigterm(loss):  # arrives while step 6 (the 2nd of epoch 2) is under way
        os.kill(os.getpid(), signal.SIGTERM)
        return loss

    trainer = Trainer(tiny_config(tiny_dataset), split, progress=False)
    trainer.criterion = _CallHook(trainer.criterion, {6: sigterm})
    with pytest.raises(TrainingInterrupted, match="SIGTERM received: stopped after step 6") as stop:
        trainer.fit()
    assert stop.value.step == 6 and stop.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone again
    state = load_checkpoint(split / "last.pt")
    assert (state.step, state.epoch) == (6, 1)  # mid-epoch: 1 epoch done, 2 steps into the next
    assert [s for s, _ in train_losses(split)] == [1, 2, 3, 4, 5, 6]

    train(tiny_config(tiny_dataset), split, resume=True, progress=False)
    assert train_losses(split) == train_losses(full)  # bit for bit, the skipped half-epoch included
    assert _val(split) == _val(full)  # the same mIoU, and epoch 2's mean train loss counts steps 5-8


def _cli(data, out, extra=()):
    sets = ["--set", 'model_kwargs={"base_channels": 4, "depth": 2}', "batch_size=2", "eval_batch_size=2",
            "crop_size=[32, 32]", "optimizer=sgd", "lr=0.05", "seed=3", *extra]
    return [sys.executable, "-m", "pixelwise", "train", "--data", str(data), "--model", "unet", "--epochs", "8",
            "--out", str(out), "--quiet", *sets]


def _wait_for(predicate, proc, timeout=120.0):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.005)


def _logged_steps(run):
    try:
        return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
                if '"train"' in line]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_ctrl_c_and_sigkill_through_the_command_line_resume_exactly(tiny_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same float sums as in here
    full = tmp_path / "full"
    train(tiny_config(tiny_dataset, epochs=8), full, progress=False)

    # SIGINT (Ctrl-C) with a DataLoader worker: the worker ignores it, the main process finishes its step.
    run = tmp_path / "int"
    proc = subprocess.Popen(_cli(tiny_dataset, run, ["num_workers=1"]), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_logged_steps(run)) >= 6, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    step = load_checkpoint(run / "last.pt").step
    assert f"SIGINT received: stopped after step {step}, {run / 'last.pt'} written" in out
    assert "Traceback" not in err and _logged_steps(run)[-1] == step < 32
    resumed = subprocess.run(_cli(tiny_dataset, run, ["num_workers=1"]) + ["--resume"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert train_losses(run) == train_losses(full) and _val(run) == _val(full)

    # SIGKILL: no handler runs; the run resumes from the last end-of-epoch checkpoint and drops the later log lines.
    run = tmp_path / "kill"
    proc = subprocess.Popen(_cli(tiny_dataset, run), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: (run / "last.pt").is_file() and len(_logged_steps(run)) % 4 >= 2, proc)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "last.pt").step < _logged_steps(run)[-1]
    train(tiny_config(tiny_dataset, epochs=8), run, resume=True, progress=False)
    assert train_losses(run) == train_losses(full) and _val(run) == _val(full)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(tiny_dataset), run, progress=False)
    good = {}

    def nan(loss):
        good.update({k: v.clone() for k, v in load_checkpoint(run / "last.pt").model_state.items()})
        return loss * float("nan")

    trainer.criterion = _CallHook(trainer.criterion, {6: nan})
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 6: lower the learning rate") as err:
        trainer.fit()
    assert f"{run / 'last.pt'} holds the last good state" in str(err.value)
    state = load_checkpoint(run / "last.pt")
    assert state.step == 4  # the end of epoch 1, untouched by the failed step
    for k, v in state.model_state.items():
        assert torch.equal(v, good[k]) and v.isfinite().all(), k
    assert max(s for s, _ in train_losses(run)) == 5  # nothing logged for the failed step

    # Before the first checkpoint, the message says there is none.
    first = tmp_path / "first"
    trainer = Trainer(tiny_config(tiny_dataset), first, progress=False)
    trainer.criterion = _CallHook(trainer.criterion, {2: lambda loss: loss * float("inf")})
    with pytest.raises(FloatingPointError, match="no checkpoint was written yet"):
        trainer.fit()
