"""The models an import coverage run checks (:mod:`archlab.torchio.coverage`):
torchvision's whole classification and segmentation lists and timm models
across families, each with its default input, built without downloading
anything."""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

Shape = tuple[int, ...]

DEFAULT_INPUT: Shape = (3, 224, 224)

# Every name of torchvision.models.list_models(module=torchvision.models) and of
# list_models(module=torchvision.models.segmentation), torchvision 0.29
# (tests/test_import_coverage.py holds this list to torchvision's).
TORCHVISION_MODELS: tuple[str, ...] = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s",
    "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf",
    "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf",
    "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1",
    "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32",
    "wide_resnet101_2", "wide_resnet50_2",
    # segmentation (aux_loss left at its default: no auxiliary head without weights)
    "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet101", "deeplabv3_resnet50",
    "fcn_resnet101", "fcn_resnet50", "lraspp_mobilenet_v3_large",
)
# Inputs other than DEFAULT_INPUT. With weights=None every ViT builder defaults to
# image_size 224 (vit_h_14's 518 comes with its SWAG weights only); Swin and
# MaxViT take 224; segmentation models take any size, 224 keeps them quick.
TORCHVISION_INPUT: dict[str, Shape] = {"inception_v3": (3, 299, 299)}

# timm 1.0.31 names, small variants first; the input is each model's
# pretrained_cfg["input_size"]. Every name here builds with pretrained=False.
TIMM_MODELS: tuple[str, ...] = (
    # ResNet and its variants (D stem, SE/SK attention, split attention, Res2Net, pre-act)
    "resnet18", "resnet50", "resnet18d", "resnet50d", "seresnet50", "legacy_seresnet18", "skresnet18",
    "resnest14d", "seresnext26d_32x4d", "res2net50_26w_4s", "resnetv2_50", "eca_resnet33ts",
    "nf_resnet26", "gernet_s", "regnetx_002", "regnety_002", "regnetz_b16",
    # EfficientNet / MobileNet family and NAS nets
    "efficientnet_b0", "tf_efficientnet_b0", "efficientnet_lite0", "tinynet_a", "mobilenetv2_100",
    "mobilenetv3_large_100", "mobilenetv3_small_050", "mobilenetv4_conv_small", "mnasnet_100",
    "semnasnet_075", "spnasnet_100", "fbnetc_100", "hardcorenas_a", "mixnet_s", "ghostnet_100",
    "ghostnetv2_100", "lcnet_050", "rexnet_100", "repvit_m1",
    # classic CNNs
    "vgg11", "densenet121", "dla34", "dpn68", "inception_v3", "inception_v4", "inception_resnet_v2",
    "xception41", "selecsls42b", "hrnet_w18_small", "ese_vovnet19b_dw", "hgnetv2_b0",
    # CSP / Darknet
    "cspresnet50", "cspdarknet53", "darknet53", "cs3darknet_s",
    # re-parameterisable
    "repvgg_a0", "mobileone_s0", "fastvit_t8",
    # ConvNeXt and metaformers
    "convnext_atto", "convnextv2_atto", "poolformer_s12", "edgenext_xx_small",
    # transformers and hybrids
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
    "swin_tiny_patch4_window7_224", "maxvit_pico_rw_256", "levit_128s", "coat_lite_tiny",
    "pit_ti_224", "pvt_v2_b0", "xcit_nano_12_p16_224", "mobilevit_xxs", "efficientformer_l1",
    "tiny_vit_5m_224", "efficientvit_b0", "botnet26t_256", "halonet26t",
    # MLPs
    "mixer_s16_224", "resmlp_12_224",
)
SOURCES = ("torchvision", "timm")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a coverage run: its source library and name there."""

    source: str  # "torchvision" or "timm"
    name: str

    def input_shape(self) -> Shape:
        """The model's default input (C, H, W), read without building it."""
        if self.source == "torchvision":
            return TORCHVISION_INPUT.get(self.name, DEFAULT_INPUT)
        import timm

        return tuple(timm.get_pretrained_cfg(self.name).input_size)

    def build(self):
        """The model with fresh random weights (nothing downloaded), in eval mode;
        built on the current default device (``with torch.device("meta")``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # builders' FutureWarnings about default inits
            if self.source == "torchvision":
                import inspect

                import torchvision

                builder = torchvision.models.get_model_builder(self.name)
                kw = {"weights_backbone": None} if "weights_backbone" in inspect.signature(builder).parameters else {}
                return builder(weights=None, **kw).eval()
            import timm

            return timm.create_model(self.name, pretrained=False).eval()


def model_specs(source: str = "all", only: Iterable[str] | None = None) -> list[ModelSpec]:
    """The models of ``source`` (``torchvision``, ``timm`` or ``all``), or only
    those named: ``resnet18`` (from every list that has it) or ``timm:resnet18``."""
    if source not in (*SOURCES, "all"):
        raise ValueError(f"unknown source {source!r}; choose torchvision, timm or all")
    specs = [ModelSpec(s, n) for s, names in (("torchvision", TORCHVISION_MODELS), ("timm", TIMM_MODELS))
             if source in (s, "all") for n in names]
    if only is not None:
        wanted = set(only)
        specs = [s for s in specs if s.name in wanted or f"{s.source}:{s.name}" in wanted]
    return specs


def meta_params(spec: ModelSpec) -> int:
    """``spec``'s parameter count without holding its weights: built on the meta
    device, or (builders that compute with tensors, such as RegNet's widths)
    with each parameter and buffer moved to meta as it is registered."""
    import torch
    from torch.nn.modules import module as nn_module

    try:
        with torch.device("meta"):
            model = spec.build()
    except Exception:  # noqa: BLE001 - "Cannot copy out of meta tensor" in the builder's own arithmetic
        def param(mod, name, p):
            return None if p is None else torch.nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

        def buffer(mod, name, b):
            return None if b is None else b.to("meta")

        hooks = [nn_module.register_module_parameter_registration_hook(param),
                 nn_module.register_module_buffer_registration_hook(buffer)]
        try:
            model = spec.build()
        finally:
            for h in hooks:
                h.remove()
    return sum(p.numel() for p in model.parameters())
