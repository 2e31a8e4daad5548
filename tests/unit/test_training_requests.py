import pytest
from pydantic import ValidationError

from atelier.training import schedules
from atelier.training import service as training
from atelier.training.schedules import RetrainParams


def test_presets_and_archs_match_the_gan_package():
    from atelier.gan.config import ARCHS, PRESETS

    assert set(training.PRESETS) == set(PRESETS)
    assert {name: PRESETS[name]["resolution"] for name in PRESETS} == training.PRESETS
    assert set(training.ARCHS) == set(ARCHS)
    assert {name: PRESETS[name]["batch_size"] for name in PRESETS} == training.BATCH_SIZES


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"devices": 9}, "devices 9 is more than ATELIER_MAX_TRAINING_DEVICES=8"),
        ({"preset": "tiny", "devices": 3}, "devices 3 does not divide the tiny preset's batch of 32"),
    ],
)
def test_devices_are_bounded_by_the_setting_and_must_split_the_batch(body, message):
    from atelier.core.config import Settings

    with pytest.raises(training.InvalidRequest, match=message) as caught:
        training.check_devices(training.TrainingRequest(**body), Settings(max_training_devices=8))
    assert caught.value.field == "devices"
    training.check_devices(
        training.TrainingRequest(preset="small", devices=8), Settings(max_training_devices=8)
    )
    with pytest.raises(ValidationError, match="devices"):
        training.TrainingRequest(devices=0)


@pytest.mark.parametrize("resolution", [8, 48, 512])
def test_resolution_must_be_a_power_of_two_in_range(resolution):
    with pytest.raises(ValidationError, match="power of two"):
        training.TrainingRequest(resolution=resolution)


def test_steps_out_of_range():
    with pytest.raises(ValidationError, match="steps"):
        training.TrainingRequest(steps=training.MAX_STEPS + 1)


@pytest.mark.parametrize(
    ("new", "prod", "tol", "promoted"),
    [
        (0.010, 0.020, 0.0, True),
        (0.020, 0.020, 0.0, True),
        (0.025, 0.020, 0.0, False),
        (0.025, 0.020, 0.01, True),
    ],
)
def test_kid_gate_both_ways(new, prod, tol, promoted):
    from atelier.training.evaluation import kid_gate

    ok, reason = kid_gate(new, prod, tol, "v1")
    assert ok is promoted
    assert reason.startswith("no worse" if promoted else "worse") and "v1" in reason


def test_retrain_params_refuse_unknown_fields():
    with pytest.raises(ValidationError):
        RetrainParams(min_new=3)


def test_run_keys_name_the_minute():
    from datetime import UTC, datetime

    at = datetime(2026, 11, 27, 2, 0, 30, tzinfo=UTC)
    assert schedules.run_key_for("nightly-retrain", at) == "nightly-retrain:2026-11-27T02:00"
    assert schedules.next_after("0 2 * * *", at) == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def test_a_cuda_worker_with_too_few_gpus_refuses_the_segment_and_a_cpu_worker_runs_gloo(monkeypatch):
    import torch

    from atelier.training import tasks
    from atelier.training.tasks import TrainingDevicesUnavailable, segment_device

    # worker_device (atelier/workers/device.py) decides CUDA or CPU for the process, and says why
    monkeypatch.setattr(tasks, "worker_device", lambda: "cpu")
    assert segment_device(4) == "cpu"  # gloo processes on the CPU
    monkeypatch.setattr(tasks, "worker_device", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert segment_device(2) == "cuda"
    with pytest.raises(
        TrainingDevicesUnavailable, match="devices 4 needs 4 GPUs on one worker host; this worker sees 2"
    ):
        segment_device(4)
