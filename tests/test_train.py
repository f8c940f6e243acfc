"""Training library: loss, parameter groups, schedules, checkpoints, exact resume, evaluation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from fcn_deploy.core.card import ModelCard, Normalization
from fcn_deploy.core.datasets import build_dataset
from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.core.model_config import ModelConfig
from fcn_deploy.training.checkpoint import load_checkpoint, model_from_checkpoint
from fcn_deploy.training.config import TrainConfig
from fcn_deploy.training.evaluation import evaluate_model
from fcn_deploy.training.fcn import build_model
from fcn_deploy.training.loss import segmentation_loss
from fcn_deploy.training.optim import build_optimizer, param_groups, schedule_factor
from fcn_deploy.training.recipes import PAPER_LR_SUM, default_lr
from fcn_deploy.training.run_dir import remove_stale_temps, resume_config
from fcn_deploy.training.trainer import train

TINY = dict(
    variant="fcn8s", width=0.0625, dataset="synthetic",
    dataset_options={"num_classes": 3, "size": [32, 32], "length": 8}, batch_size=4,
)  # fmt: skip


def quiet(_: str) -> None:
    pass


# --- loss -------------------------------------------------------------------------------------------------
def test_loss_sum_and_mean_skip_ignored_pixels():
    logits = torch.zeros(2, 3, 2, 2)  # uniform: every valid pixel costs log(3)
    target = torch.tensor([[[0, 1], [2, 255]], [[255, 255], [255, 1]]])
    valid = 4
    assert segmentation_loss(logits, target, 255, "sum").item() == pytest.approx(valid * math.log(3) / 2)
    assert segmentation_loss(logits, target, 255, "mean").item() == pytest.approx(math.log(3))


def test_loss_all_ignored_is_zero_not_nan():
    loss = segmentation_loss(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 255), 255, "mean")
    assert loss.item() == 0.0


def test_loss_no_ignore_label_counts_every_pixel():
    loss = segmentation_loss(torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, dtype=torch.long), None, "sum")
    assert loss.item() == pytest.approx(4 * math.log(2))


# --- optimiser ----------------------------------------------------------------------------------------------
def test_param_groups_follow_caffe_lr_mult_and_decay_mult():
    model = build_model(ModelConfig("fcn8s", 5, 0.0625, "same", batch_norm=True))
    weights, biases = param_groups(model, 1e-3, 5e-4)
    assert weights["lr"] == 1e-3 and weights["weight_decay"] == 5e-4
    assert biases["lr"] == 2e-3 and biases["weight_decay"] == 0.0
    grouped = {id(p) for g in (weights, biases) for p in g["params"]}
    for _, deconv in model.upsamplers():  # frozen bilinear kernels are not optimised at all
        assert id(deconv.weight) not in grouped
    assert id(model.conv1_1.bias) in {id(p) for p in biases["params"]}
    assert id(model.bn1_1.weight) in {id(p) for p in biases["params"]}  # no decay on BN scales
    learned = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == learned


def test_sgd_paper_defaults():
    model = build_model(ModelConfig("fcn32s", 3, 0.0625, "same"))
    assert default_lr("sgd", "fcn8s", "sum") == PAPER_LR_SUM["fcn8s"] == 1e-14
    assert default_lr("sgd", "fcn32s", "sum") == 1e-10
    opt = build_optimizer("sgd", model, 1e-10, 5e-4)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.99
    with pytest.raises(FcnDeployError, match="--lr"):
        build_optimizer("adamw", model, 0.0, 0.0)


def test_schedules():
    assert schedule_factor("fixed", 50, 100) == 1.0
    assert schedule_factor("poly", 0, 100) == 1.0 and schedule_factor("poly", 100, 100) == 0.0
    assert schedule_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert schedule_factor("cosine", 100, 100) == pytest.approx(0.0)
    with pytest.raises(FcnDeployError, match="schedule"):
        schedule_factor("step", 1, 10)


def test_train_config_rejects_bad_values():
    with pytest.raises(FcnDeployError, match="--epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(FcnDeployError, match="normalisation"):
        TrainConfig(normalization="zscore")
    cfg = TrainConfig(crop=(32, 48), scale_range=(0.5, 2.0))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# --- the loop ---------------------------------------------------------------------------------------------
def test_train_writes_checkpoints_log_and_card(tmp_path):
    cfg = TrainConfig(**TINY, epochs=2, normalization="caffe")
    summary = train(cfg, tmp_path, echo=quiet)
    assert summary["epochs_done"] == 2 and summary["best_epoch"] in (1, 2)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    for e in log:
        assert e["loss"] > 0 and e["lr"] > 0 and e["seconds"] > 0
        assert 0 <= e["val"]["mean_iou"] <= 1 and set(e["val"]["per_class_iou"]) == {
            "background",
            "disc",
            "box",
        }

    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)  # plain data only
    assert ckpt["epoch"] == 2 and ckpt["train_config"]["epochs"] == 2 and "optimizer" in ckpt
    model, card, best = model_from_checkpoint(tmp_path / "best.pt")
    assert best["best_miou"] == pytest.approx(summary["best_mean_iou"])
    assert card.class_names == ("background", "disc", "box") and card.training_dataset == "synthetic"
    assert card.normalization == Normalization.preset("caffe") and card.training_resolution == (32, 32)
    assert card.palette == build_dataset("synthetic", num_classes=3).palette
    assert card.width == 0.0625 and card.padding == "same" and card.checkpoint_sha256
    assert ModelCard.from_dict(card.to_dict()) == card


def test_resume_is_exact(tmp_path):
    cfg = TrainConfig(**TINY, epochs=3, scale_range=(0.75, 1.25), crop=(24, 24))
    straight = tmp_path / "straight"
    train(cfg, straight, echo=quiet)

    parts = tmp_path / "parts"
    first = train(cfg, parts, max_minutes=0, echo=quiet)  # stops after epoch 1, like a crash after saving
    assert first["stopped_early"] and first["epochs_done"] == 1
    stored, _ = resume_config(parts)
    assert stored == cfg
    train(stored, parts, resume=True, echo=quiet)

    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(parts / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    log = [json.loads(line)["epoch"] for line in (parts / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]


def test_resume_without_last_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(FcnDeployError, match="nothing to resume"):
        resume_config(tmp_path)


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.tmp").write_bytes(b"not ours")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".last.pt.abc123.tmp"] and (tmp_path / "keep.tmp").exists()


def test_init_from_staged_and_wrong_variant(tmp_path):
    src = tmp_path / "fcn16s"
    train(TrainConfig(**{**TINY, "variant": "fcn16s"}, epochs=1), src, echo=quiet)
    staged = TrainConfig(**TINY, epochs=1, init_from=str(src / "last.pt"))
    train(staged, tmp_path / "fcn8s", echo=quiet)
    wrong = TrainConfig(**{**TINY, "variant": "fcn32s"}, epochs=1, init_from=str(src / "last.pt"))
    with pytest.raises(FcnDeployError, match="fcn16s checkpoint"):
        train(wrong, tmp_path / "fcn32s", echo=quiet)


def test_evaluate_model_perfect_predictor_scores_one():
    ds = build_dataset("synthetic", split="val", num_classes=3, size=(32, 32), length=3)

    class Oracle(torch.nn.Module):
        """Logits that reproduce the labels of the image it is given (looked up by pixel content)."""

        def __init__(self) -> None:
            super().__init__()
            self.lookup = {}
            norm = Normalization.preset("imagenet")
            from fcn_deploy.core.preprocess import preprocess

            for i in range(len(ds)):
                image, labels = ds[i]
                self.lookup[preprocess(image, norm).tobytes()] = torch.from_numpy(labels.astype("int64"))

        def forward(self, x):
            labels = self.lookup[x.numpy().tobytes()]
            return torch.nn.functional.one_hot(labels, 3).permute(2, 0, 1)[None].float()

    m = evaluate_model(Oracle(), ds, Normalization.preset("imagenet"))
    assert m["num_images"] == 3
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert m[key] == pytest.approx(1.0)


def test_sgd_paper_recipe_and_accumulation(tmp_path):
    cfg = TrainConfig(**TINY, epochs=1, optimizer="sgd", schedule="fixed", loss_reduction="sum", accumulate=2)
    train(cfg, tmp_path, echo=quiet)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["scheduler"]["last_epoch"] == 1  # 8 images / batch 4 = 2 batches = 1 accumulated step
    weights, biases = ckpt["optimizer"]["param_groups"]
    assert weights["lr"] == 1e-14 and biases["lr"] == 2e-14  # fcn8s reference solver, fixed schedule
    assert weights["momentum"] == 0.99 and weights["weight_decay"] == 5e-4 and biases["weight_decay"] == 0.0
    log = json.loads((tmp_path / "log.jsonl").read_text())
    assert log["loss"] > 100  # summed over the pixels of an image, not averaged


def test_missing_backbone_weights_is_a_user_error(tmp_path):
    cfg = TrainConfig(**TINY, epochs=1, backbone_weights=str(tmp_path / "vgg16.pth"))
    with pytest.raises(FcnDeployError, match="vgg16.pth: no such file"):
        train(cfg, tmp_path / "out", echo=quiet)


# --- the config and the run directory ------------------------------------------------------------------------
def test_train_config_takes_the_model_config_and_the_recipe_defaults():
    arch = ModelConfig()
    cfg = TrainConfig()
    assert (cfg.variant, cfg.width, cfg.batch_norm) == (arch.variant, arch.width, arch.batch_norm)
    assert cfg.model_config(5) == ModelConfig(cfg.variant, 5, cfg.width, cfg.padding, cfg.batch_norm)
    assert (cfg.schedule, cfg.loss_reduction) == ("cosine", "mean")
    sgd = TrainConfig(optimizer="sgd")
    assert (sgd.schedule, sgd.loss_reduction) == ("fixed", "sum") and sgd.resolved_lr == 1e-14
    assert TrainConfig.from_dict(sgd.to_dict()) == sgd  # stored resolved, so --resume never re-derives it
    with pytest.raises(FcnDeployError, match="unknown padding"):
        TrainConfig(padding="valid")
    with pytest.raises(FcnDeployError, match="unknown variant"):
        TrainConfig(variant="fcn4s")


def test_a_new_run_never_overwrites_another(tmp_path):
    cfg = TrainConfig(**TINY, epochs=1)
    train(cfg, tmp_path, echo=quiet)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(FcnDeployError, match="last.pt exists.*--resume"):
        train(cfg, tmp_path, echo=quiet)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_checkpoint_written_before_the_card_held_the_whole_config_still_loads(tmp_path):
    """Checkpoint format 1 as older versions wrote it: dict model_config, a card without learn_upsampling."""
    config = ModelConfig("fcn32s", 3, 0.0625, "same", learn_upsampling=True)
    model = build_model(config)
    card = ModelCard.from_config(config).to_dict()
    del card["learn_upsampling"]
    card.update(min_shape=[32, 32], opt_shape=[360, 480], max_shape=[1080, 1920])
    payload = {
        "format": "fcn-deploy-checkpoint", "version": 1, "model_config": dataclasses.asdict(config),
        "model_card": card, "state_dict": model.state_dict(),
    }  # fmt: skip
    torch.save(payload, tmp_path / "old.pt")
    loaded, loaded_card, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert loaded.config == config and loaded_card.config == config  # the stored model_config fills the card
    assert loaded_card.max_shape == (1080, 1920) and loaded_card.checkpoint_sha256
