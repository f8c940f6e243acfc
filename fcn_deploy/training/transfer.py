"""Weight transfer: ImageNet VGG16 (torchvision layout) into the trunk, and staged 32s -> 16s -> 8s init."""

from __future__ import annotations

import torch

from fcn_deploy.core.errors import FcnDeployError
from fcn_deploy.training.fcn import FCN, VGG_STAGES

# torchvision vgg16 `features.N` index of each of the 13 convolutions, in order.
_TV_FEATURE_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# Which earlier variant each variant may be initialised from (CVPR 4.2 staged training), besides itself.
STAGED_FROM = {"fcn16s": ("fcn32s",), "fcn8s": ("fcn16s",), "fcn8s-atonce": (), "fcn32s": ()}


@torch.no_grad()
def transfer_vgg16(model: FCN, state: dict[str, torch.Tensor], source: str = "VGG16 weights") -> None:
    """Copy torchvision VGG16 (cfg D, no BN) weights: 13 convs, fc6 <- classifier.0, fc7 <- classifier.3."""
    if not isinstance(state, dict):
        raise FcnDeployError(f"{source}: expected a state dict of tensors, got {type(state).__name__}")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    conv_names = [name for stage in VGG_STAGES for name, _, _ in stage]
    pairs = [(f"features.{i}", n) for i, n in zip(_TV_FEATURE_INDEX, conv_names, strict=True)]
    pairs += [("classifier.0", "fc6"), ("classifier.3", "fc7")]
    missing = [f"{src}.{p}" for src, _ in pairs for p in ("weight", "bias") if f"{src}.{p}" not in state]
    if missing:
        raise FcnDeployError(
            f"{source}: missing keys {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}; "
            "expected torchvision's vgg16 state dict (features.N / classifier.N)"
        )
    for src, dst in pairs:
        layer = getattr(model, dst)
        for p in ("weight", "bias"):
            t = state[f"{src}.{p}"]
            target = getattr(layer, p)
            if not isinstance(t, torch.Tensor):
                raise FcnDeployError(f"{source}: {src}.{p} is not a tensor")
            fc_reshape = t.dim() == 2 and target.dim() == 4 and t.numel() == target.numel()
            if t.shape != target.shape and not fc_reshape:
                raise FcnDeployError(
                    f"{source}: {src}.{p} has shape {tuple(t.shape)}, the model needs {tuple(target.shape)} "
                    "(VGG16 transfer needs --width 1.0 and torchvision's vgg16 layout)"
                )
            # fc (out, C*7*7) -> conv (out, C, 7, 7): torchvision flattens C, H, W in that order.
            target.copy_(t.reshape(target.shape).to(target.dtype))


@torch.no_grad()
def init_from(model: FCN, state: dict[str, torch.Tensor], from_variant: str, source: str = "checkpoint") -> list[str]:
    """Staged init: copy every same-named tensor of equal shape; new skip scorers stay zero. Returns copied keys."""
    variant = model.config.variant
    if from_variant != variant and from_variant not in STAGED_FROM[variant]:
        allowed = ", ".join((variant,) + STAGED_FROM[variant])
        raise FcnDeployError(
            f"{source}: is a {from_variant} checkpoint; --init-from for {variant} takes a checkpoint of {allowed}"
        )
    own = model.state_dict()
    copied = []
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            own[key].copy_(value)
            copied.append(key)
        elif key in own and not key.startswith("upscore"):
            raise FcnDeployError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model needs {tuple(own[key].shape)}; "
                "width, padding, batch norm and classes must match"
            )
    if not copied:
        raise FcnDeployError(f"{source}: no tensor matches this model; is it an fcn-deploy checkpoint?")
    return copied
