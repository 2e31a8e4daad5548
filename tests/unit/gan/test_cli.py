import json

from click.testing import CliRunner
from PIL import Image

from atelier.cli.bench.model import bench_generate_bare
from atelier.cli.gan import gan

from .conftest import CATEGORIES, draw_garment


def _catalogue(root):
    for c, name in enumerate(CATEGORIES):
        (root / name).mkdir(parents=True)
        for i in range(4):
            (root / name / f"{i}.jpg").write_bytes(draw_garment(c, i, fmt="JPEG"))
    return root


def _quick_train(data, *extra: str, steps: int = 1) -> list[str]:
    """`gan train` arguments for a 16-px CPU run of a few steps, without the truncation sweep."""
    fixed = ["--resolution", "16", "--steps", str(steps), "--device", "cpu", "--no-sweep"]
    return ["train", "--data", str(data), *fixed, *extra]


def test_train_sample_eval_round_trip(tmp_path):
    data, out = _catalogue(tmp_path / "data"), tmp_path / "run"
    runner = CliRunner()
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--resolution",
        "16",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--judge-seconds",
        "0.1",
    ]
    res = runner.invoke(gan, args)
    assert res.exit_code == 0, res.output
    for name in ("checkpoint.pt", "grid.png", "losses.png", "judge.pt"):
        assert (out / name).stat().st_size > 0
    # the sweep chose the model's default truncation, as a training job's evaluation does
    from atelier.gan.training import checkpoint_from_bytes

    trained = checkpoint_from_bytes((out / "checkpoint.pt").read_bytes())
    chosen = json.loads(res.output.strip().splitlines()[-1])["default_truncation"]
    assert trained["default_truncation"] == chosen in (0.7, 0.8, 0.9, 1.0)
    summary = json.loads(res.output.strip().splitlines()[-1])["eval"]
    assert set(summary["recall_by_category"]) == {"dress", "hat", "pants"}
    assert set(trained["truncation_sweep"]) == {"0.7", "0.8", "0.9", "1.0"}
    again = runner.invoke(gan, args)  # resumes from the checkpoint
    assert again.exit_code == 0 and json.loads(again.output.strip().splitlines()[-1])["step"] == 4

    ckpt = str(out / "checkpoint.pt")
    res = runner.invoke(
        gan, ["sample", "--checkpoint", ckpt, "--per-category", "2", "--out", str(tmp_path / "s")]
    )
    assert res.exit_code == 0, res.output
    files = sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*.png"))
    assert files == ["dress/0.png", "dress/1.png", "hat/2.png", "hat/3.png", "pants/4.png", "pants/5.png"]
    assert Image.open(tmp_path / "s" / "hat" / "2.png").text["seed"] == "2"

    res = runner.invoke(
        gan,
        ["eval", "--checkpoint", ckpt, "--data", str(data), "--judge-seconds", "0.1", "--n-per-class", "2"],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert {"gan_test_accuracy", "kid", "precision", "recall", "judge_heldout_accuracy"} <= set(metrics)
    # Draws of recall need held-out photos: 4 photos per category leave one each, and the error says so.
    judge_args = ["--judge", str(out / "judge.pt")]
    res = runner.invoke(
        gan, ["eval", "--checkpoint", ckpt, "--data", str(data), *judge_args, "--recall-draws", "2"]
    )
    assert res.exit_code == 2 and "--recall-draws" in res.output and "held-out photos" in res.output
    res = runner.invoke(
        gan, ["eval", "--checkpoint", ckpt, "--data", str(data), *judge_args, "--recall-draws", "51"]
    )
    assert res.exit_code == 2 and "--recall-draws" in res.output and "0<=x<=50" in res.output
    # per category by name, as diversity is (None where a category has no held-out photo)
    assert (
        set(metrics["recall_by_category"])
        == set(metrics["diversity_by_category"])
        == {"dress", "hat", "pants"}
    )


def test_unknown_preset_and_resolution_are_refused(tmp_path):
    data = _catalogue(tmp_path / "data")
    res = CliRunner().invoke(
        gan, ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--resolution", "48", "--no-sweep"]
    )
    assert res.exit_code != 0 and "power of two" in res.output


def test_bare_generate_bench_reports_images_per_second():
    out = bench_generate_bare("tiny", 8, batch_size=4, workers=1)
    assert out["count"] == 8 and out["images_per_s"] > 0 and out["mean_png_bytes"] > 0


def test_bare_train_bench_names_the_precision_it_measured():
    from atelier.cli.bench.model import bench_train_cmd

    runner = CliRunner()
    for precision in ("fp32", "bf16"):
        res = runner.invoke(
            bench_train_cmd,
            [
                "--preset",
                "tiny",
                "--arch",
                "atelier",
                "--seconds",
                "0.2",
                "--device",
                "cpu",
                "--precision",
                precision,
            ],
        )
        assert res.exit_code == 0, res.output
        row = json.loads(res.output)["results"]["tiny/atelier"]
        assert row["precision"] == precision and row["steps"] >= 3 and row["steps_per_s"] > 0
    res = runner.invoke(bench_train_cmd, ["--nproc", "2", "--precision", "bf16"])
    assert res.exit_code != 0 and "--precision" in res.output


def test_precision_bf16_train_and_sample_and_default_truncation(tmp_path):
    data, out = _catalogue(tmp_path / "data"), tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        gan,
        ["train", "--data", str(data), "--out", str(out), "--resolution", "16", "--steps", "2"]
        + ["--device", "cpu", "--precision", "bf16", "--no-sweep"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["precision"] == "bf16"
    ckpt = str(out / "checkpoint.pt")
    res = runner.invoke(
        gan,
        ["eval", "--checkpoint", ckpt, "--data", str(data), "--judge-seconds", "0.1", "--n-per-class", "2"]
        + ["--sweep"],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert metrics["default_truncation"] in (1.0, 0.9, 0.8, 0.7) and set(metrics["truncation_sweep"]) == {
        "1.0",
        "0.9",
        "0.8",
        "0.7",
    }
    res = runner.invoke(
        gan,
        ["sample", "--checkpoint", ckpt, "--per-category", "1", "--out", str(tmp_path / "s")]
        + ["--precision", "bf16"],
    )
    assert res.exit_code == 0, res.output
    # The sweep's choice is the model's default, written into every image's provenance.
    truncation = float(Image.open(tmp_path / "s" / "dress" / "0.png").text["truncation"])
    assert truncation == (metrics["class_truncation"] or [metrics["default_truncation"]])[0]  # dress: 0
    bad = runner.invoke(
        gan, ["sample", "--checkpoint", ckpt, "--out", str(tmp_path / "x"), "--truncation", "2"]
    )
    assert bad.exit_code != 0 and "truncation" in bad.output.lower()


def test_gpu_check_smoke_on_cpu_prints_one_json_object(tmp_path):
    from atelier.cli.bench import bench

    data = _catalogue(tmp_path / "data")
    res = CliRunner().invoke(
        bench,
        ["gpu", "--json", "--data", str(data), "--device", "cpu", "--minutes", "0.01", "--preset", "tiny"]
        + ["--resolution", "16", "--judge-epochs", "2", "--per-category", "2"]
        + ["--bench-seconds", "0.1", "--bench-count", "4"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["benchmark"] == "gpu_check" and out["device"] == "cpu" and out["train"]["steps"] >= 1
    assert out["judge_epochs"] == 2
    assert (
        0.0 <= out["metrics"]["gan_test_accuracy"] <= 1.0 and out["metrics"]["kid"] == out["metrics"]["kid"]
    )
    assert out["bench_train"]["results"]["tiny/atelier"]["steps"] >= 3
    assert out["bench_generate"]["count"] == 4


def test_finetune_from_a_parent_and_the_gate_verdict(tmp_path):
    data = _catalogue(tmp_path / "data")
    runner = CliRunner()
    assert runner.invoke(gan, _quick_train(data, "--out", str(tmp_path / "parent"), steps=2)).exit_code == 0
    parent = tmp_path / "parent" / "checkpoint.pt"
    res = runner.invoke(
        gan, _quick_train(data, "--out", str(tmp_path / "child"), "--finetune-from", str(parent), steps=2)
    )
    assert res.exit_code == 0, res.output
    assert "fine-tuning" in res.output
    # the fine-tune counts its own steps and keeps the parent's image count (the EMA ramp goes on)
    from atelier.gan.training import checkpoint_from_bytes

    child = checkpoint_from_bytes((tmp_path / "child" / "checkpoint.pt").read_bytes())
    before = checkpoint_from_bytes(parent.read_bytes())
    assert child["step"] == 2 and child["cur_nimg"] > before["cur_nimg"]

    metrics = {"kid": 0.10, "kid_std": 0.01, "gan_test_accuracy": 0.5, "n_gan_test": 700, "recall": 0.3,
               "n_real": 3000}  # fmt: skip
    worse = {**metrics, "kid": 0.30}
    (tmp_path / "p.json").write_text(json.dumps(metrics))
    (tmp_path / "w.json").write_text(json.dumps(worse))
    same = runner.invoke(
        gan, ["gate", "--candidate", str(tmp_path / "p.json"), "--production", str(tmp_path / "p.json")]
    )
    refused = runner.invoke(
        gan, ["gate", "--candidate", str(tmp_path / "w.json"), "--production", str(tmp_path / "p.json")]
    )
    assert json.loads(same.output)["promote"] is True
    verdict = json.loads(refused.output)
    assert verdict["promote"] is False and "KID 0.3000 vs 0.1000" in verdict["reason"]


def test_set_overrides_a_preset_field_and_names_what_is_wrong(tmp_path):
    data, out = _catalogue(tmp_path / "data"), tmp_path / "run"
    base = _quick_train(data, "--out", str(out))
    sets = ["--set", "aux_weight=0.2", "--set", "class_balance=0.5", "--set", "betas=0,0.99"]
    res = CliRunner().invoke(gan, [*base, *sets])
    assert res.exit_code == 0, res.output
    from atelier.gan.training import checkpoint_from_bytes

    ckpt = checkpoint_from_bytes((out / "checkpoint.pt").read_bytes())
    cfg = ckpt["config"]
    assert cfg["aux_weight"] == 0.2 and cfg["class_balance"] == 0.5 and cfg["betas"] == [0.0, 0.99]
    assert ckpt["opt_G"]["param_groups"][0]["betas"] == (0.0, 0.99)
    short = CliRunner().invoke(gan, [*base, "--no-resume", "--set", "betas=0"])
    assert short.exit_code != 0 and "--set betas: expected 2 comma-separated numbers" in short.output
    big = CliRunner().invoke(gan, [*base, "--no-resume", "--set", "betas=0,1.5"])
    assert big.exit_code != 0 and "betas must be two numbers in [0, 1)" in big.output
    bad = CliRunner().invoke(gan, [*base, "--no-resume", "--set", "nonsense=1"])
    assert bad.exit_code != 0 and "--set 'nonsense=1'" in bad.output
    own = CliRunner().invoke(gan, [*base, "--no-resume", "--set", "resolution=64"])
    assert own.exit_code != 0 and "--set resolution: use --resolution" in own.output
    flag = CliRunner().invoke(gan, [*base, "--no-resume", "--set", "xflip=ture"])
    assert flag.exit_code != 0 and "--set xflip: 'ture' is not a flag" in flag.output
    policy = CliRunner().invoke(gan, [*base, "--no-resume", "--set", "augment=color,blur"])
    assert policy.exit_code != 0 and "--set augment: unknown augmentation ['blur']" in policy.output
    res = CliRunner().invoke(gan, [*base, "--no-resume", "--set", "augment=color", "--set", "ada_target=0.6"])
    assert res.exit_code == 0, res.output
    cfg = checkpoint_from_bytes((out / "checkpoint.pt").read_bytes())["config"]
    assert cfg["augment"] == "color" and cfg["ada_target"] == 0.6


def test_set_on_a_resumed_run_is_refused_and_on_a_finetune_applies_training_fields(tmp_path):
    data = _catalogue(tmp_path / "data")
    runner = CliRunner()
    base = _quick_train(data)
    assert runner.invoke(gan, [*base, "--out", str(tmp_path / "parent")]).exit_code == 0
    # resuming keeps the run's own config: --set would be ignored, so it is refused, naming the option
    resumed = runner.invoke(gan, [*base, "--out", str(tmp_path / "parent"), "--set", "aux_weight=0.5"])
    assert resumed.exit_code != 0 and "--set" in resumed.output and "--no-resume" in resumed.output

    parent = str(tmp_path / "parent" / "checkpoint.pt")
    child = tmp_path / "child"
    tune = [*base, "--out", str(child), "--finetune-from", parent]
    res = runner.invoke(gan, [*tune, "--set", "aux_weight=0.5"])
    assert res.exit_code == 0, res.output
    from atelier.gan.training import checkpoint_from_bytes

    assert checkpoint_from_bytes((child / "checkpoint.pt").read_bytes())["config"]["aux_weight"] == 0.5
    shape = runner.invoke(gan, [*tune, "--no-resume", "--set", "w_dim=64"])
    assert shape.exit_code != 0 and "cannot override w_dim" in shape.output
