"""``pixelwise <command>``: train, eval, predict, export, models, datasets.

Errors caused by the user's input (``PixelwiseError``) are printed as one ``error: ...`` line with exit status 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

from pixelwise.errors import PixelwiseError


def user_message(error: PixelwiseError) -> str:
    """The error's own message. An error raised in a DataLoader worker comes back wrapped by PyTorch with the
    worker's traceback in its text; the last line of that text is the message the user needs."""
    text = str(error)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def _train(args: argparse.Namespace) -> int:
    from pixelwise.engine import distributed
    from pixelwise.engine.config import TrainConfig, apply_overrides, load_yaml
    from pixelwise.engine.train import Trainer, TrainingInterrupted

    values = load_yaml(args.config) if args.config else {}
    cli = {
        "data": args.data,
        "model": args.model,
        "epochs": args.epochs,
        "steps": args.steps,
        "crop_size": args.crop_size,
        "batch_size": args.batch_size,
        "class_weights": args.class_weights,
        "device": args.device,
        "num_workers": args.workers,
    }
    for key, value in cli.items():
        if value is not None:
            values[key] = value
    if args.epochs is not None:
        values.pop("steps", None)
    if args.steps is not None:
        values.pop("epochs", None)
    values = apply_overrides(values, args.set or [])
    cfg = TrainConfig.from_dict(values, source=args.config or "the command line")
    trainer = Trainer(cfg, args.out, resume=args.resume, progress=not args.quiet)
    main = trainer.world.is_main  # under torchrun, rank 0 alone prints
    if main:
        procs = f" x {trainer.world.size} processes" if trainer.world.distributed else ""
        items = "objects" if trainer.task == "prompt" else "images"  # a click model's sample is one object
        classes = "" if trainer.task == "prompt" else f", {trainer.num_classes} classes"
        print(
            f"training {cfg.model} on {cfg.data} ({len(trainer.train_set)} {cfg.train_split} {items}{classes}) for "
            f"{trainer.total_steps} steps ({trainer.num_epochs} epochs, {trainer.global_batch} {items} per step) on "
            f"{trainer.device}{procs}; writing {args.out}",
            flush=True,
        )
    try:
        metrics = trainer.fit()
    except TrainingInterrupted as stop:
        if main:
            print(f"\n{stop}", flush=True)
        return 128 + stop.signum  # the shell's code for "ended by this signal", which schedulers read
    finally:
        distributed.teardown(trainer.world)
    if not main:
        return 0
    if metrics is None:
        print("nothing to do: the run in", args.out, "is already complete")
        return 0
    print(f"\nvalidation ({cfg.val_split}) after {trainer.step} steps:")
    print(_metrics_table(trainer.task, metrics, trainer.classes))
    best = (f"{trainer.best_score:.2f} (clicks, lower is better)" if trainer.task == "prompt"
            else f"{100 * trainer.best_score:.2f}")
    print(f"best val {trainer.score_name} {best}; checkpoints in {args.out}/best.pt and last.pt")
    return 0


def _metrics_table(task: str, metrics: dict, classes: list[str]) -> str:
    if task == "prompt":
        from pixelwise.prompt.click_training import format_noc_table

        return format_noc_table(metrics)
    if task == "instance":
        from pixelwise.instance_metrics import format_instance_table

        return format_instance_table(metrics)
    from pixelwise.metrics import format_table

    return format_table(metrics, classes)


