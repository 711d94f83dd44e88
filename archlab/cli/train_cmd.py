"""``archlab train MODEL --data SPEC``: train a model briefly (or not) and report."""
from __future__ import annotations

import argparse
import json
import math
import sys

from archlab.cli.args import input_shape, output_path, positive_float, positive_int, seed, zoom_range

DEFAULT_DATA = "scenes"


def add_parser(sub) -> None:
    from archlab.train.config import INITS, LOSSES, OPTIMIZERS, TrainConfig

    d = TrainConfig()
    s = sub.add_parser("train", help="train a model on a data set (default: the embedded segmentation task)",
                       description="Train MODEL on --data and print the validation metrics after every epoch. "
                                   "MODEL is anything `archlab analyze` takes. Data specs: scenes and shapes "
                                   "(embedded, generated), voc:ROOT, cityscapes:ROOT, camvid:ROOT, ade20k:ROOT, "
                                   "folder:ROOT, cifar10:ROOT, imagefolder:ROOT (docs/data.md).")
    s.add_argument("model", help="zoo name, description file (.yaml), torchvision:NAME or package.module:callable")
    s.add_argument("--data", default=DEFAULT_DATA, metavar="SPEC",
                   help=f"data set spec (default {DEFAULT_DATA}: the embedded segmentation task)")
    budget = s.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"passes over the train split (default {d.epochs})")
    budget.add_argument("--steps", type=positive_int, default=None, help="optimizer steps instead of epochs")
    s.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    s.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default: 3e-3 adamw, 0.05 sgd)")
    s.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"default {d.optimizer}")
    s.add_argument("--loss", choices=LOSSES, default=d.loss, help="segmentation loss (default ce: cross-entropy)")
    s.add_argument("--no-augment", action="store_true", help="train without scale-crop/flip augmentation")
    s.add_argument("--scale", metavar="LO,HI", type=zoom_range, default=None,
                   help="zoom range of the segmentation scale-crop (default: the data's; 0.5,2 for "
                        "real layouts, 1,1 for the embedded scenes)")
    s.add_argument("--init", choices=INITS, default=d.init,
                   help="weights' init: auto (torchvision's for torchvision's families, PyTorch's for "
                        "archlab's own nets; default), torchvision or pytorch")
    s.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:K")
    s.add_argument("--input", metavar="CxHxW", type=input_shape,
                   help="model input and data size (default: the model's for files, the data's for zoo models)")
    s.add_argument("--num-classes", type=positive_int, default=None,
                   help="classes of a zoo/torchvision model (default: the data's)")
    s.add_argument("--compile", action="store_true", help="torch.compile the model first")
    s.add_argument("--deterministic", action="store_true", help="CUDA: deterministic kernels (slower)")
    s.add_argument("--seed", type=seed, default=0, help="initialisation, data generation, shuffling (default 0)")
    s.add_argument("--save", metavar="FILE", type=output_path, help="write the trained state_dict here (torch.save)")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)


def _configurable(spec: str) -> bool:
    """Zoo, torchvision and nb201 models are built at the data's size and class count."""
    from archlab.zoo.registry import find_model

    return find_model(spec) is not None or spec.startswith(("torchvision:", "nb201:"))


def _model_and_data(args: argparse.Namespace):
    from archlab.resolve import resolve_model
    from archlab.train.data import load_data

    if _configurable(args.model):
        size = tuple(args.input[1:]) if args.input else None
        data = load_data(args.data, size=size, seed=args.seed)
        shape = tuple(args.input) if args.input else data.input_shape
        cfg = {"num_classes": args.num_classes or data.num_classes}
        return resolve_model(args.model, input_shape=shape, **cfg), data
    graph = resolve_model(args.model, input_shape=tuple(args.input) if args.input else None)
    shape = tuple(graph.input_nodes[0].attrs["shape"]) if len(graph.input_nodes) == 1 else None
    data = load_data(args.data, size=tuple(shape[1:]) if shape and len(shape) == 3 else None, seed=args.seed)
    return graph, data


def cmd_train(args: argparse.Namespace) -> int:
    """Train, print a progress bar and a summary (or one JSON object); exit 0."""
    import torch

    from archlab.train import TrainConfig, train
    from archlab.train.trainer import check_fit, resolve_device

    config = TrainConfig(epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, loss=args.loss, augment=not args.no_augment, scale=args.scale,
                         init=args.init, device=args.device,
                         compile=args.compile, deterministic=args.deterministic, seed=args.seed).resolved()
    device = resolve_device(args.device)  # before loading anything: `--device cuda` without a GPU is refused now
    graph, data = _model_and_data(args)
    check_fit(graph, data)
    if args.format == "table":
        print(f"training {graph.name} ({graph.num_params():,} params) on {data.spec}: {len(data.train):,} train / "
              f"{len(data.val):,} val images {'x'.join(map(str, data.input_shape))}, {data.num_classes} classes, "
              f"{device}", file=sys.stderr)
    result = train(graph, data, config, progress=False if args.no_progress else None)
    if args.save:
        torch.save(result.module.state_dict(), args.save)
    if args.format == "json":
        d = result.to_dict()
        d["model"] = args.model
        d["params"] = graph.num_params()
        print(json.dumps(d, indent=2, default=_json_default))
    else:
        print(_summary(result, graph))
    if args.save:
        print(f"wrote {args.save}", file=sys.stderr)
    return 0


def _json_default(o):
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _summary(result, graph) -> str:
    from archlab.cli.table import render

    keys = list(result.final)
    rows = [[h.epoch, h.step, f"{h.loss:.4f}", f"{h.lr:.2e}", *(_fmt(h.val[k]) for k in keys),
             f"{h.images_per_s:,.0f}"] for h in result.history]
    table = render(["epoch", "step", "loss", "lr", *keys, "img/s"], rows, align="rrrr" + "r" * len(keys) + "r")
    final = ", ".join(f"{k} {_fmt(v)}" for k, v in result.final.items())
    stop = " (stopped early)" if result.stopped_early else ""
    return (f"{table}\n\n{result.model} on {result.data}, {result.device}: {result.epochs} epochs{stop}, "
            f"{result.steps} steps in {result.train_s:.1f} s ({result.images_per_s:,.0f} images/s) "
            f"+ {result.eval_s:.1f} s evaluation\nfinal: {final}")