def _eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from pixelwise.data import build_dataset, pad_collate
    from pixelwise.metrics import format_table, json_safe

    predictor = _predictor(args)
    card = predictor.card
    if card.task == "instance":
        return _eval_instances(args, predictor)
    if card.task == "prompt":
        return _eval_prompt(args, predictor)
    ds = build_dataset(args.data, args.split, transforms=predictor.transform, require_masks=True,
                       **_data_options(args))
    card.check_dataset(list(ds.classes), ds.in_channels, f"{args.data} ({args.split})", args.checkpoint)
    test_time = predictor.options
    if args.report:
        from pixelwise.engine.report import SINGLE, TTA, evaluate_for_report, write_report

        # One pass scores both columns of the report; the printed table is the column of the options asked for.
        with torch.inference_mode():
            data = evaluate_for_report(predictor, ds, args.batch_size, args.workers, progress=not args.quiet)
            page = write_report(args.report, data, predictor, ds, args.checkpoint,
                                f"{Path(args.checkpoint).parent.name or args.checkpoint} on {args.data} "
                                f"({args.split})", num_images=args.report_images)
        metrics = data.metrics[TTA if test_time.augmented else SINGLE]
        test_time = data.options[TTA if test_time.augmented else SINGLE]
    else:
        loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers,
                            collate_fn=partial(pad_collate, ignore_index=card.ignore_index))
        with torch.inference_mode():
            metrics = predictor.evaluate(loader, progress=not args.quiet)
    print(f"{args.checkpoint} on {args.data} ({args.split}, {len(ds)} images; {test_time.describe()}):")
    print(format_table(metrics, list(ds.classes)))
    if args.json:
        out = {**metrics, "classes": list(ds.classes), "checkpoint": str(args.checkpoint), "data": str(args.data),
               "split": args.split, "inference": test_time.describe()}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(out), indent=2))
        print(f"wrote {args.json}")
    if args.report:
        print(f"wrote the report {page} ({SINGLE} {100 * data.metrics[SINGLE]['mIoU']:.2f} % mIoU, {TTA} "
              f"{100 * data.metrics[TTA]['mIoU']:.2f} %: {data.options[TTA].describe()})")
    return 0


def _eval_instances(args: argparse.Namespace, predictor) -> int:
    """``eval`` of an instance model: COCO box and mask AP by pycocotools' COCOeval."""
    import torch
    from torch.utils.data import DataLoader

    from pixelwise.data import build_dataset
    from pixelwise.data.instances import instance_collate, instance_eval_transforms
    from pixelwise.errors import ConfigError
    from pixelwise.metrics import json_safe

    if args.report:
        raise ConfigError("--report draws semantic metrics; for an instance model use --json (COCO AP per class)")
    ds = build_dataset(args.data, args.split, transforms=instance_eval_transforms(), require_masks=True,
                       **_data_options(args))
    predictor.card.check_dataset(list(ds.classes), ds.in_channels, f"{args.data} ({args.split})", args.checkpoint)
    loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers, collate_fn=instance_collate)
    with torch.inference_mode():
        metrics = predictor.evaluate(loader, progress=not args.quiet, dataset=ds, max_detections=args.max_detections)
    print(f"{args.checkpoint} on {args.data} ({args.split}, {len(ds)} images; COCO AP by pycocotools, at most "
          f"{args.max_detections} detections per image):")
    print(_metrics_table("instance", metrics, list(ds.classes)))
    if args.json:
        out = {**metrics, "classes": list(ds.classes), "checkpoint": str(args.checkpoint), "data": str(args.data),
               "split": args.split}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(out), indent=2))
        print(f"wrote {args.json}")
    return 0


def _eval_prompt(args: argparse.Namespace, predictor) -> int:
    """``eval`` of a click model: the click protocol (RITM's simulated user, up to --max-clicks clicks per object)
    over the split's objects, NoC@85 / NoC@90 / NoF / mIoU@k."""
    import torch

    from pixelwise.data.objects import build_object_dataset, object_eval_transforms
    from pixelwise.errors import ConfigError
    from pixelwise.metrics import json_safe
    from pixelwise.prompt.click_training import evaluate_clicks, summarize_clicks

    if args.report:
        raise ConfigError("--report draws semantic metrics; for a click model use --json (NoC@85, NoC@90, mIoU@k)")
    if args.max_objects is not None and args.max_objects < 1:
        raise ConfigError(f"--max-objects must be >= 1, got {args.max_objects}")
    if args.max_clicks < 1:
        raise ConfigError(f"--max-clicks must be >= 1, got {args.max_clicks}")
    card = predictor.card
    ds = build_object_dataset(args.data, args.split, transforms=object_eval_transforms(card.mean, card.std),
                              ignore_index=card.ignore_index, **_data_options(args))
    card.check_dataset(list(ds.classes), ds.in_channels, f"{args.data} ({args.split})", args.checkpoint)
    with torch.inference_mode():
        ious = evaluate_clicks(predictor.model, ds, predictor.device, args.max_clicks, args.max_objects,
                               progress=not args.quiet)
    metrics = summarize_clicks(ious, args.max_clicks)
    capped = f" ({len(ious)} of {len(ds)}, spread evenly)" if len(ious) < len(ds) else ""
    print(f"{args.checkpoint} on {args.data} ({args.split}, {len(ious)} objects{capped}; click protocol, at most "
          f"{args.max_clicks} clicks per object):")
    print(_metrics_table("prompt", metrics, list(ds.classes)))
    if args.json:
        out = {**metrics, "checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(out), indent=2))
        print(f"wrote {args.json}")
    return 0


def _predictor(args: argparse.Namespace):
    """The Predictor of --checkpoint on --device with the options of --mode, --crop, --stride, --tta and --scales
    (a slide without --crop uses the training crop on the checkpoint's card)."""
    from pixelwise.engine.predictor import Predictor

    return Predictor.from_checkpoint(args.checkpoint, args.device, mode=args.mode, crop=args.crop,
                                     stride=args.stride, tta=args.tta, scales=args.scales)


def _predict(args: argparse.Namespace) -> int:
    from pixelwise.engine.predict import predict_files

    predictor = _predictor(args)
    written = predict_files(predictor, args.inputs, args.out, progress=not args.quiet, batch_size=args.batch_size,
                            save_probs=args.probs)
    if predictor.task == "instance":
        print(f"wrote {len(written)} instance-id PNGs (16-bit) with JSON instances and overlays, and "
              f"predictions.json (COCO results), to {args.out}")
        return 0
    extra = " and probabilities (.npy)" if args.probs else ""
    print(f"wrote {len(written)} class-id PNGs with color masks, overlays{extra} to {args.out} "
          f"({predictor.options.describe()})")
    return 0


def _segment(args: argparse.Namespace) -> int:
    """The object that --point clicks and a --box pick out in one image, by a click model or SAM."""
    from pixelwise.errors import ConfigError
    from pixelwise.prompt.segment import load_prompt_model, parse_box, parse_point, segment_file

    points = [parse_point(text) for text in args.point or []]
    box = parse_box(args.box) if args.box is not None else None
    if not points and box is None:
        raise ConfigError("no prompt: give at least one --point x,y on the object (x,y,0 for a background point), "
                          "or a --box x1,y1,x2,y2 with a SAM checkpoint")
    model = load_prompt_model(args.checkpoint, args.device, args.sam_variant)
    summary = segment_file(model, args.image, points, box, args.out, multimask=args.multimask)
    best = summary["masks"][summary["best"]]
    masks = ", ".join(m["file"] for m in summary["masks"])
    print(f"wrote {masks}, {summary['overlay']} and {Path(args.image).stem}.json to {args.out} ({model.name}; "
          f"{len(points)} point(s){' and a box' if box is not None else ''}; mask {best['area']:,} pixels = "
          f"{100 * best['area_fraction']:.1f} % of the image, {model.score_name} {best['score']:.3f})")
    return 0


def _export(args: argparse.Namespace) -> int:
    """Export, then check the file against PyTorch on --check images (each at its own size)."""
    import torch

    from pixelwise.data.io import read_image
    from pixelwise.engine.export import compare_logits, deploy_model, export_model, onnx_parity

    out = export_model(args.checkpoint, args.out, args.format, *([tuple(args.size)] if args.size else []))
    print(f"wrote {out} ({args.format}; input float32 (N, C, H, W) pixel values 0..255, output logits (N, K, H, W); "
          "dynamic batch, height and width)")
    if not args.check:
        return 0
    deploy, card = deploy_model(args.checkpoint)
    loaded = torch.jit.load(str(out)) if args.format == "torchscript" else None
    for path in args.check:
        images = read_image(path, card.in_channels).float().unsqueeze(0)
        if loaded is None:
            parity = onnx_parity(out, deploy, images)
        else:
            with torch.no_grad():
                parity = compare_logits(loaded(images), deploy, images)
        runtime = "onnxruntime" if loaded is None else "TorchScript"
        print(f"{path} ({images.shape[-1]}x{images.shape[-2]}): {runtime} vs PyTorch max |logit diff| "
              f"{parity['max_abs_diff']:.2e}, argmax agreement {100 * parity['argmax_agreement']:.3f} %")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """The web demo and HTTP API (pixelwise.serve) on --host:--port, until Ctrl-C. FastAPI and uvicorn are imported
    here, so that the rest of the command line works without them."""
    import ipaddress
    import socket

    from pixelwise.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import uvicorn

        try:
            import python_multipart  # noqa: F401  (python-multipart >= 0.0.13)
        except ImportError:
            import multipart  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"pixelwise serve needs FastAPI, uvicorn and python-multipart ({e}): "
                          "pip install 'pixelwise[serve]'") from e
    from pixelwise.serve import create_app

    options = {"max_pixels": args.max_pixels, "alpha": args.alpha}
    if args.max_upload_mb is not None:
        if not args.max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
        options["max_upload_bytes"] = max(1, round(args.max_upload_mb * 1e6))
    from pixelwise.prompt.segment import is_sam_checkpoint, load_prompt_model

    if args.sam_variant is not None or is_sam_checkpoint(args.checkpoint):
        if (args.mode, args.crop, args.stride, args.tta, args.scales) != ("whole", None, None, False, None):
            raise ConfigError("SAM runs on the whole image, one prompt at a time: leave out --mode, --crop, "
                              "--stride, --tta and --scales")
        model = load_prompt_model(args.checkpoint, args.device, args.sam_variant)
    else:
        model = _predictor(args)
    # Options left out take create_app's defaults, the one place they are set.
    app = create_app(model, save_to=args.save_to, **{k: v for k, v in options.items() if v is not None})
    sock = None
    try:
        family, _, _, _, address = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connections queue from now on, before uvicorn's loop starts accepting them
    except OSError as e:
        if sock is not None:
            sock.close()
        raise ConfigError(f"cannot listen on {args.host} port {args.port} ({e.strerror or e})") from e
    host, port = sock.getsockname()[:2]
    try:
        public = not ipaddress.ip_address(host).is_loopback
    except ValueError:
        public = True
    if public:
        print(f"note: listening on {host}, reachable from other machines; the demo has no authentication",
              file=sys.stderr)
    api = ("/api/prompt/image, /api/prompt/predict, /api/prompt/save" if app.state.serve.info.task == "prompt"
           else "/api/segment, /api/segment.png")
    print(f"serving {args.checkpoint} on http://{f'[{host}]' if ':' in host else host}:{port}/ "
          f"({app.state.serve.info.device}; API: {api}, /api/info; schema: /openapi.json); Ctrl-C stops", flush=True)
    config = uvicorn.Config(app, log_level="warning" if args.quiet else "info", access_log=not args.quiet)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _models(args: argparse.Namespace) -> int:
    from pixelwise.models import get_model_info, list_models, model_complexity

    height, width = args.size
    print(f"| model | paper | params ({args.num_classes} classes) | GFLOPs at {height}x{width} |\n|---|---|---|---|")
    for name in list_models(args.filter):
        info = get_model_info(name)
        cost = model_complexity(name, num_classes=args.num_classes, size=(height, width))
        flops = f"{cost['flops'] / 1e9:.1f}" if cost["flops"] is not None else "n/a (instance model)"
        print(f"| {name} | {info['paper']} | {cost['params'] / 1e6:.1f}M | {flops} |")
    print(f"\nGFLOPs: one forward pass of a 3x{height}x{width} image, 2 FLOPs per multiply-add of convolutions and "
          "matrix products (torch.utils.flop_counter); default options of each model.")
    return 0


class _DeprecatedAlias(argparse.Action):
    """Stores the value like ``store``; given under an option string after the first (an old spelling, e.g.
    ``--colour-map`` for ``--color-map``), it also warns that the old spelling is deprecated."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None and option_string != self.option_strings[0]:
            import warnings

            warnings.warn(f"{option_string} is deprecated, use {self.option_strings[0]}", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def _data_options(args: argparse.Namespace) -> dict:
    """Dataset reader options from --binary-threshold, --color-map and --data-option KEY=VALUE."""
    from pixelwise.engine.config import apply_overrides

    options = apply_overrides({}, getattr(args, "data_option", None) or [])
    if getattr(args, "binary_threshold", None) is not None:
        options["binary_threshold"] = args.binary_threshold
    if getattr(args, "color_map", None) is not None:
        options["color_map"] = args.color_map
    return options


def _dataset_splits(root: Path, fmt: str) -> list[str]:
    if fmt == "coco":
        from pixelwise.data.instances import coco_splits

        return coco_splits(root)
    if fmt != "folder":
        return ["train", "val"]
    images = root / "images"
    return sorted(p.name for p in images.iterdir() if p.is_dir()) if images.is_dir() else []


def _datasets(args: argparse.Namespace) -> int:
    from pixelwise.data import BUILTIN_DATASETS, build_dataset, parse_data_spec
    from pixelwise.errors import DatasetError

    if args.action == "write-synthetic":
        return _write_synthetic(args)
    if args.action == "download":
        return _download(args)
    if args.action == "check":
        return _check(args)
    if args.path:
        fmt, root = parse_data_spec(args.path)
        splits = _dataset_splits(root, fmt)
        if not splits:
            raise DatasetError(f"{root} has no images/<split>/ folders")
        print(f"{root}: format {fmt!r}")
        for split in splits:
            ds = build_dataset(args.path, split, strict=False, **_data_options(args))
            print(f"{split}: {len(ds)} images, {'with' if ds.has_masks else 'WITHOUT'} masks, "
                  f"{ds.in_channels} channel(s)")
        print(f"classes ({len(ds.classes)}): {', '.join(ds.classes)}")
        return 0
    print("built-in:")
    for name, desc in BUILTIN_DATASETS.items():
        print(f"  {name}: {desc}")
    print("folder layout (pass the folder to --data): images/<split>/<id>.jpg|png, masks/<split>/<id>.png "
          "(uint8 class ids, 255 = void), classes.txt, optional <split>.txt and palette.txt")
    print("official layouts, detected (or prefix the path with voc:, cityscapes:, ade20k:): PASCAL VOC 2012 "
          "(+ SBD: split train_aug), Cityscapes (gtFine, 19 trainIds), ADE20K SceneParsing (150 classes); "
          "`pixelwise datasets download voc2012|sbd|ade20k --root DIR` fetches the public ones")
    shared = Path(os.environ.get("PIXELWISE_SHARED", Path.cwd().parent / "shared")) / "data"
    if shared.is_dir():
        print(f"folders found in {shared.resolve()}:")
        for d in sorted(shared.iterdir()):
            if (d / "classes.txt").is_file():
                print(f"  {d.resolve()}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Scan every split (or --split) and print the reports; exit status 1 when any problem was found."""
    from pixelwise.data import build_dataset, parse_data_spec
    from pixelwise.data.check import scan, scan_coco
    from pixelwise.errors import DatasetError

    if not args.path:
        raise DatasetError("pixelwise datasets check needs a dataset folder: pixelwise datasets check DIR")
    fmt, root = parse_data_spec(args.path)
    splits = args.split or _dataset_splits(root, fmt)
    if not splits:
        raise DatasetError(f"{root} has no images/<split>/ folders to check")
    problems = 0
    for split in splits:
        if fmt == "coco":  # the annotation files themselves, before a loader reads them
            report = scan_coco(root, split, progress=not args.quiet)
            problems += len(report.problems)
            print(report.format() + "\n")
            continue
        ds = build_dataset(args.path, split, strict=False, **_data_options(args))
        if not ds.has_masks:
            print(f"{root}, split {split!r}: {len(ds)} images, no masks (nothing to check)\n")
            continue
        report = scan(ds, progress=not args.quiet)
        problems += len(report.problems)
        print(report.format() + "\n")
    print(f"{problems} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0


def _download(args: argparse.Namespace) -> int:
    from pixelwise.data.download import download_dataset
    from pixelwise.errors import DatasetError

    if not args.path:
        raise DatasetError("name the dataset: pixelwise datasets download voc2012|sbd|ade20k --root DIR")
    folder = download_dataset(args.path, args.root, progress=not args.quiet, base_url=args.base_url)
    print(f"{args.path} is in {folder}")
    return 0


def _write_synthetic(args: argparse.Namespace) -> int:
    root = Path(args.path or "synthetic")
    splits = {s: args.num_images for s in args.splits}
    if args.instances:
        from pixelwise.data.instances import write_synthetic_instances

        write_synthetic_instances(root, splits, seed=args.seed)
        print(f"wrote the synthetic instances ({', '.join(args.splits)}) to {root} in the COCO layout")
        return 0
    from pixelwise.data.synthetic import write_synthetic_folder

    write_synthetic_folder(root, splits, seed=args.seed)
    print(f"wrote the synthetic dataset ({', '.join(args.splits)}) to {root} in the folder layout")
    return 0


def _inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["whole", "slide"], default="whole",
                   help="whole image, or sliding windows with overlap-averaged logits")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="slide: window size (default: the "
                   "training crop in the checkpoint), in the pixels the model sees")
    p.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide: window step (default 2/3 crop)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: scales 0.5-1.75 and a left-right "
                   "flip, softmax probabilities averaged")
    p.add_argument("--scales", type=float, nargs="+", help="test-time scales (default with --tta: 0.5 0.75 1 1.25 1.5 "
                   "1.75)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelwise", description="Semantic segmentation: train, evaluate, predict.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model; ends by printing the validation metrics")
    t.add_argument("--data", help="dataset folder, or 'synthetic'")
    t.add_argument("--model", help="model name (see `pixelwise models`)")
    t.add_argument("--out", required=True, help="run folder: log.jsonl, config.yaml, last.pt, best.pt")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps", type=int, help="optimizer steps (the poly schedule spans them)")
    t.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"))
    t.add_argument("--batch-size", type=int)
    t.add_argument("--class-weights", choices=["median-frequency"], help="SegNet's class balancing")
    t.add_argument("--config", help="YAML recipe (see configs/); options given here override it")
    t.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="override any config key, e.g. lr=0.05")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.add_argument("--device", help="cpu, cuda, cuda:1 or auto")
    t.add_argument("--workers", type=int, help="DataLoader worker processes")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a split with masks")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="dataset folder, or 'synthetic'")
    e.add_argument("--split", default="val", help="split name, optionally sliced: 'train[25:]'")
    e.add_argument("--json", help="write the metrics dict and class names here")
    e.add_argument("--max-detections", type=int, default=100, help="instance models: detections per image that "
                   "COCO AP counts (COCO's protocol: 100; raise it for images of more objects)")
    e.add_argument("--max-objects", type=int, metavar="N", help="click models: score N objects spread evenly over "
                   "the split (every len/N-th; each costs up to --max-clicks forward passes; default: all)")
    e.add_argument("--max-clicks", type=int, default=20, help="click models: the click budget per object (the "
                   "field's protocol: 20)")
    e.add_argument("--data-option", nargs="+", metavar="KEY=VALUE", help="dataset reader options, as in training's "
                   "data_kwargs, e.g. instances=connected_components or min_object_area=100")
    e.add_argument("--batch-size", type=int, default=4)
    e.add_argument("--workers", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--report", metavar="DIR", help="also write DIR/index.html: metrics single-scale and TTA side by "
                   "side, per-class IoU, confusion matrix, training curves, best and worst images (matplotlib)")
    e.add_argument("--report-images", type=int, default=4, metavar="N", help="best and worst images shown (4 each)")
    _inference_options(e)
    e.set_defaults(func=_eval)

    pr = sub.add_parser("predict", help="segment image files: class-id PNGs, color masks, overlays")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or quoted globs ('a/*.jpg')")
    pr.add_argument("--out", required=True)
    pr.add_argument("--device", default="auto")
    pr.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images)")
    pr.add_argument("--probs", action="store_true", help="also write <stem>_probs.npy: float16 (K, H, W) softmax")
    pr.add_argument("--quiet", action="store_true")
    _inference_options(pr)
    pr.set_defaults(func=_predict)

    x = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript (dynamic batch, height, width)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    x.add_argument("--out", required=True, help="the file to write (.onnx, .pt)")
    x.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="tracing example size (default 256 256)")
    x.add_argument("--check", nargs="+", metavar="IMAGE", help="compare the exported file with PyTorch on these images")
    x.set_defaults(func=_export)

    sv = sub.add_parser("serve", help="web demo and HTTP API: upload an image, see its mask, overlay and class shares")
    sv.add_argument("--checkpoint", required=True)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only; 0.0.0.0: "
                    "every interface, reachable from other machines)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one, printed)")
    sv.add_argument("--device", default="auto")
    sv.add_argument("--max-upload-mb", type=float, help="largest upload, in MB of 10^6 bytes (larger: 413; default "
                    "20)")
    sv.add_argument("--max-pixels", type=int, help="largest image, width x height (larger: 413, before decoding); "
                    "at most Pillow's decompression-bomb threshold (default 40 megapixels)")
    sv.add_argument("--alpha", type=float, help="weight of the mask color in the overlay (default 0.5)")
    sv.add_argument("--quiet", action="store_true", help="no access log")
    sv.add_argument("--sam-variant", choices=["vit_b", "vit_l", "vit_h"], help="a SAM checkpoint's variant (default: "
                    "read off its tensors' shapes)")
    sv.add_argument("--save-to", metavar="DIR", help="click models and SAM: the page's save button adds the image "
                    "and the object's mask, under the class named on the page, to the folder dataset DIR "
                    "(images/train/<id>.png, masks/train/<id>.png, classes.txt)")
    _inference_options(sv)
    sv.set_defaults(func=_serve)

    sg = sub.add_parser("segment", help="the mask of the object that clicks (and a box) pick out in one image, by a "
                        "click model or Segment Anything")
    sg.add_argument("image", metavar="IMAGE", help="the image file")
    sg.add_argument("--checkpoint", required=True, help="a click model trained by pixelwise (task prompt) or an "
                    "official SAM checkpoint (sam_vit_b_01ec64.pth, ...)")
    sg.add_argument("--point", action="append", metavar="X,Y[,LABEL]", help="a click in pixels from the top-left "
                    "corner; LABEL 1 = object (default), 0 = background; repeat for more clicks")
    sg.add_argument("--box", metavar="X1,Y1,X2,Y2", help="SAM only: a box around the object, in pixels")
    sg.add_argument("--out", required=True, help="folder for <stem>_mask.png (0/255), <stem>_overlay.png and "
                    "<stem>.json")
    sg.add_argument("--sam-variant", choices=["vit_b", "vit_l", "vit_h"], help="the SAM checkpoint's variant "
                    "(default: read off its tensors' shapes)")
    sg.add_argument("--multimask", action="store_true", help="SAM only: its three candidate masks, "
                    "<stem>_mask_<k>.png, with their predicted IoU in <stem>.json")
    sg.add_argument("--device", default="auto")
    sg.set_defaults(func=_segment)

    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("filter", nargs="?", default="", help="glob, e.g. 'unet*'")
    m.add_argument("--num-classes", type=int, default=21, help="classes of the head (default 21, PASCAL VOC)")
    m.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="input size for GFLOPs")
    m.set_defaults(func=_models)

    d = sub.add_parser("datasets", help="list datasets; describe or check a folder; download; write the synthetic one")
    d.add_argument("action", nargs="?", choices=["info", "check", "download", "write-synthetic"], default="info")
    d.add_argument("path", nargs="?", help="info, check: a dataset folder; download: voc2012, sbd or ade20k; "
                   "write-synthetic: where to write")
    d.add_argument("--split", nargs="+", help="check: the splits to scan (default: every split)")
    d.add_argument("--binary-threshold", type=int, help="read 0/255 (or JPEG) binary masks: value >= T is class 1")
    d.add_argument("--color-map", "--colour-map", action=_DeprecatedAlias,
                   help="read RGB color masks with this file: one 'R G B' line per class id (--colour-map: deprecated)")
    d.add_argument("--data-option", nargs="+", metavar="KEY=VALUE", help="other reader options, e.g. sbd_root=DIR")
    d.add_argument("--root", default="data", help="download: the folder to download and unpack into")
    d.add_argument("--base-url", help="download: a mirror that serves the archives under their file names")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    d.add_argument("--num-images", type=int, help="write-synthetic: images per split (default: the split's size)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--instances", action="store_true", help="write-synthetic: the instance set (touching and "
                   "overlapping shapes) in the COCO layout, for Mask R-CNN")
    d.set_defaults(func=_datasets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PixelwiseError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
