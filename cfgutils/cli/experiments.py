"""``python -m cfgutils experiment class-control | guidance | classifier | tune | collapse | label-dropout``: the
reference study's experiments 1-3, the tuning of guidance rules on validation data (notebook 06), and the two
ablation studies (why the reference study's accuracy collapsed; how much label dropout is enough)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.guidance import s_from_w, w_from_s
from ..core.samplers import REFERENCE_SAMPLER, class_labels, generate
from ..errors import UserInputError, finite_number, positive_int
from ..plumbing import paths
from ..plumbing.cells import CellStore
from ..plumbing.checkpoint import check_guide_fits, load_guidance, load_model
from ..plumbing.data import DATASETS, class_index, dataset_info, load_dataset, to_uint8
from ..presentation import comparison, plots, report
from ..presentation.studies import (
    across_networks,
    mechanism_table,
    paired_networks_conclusions,
    paired_networks_table,
    pooled_reproduction,
    reproduction_markdown_table,
    study_markdown,
    trajectory_table,
)
from ..workflows.ablations import (
    COLLAPSE_WEIGHTS,
    DROPOUT_RATES,
    DROPOUT_WEIGHTS,
    collapse_ladder,
    label_dropout_grid,
    run_study,
    select,
    stage_pretrained,
)
from ..workflows.classifier import load_classifier
from ..workflows.experiments import (
    FIGURE_SCALES,
    REFERENCE_WEIGHTS,
    REPORT_SEEDS,
    SWEEP_SCALES,
    build_reference_for,
    check_classifier_dataset,
    check_same_dataset,
    check_scales,
    check_sweep_arguments,
    guidance_sweep,
    save_strips,
    scale_sweep_one_class,
    training_neighbours_for,
    write_results,
)
from ..workflows.guides import GUIDE_EMA_DECAYS, GUIDE_SIZES, GUIDE_STEPS, guide_grid, train_guides
from ..workflows.networks import check_paired, compare_networks, read_run
from ..workflows.reproduction import (
    EPS_ERROR_TIMESTEPS,
    Scorers,
    check_weights,
    eps_error_by_t,
    run_reproduction,
)
from ..workflows.tuning import (
    CFGPP_LAMBDAS,
    DEFAULT_GUIDES,
    FRONTIER_WEIGHTS,
    TUNING_GRIDS,
    VALIDATION_SEEDS,
    check_tuning_seeds,
    choose,
    guide_settings,
    read_settings,
    tune,
)
from .common import (
    add_dataset_argument,
    add_sampler_arguments,
    check_output_dir,
    guidance_from_args,
    model_dataset,
    prose,
    run_record,
    sample_meta,
    settings_from_args,
    write_samples,
)


def register(subparsers) -> None:
    """Add ``experiment class-control | guidance | classifier``."""
    parser = subparsers.add_parser("experiment", help="the reference study's experiments 1-3",
                                   description="Reproduce (and extend) the reference study's experiments.")
    experiments = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    description = ("Sample every class at one guidance scale; writes grid.png (rows = classes), per-sample PNGs, "
                   "samples.npz and meta.json.")
    control = experiments.add_parser("class-control", help="experiment 1: every class at one guidance scale",
                                     description=description)
    control.add_argument("model", metavar="MODEL.pt")
    control.add_argument("outdir", metavar="OUTDIR")
    control.add_argument("-n", "--n", type=int, default=8, help="samples per class (default 8)")
    add_dataset_argument(control)
    add_sampler_arguments(control)
    control.set_defaults(handler=_run_class_control)

    guidance = experiments.add_parser("guidance", help="experiment 2: one class across guidance scales",
                                      description=prose("""
        Sample one class at several guidance scales from the same starting noise; writes guidance.png (columns =
        scales), samples.npz and meta.json."""))
    guidance.add_argument("model", metavar="MODEL.pt")
    guidance.add_argument("label", metavar="CLASS", help="a class index 0-9 or name (Fashion-MNIST: e.g. Sneaker)")
    guidance.add_argument("outdir", metavar="OUTDIR")
    guidance.add_argument("--scales", type=float, nargs="+", default=list(FIGURE_SCALES), metavar="S",
                          help=f"guidance scales s (w = s - 1); default {' '.join(f'{s:g}' for s in FIGURE_SCALES)}")
    guidance.add_argument("-n", "--n", type=int, default=8, help="samples per scale (default 8)")
    add_dataset_argument(guidance)
    add_sampler_arguments(guidance, default_scale=None)
    guidance.set_defaults(handler=_run_guidance)

    _register_classifier_experiment(experiments)
    _register_tuning(experiments)
    _register_guides(experiments)
    _register_studies(experiments)
    _register_reproduction(experiments)
    _register_across_networks(experiments)
    _register_paired(experiments)
    _register_variants(experiments)


def _register_across_networks(experiments) -> None:
    parser = experiments.add_parser(
        "across-networks", help="one recipe, several trained networks: the spread that training adds",
        description=prose("""
                        Read the summary.csv of several `experiment classifier` runs (one per trained network of one
                        recipe, same sampler, weights and sample sizes) and write OUTDIR/table.md and
                        OUTDIR/across.csv: each network's accuracy, KID and Frechet distance with their sampling
                        intervals, and their mean over the networks with a Student-t 95% interval (training seeds)."""))
    parser.add_argument("outdir", metavar="OUTDIR")
    parser.add_argument("runs", metavar="RUN", nargs="+", help="output folders of experiment classifier (two or more)")
    parser.set_defaults(handler=_run_across_networks)


PAIRED_DESCRIPTION = prose("""
    Compare two settings over several trained networks: arm A's runs (--a) at weight --w and arm B's runs (--b) at
    --w-b (default: the same w), the k-th run of A paired with the k-th of B (the same network sampled two ways, or
    the same training seed of two recipes). Each run is an `experiment classifier` output folder with its cells; all
    must share labels, seeds and sampler, so each pair's samples start from the same noise. Writes OUTDIR/paired.csv,
    table.md and meta.json: per pair, accuracy, KID and Frechet distance of both arms and their paired difference
    (Newcombe; a shared bootstrap), whose interval covers sampling; then the mean over the pairs with a Student-t
    95%% interval, which covers training too.""")


def _register_paired(experiments) -> None:
    parser = experiments.add_parser("paired", help="two settings over several trained networks: paired differences",
                                    description=PAIRED_DESCRIPTION)
    parser.add_argument("outdir", metavar="OUTDIR")
    parser.add_argument("--a", nargs="+", required=True, metavar="RUN", help="arm A: one run per network")
    parser.add_argument("--b", nargs="+", required=True, metavar="RUN", help="arm B: one run per network, in the "
                        "same order")
    parser.add_argument("--w", type=float, required=True, help="the guidance weight w (s = w + 1) of arm A")
    parser.add_argument("--w-b", type=float, default=None, help="the weight of arm B (default: --w)")
    parser.add_argument("--names", nargs=2, default=["A", "B"], metavar=("A", "B"),
                        help="what the tables call the two arms (default A B)")
    parser.add_argument("--classifier", default=None, metavar="CLASSIFIER.pt",
                        help="the classifier that scores both arms (default: the one the runs were scored with)")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    parser.set_defaults(handler=_run_paired)


def _run_paired(args: argparse.Namespace) -> int:
    w_a = finite_number(args.w, "w")
    w_b = w_a if args.w_b is None else finite_number(args.w_b, "w of arm B")
    if len(args.a) != len(args.b):
        raise UserInputError(f"give as many runs for each arm, one per network (got {len(args.a)} and {len(args.b)})")
    if args.names[0] == args.names[1]:
        raise UserInputError(f"the two arms need different names, got {args.names[0]!r} twice")
    arm_a, arm_b = [read_run(run) for run in args.a], [read_run(run) for run in args.b]
    check_paired([*arm_a, *arm_b])
    for arm, w in ((arm_a, w_a), (arm_b, w_b)):  # before any data is loaded: a refusal is one line
        for run in arm:
            run.check_weight(w)
    classifiers = {run.meta.get("classifier") for run in [*arm_a, *arm_b]}
    if args.classifier is None and len(classifiers) > 1:
        raise UserInputError(f"the runs were scored by different classifiers ({', '.join(map(str, classifiers))}): "
                             "choose one with --classifier")
    classifier_path = args.classifier or classifiers.pop()
    outdir = check_output_dir(args.outdir)
    started, start = run_record(), time.perf_counter()
    classifier = load_classifier(classifier_path, args.device)
    dataset = arm_a[0].meta["dataset"]
    check_classifier_dataset(classifier, dataset)
    test = load_dataset(dataset, "test")
    rows = compare_networks(arm_a, w_a, arm_b, w_b, classifier, build_reference_for(classifier, test))
    label_a, label_b = args.names
    table = paired_networks_table(rows, label_a, label_b)
    outdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{key: value for key, value in row.items() if key not in ("a", "b", "difference")}
                  | {f"{key}{suffix}": row[key][i] for key in ("a", "b", "difference")
                     for i, suffix in enumerate(("", "_low", "_high"))} for row in rows]).to_csv(
        outdir / "paired.csv", index=False)
    heading = (f"{label_a} (w = {w_a:g}, s = {s_from_w(w_a):g}) against {label_b} (w = {w_b:g}, "
               f"s = {s_from_w(w_b):g}), {len(arm_a)} network pair(s), {len(arm_a[0].labels)} paired samples each")
    text = "\n".join([heading, "", report.markdown(table), "", *paired_networks_conclusions(rows, label_a, label_b)])
    (outdir / "table.md").write_text(text + "\n")
    meta = {**started, "wall_time_s": round(time.perf_counter() - start, 1), "names": args.names,
            "w_a": w_a, "w_b": w_b, "classifier": str(classifier_path), "reference_source": test.source,
            "a": [{"run": str(run.folder), "model": run.meta.get("model"), "guidance": run.meta.get("guidance")}
                  for run in arm_a],
            "b": [{"run": str(run.folder), "model": run.meta.get("model"), "guidance": run.meta.get("guidance")}
                  for run in arm_b],
            **{key: arm_a[0].meta.get(key) for key in ("dataset", "sampler", "steps", "n_per_class", "seeds")}}
    (outdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(text)
    return 0


VARIANT_RULES = ("cfg", "rescale", "interval", "threshold", "apg", "autoguidance", "cfgpp", "icg", "schedule",
                 "zerostar")
#: the default sweep: weights from just guided to strongly guided, and CFG++'s lambdas over its whole range
VARIANT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
VARIANT_LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def _register_variants(experiments) -> None:
    parser = experiments.add_parser(
        "variants", help="every guidance rule swept on one model, paired, read on its frontier",
        description=prose("""
                        Sample every guidance rule (with the library's tuned defaults; autoguidance with
                        --guide-model) at every weight (CFG++ at every lambda) and seed from the same starting noise
                        and labels, score the samples as experiment classifier does, and read each rule where its
                        accuracy reaches the real test images' own accuracy (interpolated, with an interval) and along
                        the intended-class log-probability (interval bands of KID and the Frechet distance against the
                        first rule's). Writes variants.csv (every metric with its 95%% interval per rule and scale),
                        matched.csv, table.md, frontier.png, variants.png and meta.json. Sampled cells are kept in
                        OUTDIR/cells/RULE: the same command resumes an interrupted run."""))
    _add_model_classifier_outdir(parser)
    parser.add_argument("--rules", nargs="+", default=list(VARIANT_RULES), choices=list(VARIANT_RULES),
                        help="rules to compare; the first is the baseline (default: all, cfg first)")
    parser.add_argument("--weights", type=float, nargs="+", default=list(VARIANT_WEIGHTS), metavar="W",
                        help=f"guidance weights w (default {' '.join(f'{w:g}' for w in VARIANT_WEIGHTS)})")
    parser.add_argument("--cfgpp-lambdas", type=float, nargs="+", default=list(VARIANT_LAMBDAS), metavar="LAMBDA",
                        help=f"CFG++'s scales in [0, 1] (default {' '.join(f'{v:g}' for v in VARIANT_LAMBDAS)})")
    parser.add_argument("--guide-model", default=None, metavar="PATH",
                        help="autoguidance's guide (default: the shipped data/pretrained/autoguide.pt)")
    parser.add_argument("--n-per-class", type=int, default=10, help="samples per class, rule, w and seed (default 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(REPORT_SEEDS),
                        help=f"sampling seeds (default {' '.join(map(str, REPORT_SEEDS))})")
    add_dataset_argument(parser)
    parser.add_argument("--sampler", default="dpmpp", choices=["ddpm", "ddim", "dpmpp"],
                        help="one sampler for every rule (default dpmpp)")
    parser.add_argument("--steps", type=int, default=None, help="model evaluations (default: the sampler's)")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per model call chunk")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    parser.set_defaults(handler=_run_variants)


def _variant_rules(args: argparse.Namespace, device) -> tuple[dict, dict]:
    """name -> rule (autoguidance with its guide) and name -> its scales (s, or CFG++'s lambdas), validated."""
    if len(set(args.rules)) != len(args.rules) or len(args.rules) < 2:
        raise UserInputError(f"give two or more different rules, got {' '.join(args.rules)}")
    weights = [finite_number(w, "w") for w in args.weights]
    scales, _ = check_sweep_arguments([s_from_w(w) for w in weights], args.n_per_class, args.seeds)
    lambdas = check_sweep_arguments(args.cfgpp_lambdas, args.n_per_class, args.seeds)[0]
    rules = {name: load_guidance(name, device, args.guide_model if name == "autoguidance" else None)
             for name in args.rules}
    return rules, {name: [rule.validate_scale(scale) for scale in (lambdas if name == "cfgpp" else scales)]
                   for name, rule in rules.items()}


def _run_variants(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")

    from ..core.samplers import SamplerSettings

    settings = SamplerSettings(args.sampler, args.steps).validate()
    positive_int(args.batch_size, "batch size")
    if args.guide_model is not None and "autoguidance" not in args.rules:
        raise UserInputError("--guide-model is for autoguidance, which is not among --rules")
    outdir = check_output_dir(args.outdir)
    loaded = load_model(args.model, args.device)
    rules, scales = _variant_rules(args, next(loaded.model.parameters()).device)
    dataset = model_dataset(args, loaded)
    classifier = load_classifier(args.classifier, args.device)
    check_same_dataset(loaded, classifier)
    for rule in rules.values():
        check_guide_fits(rule, loaded.model, loaded.diffusion, dataset)
    stores = {name: CellStore(outdir / "cells" / name, {
        "dataset": dataset, "model": str(args.model), "model_created": loaded.metadata.get("created"),
        **settings.describe(), **rule.describe(), "n_per_class": args.n_per_class, "batch_size": args.batch_size})
        for name, rule in rules.items()}
    resumed = sum(len(store) for store in stores.values())
    if resumed:
        print(f"resuming: {resumed} sampled cells found in {outdir / 'cells'}")
    previous = json.loads((outdir / "meta.json").read_text()) if (outdir / "meta.json").is_file() else {}
    started, start = run_record(), time.perf_counter()
    test = load_dataset(dataset, "test")
    reference = build_reference_for(classifier, test, floor_per_class=args.n_per_class * len(args.seeds))
    neighbours = training_neighbours_for(classifier, test, reference)
    results = {}
    for name, rule in rules.items():
        print(f"{name}: {len(scales[name])} scales x {len(args.seeds)} seeds x {10 * args.n_per_class} samples")
        results[name] = guidance_sweep(loaded, classifier, scales[name], args.n_per_class, settings, args.seeds,
                                       reference=reference, guidance=rule, batch_size=args.batch_size, real_split=test,
                                       neighbours=neighbours, sample_cache=stores[name])
    table = _write_variants(outdir, results, rules, dataset_info(dataset).item)
    meta = {"dataset": dataset, "model": str(args.model), "model_data_source": loaded.metadata.get("data_source"),
            "classifier": str(args.classifier), "classifier_data_source": classifier.metadata.get("data_source"),
            "reference_source": reference.source, "convention": "eps = eps_u + s (eps_c - eps_u); w = s - 1",
            **settings.describe(), "rules": {name: rule.describe() for name, rule in rules.items()},
            "weights_w": list(args.weights), "cfgpp_lambdas": list(args.cfgpp_lambdas),
            "n_per_class": args.n_per_class, "seeds": args.seeds,
            "n_per_cell": 10 * args.n_per_class * len(args.seeds),
            "runs": [*previous.get("runs", []), {**started, "wall_time_s": round(time.perf_counter() - start, 1),
                                                 "cells_resumed": resumed}]}
    (outdir / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(table)
    return 0


def _write_variants(outdir: Path, results: dict, rules: dict, item: str) -> str:
    """variants.csv, matched.csv, table.md (returned) and the two figures of ``experiment variants``."""
    import matplotlib.pyplot as plt

    report.variants_frame(results).to_csv(outdir / "variants.csv", index=False)
    found = comparison.conclusions(results, baseline=next(iter(results)))
    found["matched"].to_csv(outdir / "matched.csv", index=False)
    floor = next(iter(results.values())).floor
    lines = found["lines"] + [f"- Real test {item}s at the same N: accuracy {report.with_interval(floor, 'accuracy')}, "
                              f"KID {report.with_interval(floor, 'kid', 1)}, Fréchet distance "
                              f"{report.with_interval(floor, 'frechet_distance', 1)}."]
    table = comparison.comparison_markdown(comparison.matched_table(found["matched"], rules=rules), lines)
    (outdir / "table.md").write_text(table + "\n")
    by_weight = {name: result for name, result in results.items() if name != "cfgpp"}
    for name, fig in (("frontier", plots.frontier_figure(results)), ("variants", plots.variants_figure(by_weight))):
        plots.save_figure(fig, f"{name}.png", outdir)
        plt.close(fig)
    return table


def _run_across_networks(args: argparse.Namespace) -> int:
    runs = [Path(run) for run in args.runs]
    if len(runs) < 2:
        raise UserInputError("give two or more runs (one per trained network)")
    missing = [str(run) for run in runs if not (run / "summary.csv").is_file()]
    if missing:
        raise UserInputError(f"no summary.csv in {', '.join(missing)} (run experiment classifier there first)")
    names = [run.name if [r.name for r in runs].count(run.name) == 1 else str(run) for run in runs]
    metas = [json.loads((run / "meta.json").read_text()) if (run / "meta.json").is_file() else {} for run in runs]
    shared = ("dataset", "sampler", "steps", "n_per_class", "seeds", "guidance")
    differing = [key for key in shared if len({json.dumps(meta.get(key)) for meta in metas}) > 1]
    if differing:
        raise UserInputError(f"the runs differ in {', '.join(differing)}: compare networks sampled the same way")
    summaries = {name: pd.read_csv(run / "summary.csv") for name, run in zip(names, runs)}
    try:
        table = across_networks(summaries)
    except ValueError as error:
        raise UserInputError(str(error)) from None
    outdir = check_output_dir(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    table.to_csv(outdir / "across.csv", index=False)
    sources = "\n".join(f"- {name}: {meta.get('model', '(no meta.json)')}" for name, meta in zip(names, metas))
    (outdir / "table.md").write_text(report.markdown(table) + "\n\nNetworks:\n" + sources + "\n")
    print(report.markdown(table))
    return 0


def _sampling_inputs(args: argparse.Namespace, scales: list[float]):
    """What every sampling experiment resolves first: sampler settings, the guidance rule, the scales it accepts,
    the output folder, the model and its dataset (a guide model must fit it): nothing is written before."""
    settings = settings_from_args(args)
    guidance = guidance_from_args(args)
    scales = [guidance.validate_scale(scale) for scale in scales]
    outdir = check_output_dir(args.outdir)
    loaded = load_model(args.model, args.device, raw_weights=args.raw_weights)
    dataset = model_dataset(args, loaded)
    check_guide_fits(guidance, loaded.model, loaded.diffusion, dataset)
    return settings, guidance, scales, outdir, loaded, dataset


def _run_class_control(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    labels = class_labels("all", args.n)
    settings, guidance, (scale,), outdir, loaded, _ = _sampling_inputs(args, [args.guidance_scale])
    images = generate(loaded.model, loaded.diffusion, labels, scale, settings, args.seed, args.batch_size,
                      guidance, progress=True).cpu()
    meta = sample_meta(loaded, scale, settings, args.seed, args.batch_size, guidance, experiment="class-control")
    write_samples(outdir, images, labels, meta, nrow=args.n)
    print(f"wrote {len(labels)} samples (s = {scale:g}, w = {w_from_s(scale):g}) to {outdir}")
    return 0


def _run_guidance(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = check_scales(args.scales)
    positive_int(args.n, "n")
    settings, guidance, scales, outdir, loaded, dataset = _sampling_inputs(args, scales)
    label = class_index(args.label, dataset)
    images = scale_sweep_one_class(loaded, label, scales, args.n, settings, args.seed, guidance)
    outdir.mkdir(parents=True, exist_ok=True)
    info = dataset_info(dataset)
    name = f"The {info.item} {label}" if dataset == "mnist" else f"{info.class_names[label]} ({info.title} class {label})"
    fig = plots.plot_scale_grid(images.transpose(0, 1), scales,
                                title=f"{name} at various guidance scales ({settings.sampler})")
    fig.savefig(outdir / "guidance.png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    np.savez_compressed(outdir / "samples.npz", images=to_uint8(images).squeeze(2).numpy(),
                        scales=np.array(scales), label=label)
    meta = sample_meta(loaded, scales[0], settings, args.seed, args.n, guidance, experiment="guidance",
                       label=label, class_name=info.class_names[label])
    meta.pop("guidance_scale_s")
    meta.pop("guidance_weight_w")
    meta.update({"scales_s": scales, "weights_w": [w_from_s(s) for s in scales], "n_per_scale": args.n})
    (outdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {outdir / 'guidance.png'} ({len(scales)} scales x {args.n} samples of class {label}, "
          f"{info.class_names[label]})")
    return 0


#: what ``experiment classifier --help`` says the command does
CLASSIFIER_DESCRIPTION = (prose("""
                              Sample N of every class at each guidance scale s (w = s - 1) and seed, score them with
                              CLASSIFIER against held-out real test images (accuracy, per-class accuracy, confidence,
                              KID and Frechet distance in classifier features, IS analogue, k-NN precision/recall,
                              diversity, saturated pixels, near copies of training images), and write results.csv (one
                              row per scale and seed, plus one real-data floor row per seed), summary.csv (one row per
                              scale and a last one for the real-data floor, every metric with its 95% interval: exact
                              for proportions of samples; a bootstrap over the pooled samples of all seeds for KID and
                              the Frechet distance, the floor measured on as many real images; Student t over seeds
                              otherwise), table.md (the table and the conclusions its paired comparisons support),
                              meta.json, strips.npz and figures. Sampled cells are kept in OUTDIR/cells: the same
                              command resumes an interrupted run."""))


def _add_model_classifier_outdir(parser) -> None:
    """The three positional arguments of ``experiment classifier`` and ``experiment tune``."""
    parser.add_argument("model", metavar="MODEL.pt", help="diffusion checkpoint")
    parser.add_argument("classifier", metavar="CLASSIFIER.pt", help="classifier checkpoint (train-classifier)")
    parser.add_argument("outdir", metavar="OUTDIR")


def _register_classifier_experiment(experiments) -> None:
    help_line = "experiment 3: classifier metrics of generated images by guidance scale"
    parser = experiments.add_parser("classifier", help=help_line, description=CLASSIFIER_DESCRIPTION)
    _add_model_classifier_outdir(parser)
    parser.add_argument("--scales", type=float, nargs="+", default=list(SWEEP_SCALES), metavar="S",
                        help="guidance scales s (default: 0 and the reference study's w grid + 1)")
    parser.add_argument("--n-per-class", type=int, default=10, help="samples per class, scale and seed (default 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(REPORT_SEEDS),
                        help=f"sampling seeds, two or more for intervals of set statistics "
                             f"(default {' '.join(map(str, REPORT_SEEDS))})")
    add_dataset_argument(parser)
    add_sampler_arguments(parser, default_scale=None)
    parser.set_defaults(handler=_run_classifier_experiment)


def _run_classifier_experiment(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    scales, seeds = check_sweep_arguments(args.scales, args.n_per_class, args.seeds)
    settings, guidance, scales, outdir, loaded, dataset = _sampling_inputs(args, scales)
    classifier = load_classifier(args.classifier, args.device)
    check_same_dataset(loaded, classifier)
    cells = CellStore(outdir / "cells", {
        "dataset": dataset, "model": str(args.model), "model_created": loaded.metadata.get("created"),
        "raw_weights": bool(args.raw_weights), **settings.describe(), **guidance.describe(),
        "n_per_class": args.n_per_class, "batch_size": args.batch_size})  # chunks are seeded: the noise depends on it
    resumed = len(cells)
    if resumed:
        print(f"resuming: {resumed} sampled cells found in {cells.folder}")
    previous = json.loads((outdir / "meta.json").read_text()) if (outdir / "meta.json").is_file() else {}
    started = run_record()  # the command, and the commit whose code runs (taken now, not when the run ends)
    result = guidance_sweep(loaded, classifier, scales, args.n_per_class, settings, seeds,
                            guidance=guidance, batch_size=args.batch_size, sample_cache=cells)
    meta = {"dataset": dataset, "model": str(args.model), "model_data_source": loaded.metadata.get("data_source"),
            "classifier": str(args.classifier), "classifier_data_source": classifier.metadata.get("data_source"),
            "classifier_test_accuracy": classifier.metadata.get("test_accuracy"),
            "convention": "eps = eps_u + s (eps_c - eps_u); w = s - 1", **settings.describe(),
            **guidance.describe(), "n_per_class": args.n_per_class, "seeds": seeds,
            "near_copy_training_source": result.training_source}
    meta["runs"] = [*previous.get("runs", []), {**started, "wall_time_s": round(result.wall_time_s, 1),
                                                "cells_resumed": resumed}]
    path = write_results(outdir, result, meta)
    report.summary_frame(result).to_csv(outdir / "summary.csv", index=False)
    table = report.format_table(result)
    if any(scale > 0 for scale in scales):  # the conclusions rank the guided scales
        table += "\n\n" + "\n".join(report.conclusions(result)["lines"])
    (outdir / "table.md").write_text(table + "\n")
    save_strips(outdir, result)
    plots.save_sweep_figures(result, outdir)
    print(table)
    print(f"wrote {path} and figures to {outdir}")
    return 0


TUNE_DESCRIPTION = (prose("""
                        Choose guidance-rule parameters on validation data: sample plain CFG and every setting of each
                        rule's grid (cfgutils.workflows.tuning.TUNING_GRIDS; autoguidance: every guide model in
                        --guides) over w = 0, 0.5, 1, 2, 4 (CFG++ over lambda = 0.2-1.0) with validation seeds that no
                        reported table uses, score it against real images from the training split of the model's
                        dataset (the validation split, never the test split), and pick per rule the setting with the
                        lowest KID where its accuracy reaches the real validation images' own accuracy (interpolated
                        between weights). Writes tuning.csv (every cell, after every setting: the same command resumes
                        an interrupted run), settings.csv (every setting read at the real accuracy), choice.csv and
                        choice.json."""))
TUNE_OBJECTIVE = ("per rule, the setting with the lowest KID where its validation accuracy reaches the real validation "
                  "images' accuracy (linear interpolation between weights)")


def _register_tuning(experiments) -> None:
    parser = experiments.add_parser("tune", help="choose guidance-rule parameters on validation images and seeds",
                                    description=TUNE_DESCRIPTION)
    _add_model_classifier_outdir(parser)
    parser.add_argument("--rules", nargs="+", default=list(TUNING_GRIDS), choices=list(TUNING_GRIDS),
                        help="rules to tune (default: all)")
    parser.add_argument("--n-per-class", type=int, default=10, help="samples per class, setting, w and seed "
                                                                      "(default 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(VALIDATION_SEEDS),
                        help=f"validation seeds (default {' '.join(map(str, VALIDATION_SEEDS))}; "
                             f"the reported seeds {' '.join(map(str, REPORT_SEEDS))} are refused)")
    parser.add_argument("--guides", default=str(DEFAULT_GUIDES), metavar="FOLDER",
                        help=f"autoguidance's candidate guide models, one .pt per setting (default {DEFAULT_GUIDES}; "
                             "train them with `experiment guides FOLDER`)")
    add_dataset_argument(parser)
    add_sampler_arguments(parser, default_scale=None)
    parser.set_defaults(handler=_run_tuning)


def _run_tuning(args: argparse.Namespace) -> int:
    check_sweep_arguments([1.0], args.n_per_class, args.seeds)
    seeds = check_tuning_seeds(args.seeds)
    settings = settings_from_args(args)
    outdir = check_output_dir(args.outdir)
    loaded = load_model(args.model, args.device, raw_weights=args.raw_weights)
    dataset = model_dataset(args, loaded)
    classifier = load_classifier(args.classifier, args.device)
    check_same_dataset(loaded, classifier)
    if "autoguidance" in args.rules:
        guide_settings(args.guides)  # refuse a missing guides folder before anything is sampled
    started, start = run_record(), time.perf_counter()
    done = pd.read_csv(outdir / "tuning.csv") if (outdir / "tuning.csv").is_file() else None
    if done is not None:
        print(f"resuming: {done.groupby(['rule', 'setting']).ngroups} settings found in {outdir / 'tuning.csv'}")
    outdir.mkdir(parents=True, exist_ok=True)

    def write_grid(rows: pd.DataFrame) -> None:  # after every setting: the run resumes from here
        partial = outdir / "tuning.csv.partial"
        rows.to_csv(partial, index=False)
        partial.replace(outdir / "tuning.csv")

    grid = tune(loaded, classifier, args.rules, args.n_per_class, settings, seeds,
                validation_split=load_dataset(dataset, "validation"), test_source=load_dataset(dataset, "test").source,
                guides=args.guides, done=done, on_setting=write_grid)
    chosen = choose(grid)
    write_grid(grid)
    read = read_settings(grid)
    read.to_csv(outdir / "settings.csv", index=False)
    chosen.to_csv(outdir / "choice.csv", index=False)
    (outdir / "table.md").write_text(_settings_markdown(read, chosen) + "\n")
    per_setting = grid.groupby(["rule", "setting"], sort=False)["seconds"].first()
    meta = {**started, "wall_time_s": round(time.perf_counter() - start, 1),
            "sampling_seconds": round(float(per_setting.sum()), 1),  # every setting, this run or the resumed ones
            "dataset": dataset,
            "model": str(args.model), "classifier": str(args.classifier), **settings.describe(),
            "n_per_class": args.n_per_class, "seeds": seeds, "validation_source": grid["validation_source"].iloc[0],
            "weights_w": list(FRONTIER_WEIGHTS), "cfgpp_lambdas": list(CFGPP_LAMBDAS), "rules": args.rules,
            "grids": {rule: sorted(set(grid[grid["rule"] == rule]["setting"])) for rule in ["cfg", *args.rules]},
            "objective": TUNE_OBJECTIVE, "chosen": chosen.to_dict(orient="records")}
    (outdir / "choice.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(chosen.to_string(index=False))
    print(f"wrote tuning.csv, settings.csv, table.md, choice.csv and choice.json to {outdir}")
    return 0


def _settings_markdown(read: pd.DataFrame, chosen: pd.DataFrame) -> str:
    """Every tuned setting read at the real validation accuracy, the chosen one of each rule in bold (table.md)."""
    picked = set(zip(chosen["rule"], chosen["setting"]))

    def at(row) -> str:
        if not row["reached"]:
            return f"not reached (at most {row['max_accuracy']:.3f})"
        return f"λ = {row['s']:.2f}" if row["rule"] == "cfgpp" else f"w = {row['w']:.2f}"

    records = [{"rule": f"`{row['rule']}`", "setting": (f"**{row['setting']}**" if (row["rule"], row["setting"]) in picked
                                                        else row["setting"]),
                "where accuracy reaches the real images'": at(row),
                "KID there": report.with_interval(row, "kid", 1) if row["reached"] else "",
                "Fréchet distance there": report.with_interval(row, "frechet_distance", 1) if row["reached"] else ""}
               for _, row in read.iterrows()]
    target = read["real_accuracy"].iloc[0]
    lowered = [f"`{row['rule']}` (none of its settings reaches it; read at {row['target']:.3f}, the highest accuracy "
               f"any of them reaches: {row['setting']} at " + (f"λ = {row['s']:.2f}" if row["rule"] == "cfgpp" else
                                                                f"w = {row['w']:.2f}")
               + f", KID {report.with_interval(row, 'kid', 1)})" for _, row in chosen.iterrows()
               if row["target"] < target]
    return (f"Real validation images' accuracy: {target:.3f}. Chosen per rule (bold): the lowest KID where the "
            "accuracy reaches it" + (", except " + "; ".join(lowered) if lowered else "") + ".\n\n"
            + report.markdown(pd.DataFrame(records)))


def _register_guides(experiments) -> None:
    parser = experiments.add_parser(
        "guides", help="train autoguidance's candidate guides: a grid of width x training steps x EMA decay",
        description=prose("""
                        Train one weaker model per (width, steps, EMA decay) on the default recipe (same data, label
                        dropout and seed as the main model) into OUTDIR/NAME.pt, NAME = cW-kSTEPS-emaDECAY; finished
                        guides are kept and interrupted ones resumed, so the same command resumes the grid. Score them
                        with `experiment tune MODEL CLASSIFIER OUT --rules autoguidance --guides OUTDIR`."""))
    parser.add_argument("outdir", metavar="OUTDIR")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(GUIDE_SIZES), metavar="WIDTH",
                        help=f"base channels (default {' '.join(map(str, GUIDE_SIZES))}; the shipped model: 32)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(GUIDE_STEPS),
                        help=f"training steps (default {' '.join(map(str, GUIDE_STEPS))}; the shipped model: 2500)")
    parser.add_argument("--ema-decays", type=float, nargs="+", default=list(GUIDE_EMA_DECAYS), metavar="DECAY",
                        help=f"nominal EMA decays, 0 = no average (default "
                             f"{' '.join(f'{d:g}' for d in GUIDE_EMA_DECAYS)})")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    add_dataset_argument(parser, "the dataset the guides learn, the main model's (default mnist)")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    parser.set_defaults(handler=_run_guides)


def _run_guides(args: argparse.Namespace) -> int:
    grid = guide_grid(args.sizes, args.steps, args.ema_decays, args.seed, args.dataset or "mnist")
    started, start = run_record(), time.perf_counter()
    trained = train_guides(args.outdir, grid, args.device)
    meta = {**started, "wall_time_s": round(time.perf_counter() - start, 1), "dataset": args.dataset or "mnist",
            "guides": {name: {"path": str(path), **{k: grid[name]["train"][k] for k in ("steps", "ema_decay")},
                              "base_channels": grid[name]["model"]["base_channels"]} for name, path in trained.items()}}
    (Path(args.outdir) / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(trained)} guides in {args.outdir}")
    return 0


def _register_studies(experiments) -> None:
    for name, help_line, description, default_weights in (
            ("collapse", "the reference study as it was, then one factor at a time to ours",
             prose("""
                 Train (or reuse) the reference study's network as it was (its samples scored as published, then
                 clamped, then by CLASSIFIER) and one configuration per changed factor (DDPM with x0 clipping, DDIM,
                 DPM-Solver++, EMA, cfgutils' UNet, our optimiser and length, v-prediction, min-SNR weights, width),
                 sample each at the weights and seeds, and write results.csv (every metric with its 95% interval per
                 configuration and w), table.md (the tables and the computed conclusions), accuracy.png, frechet.png,
                 x0_outside.png, strips.png and meta.json. The shipped reference networks (data/pretrained/reference/)
                 are reused where a configuration trains one of them."""), COLLAPSE_WEIGHTS),
            ("label-dropout", "the default recipe trained with several label-dropout rates",
             prose("""
                 Train (or reuse) the default recipe with each label-dropout rate, sample at the weights and seeds
                 (rate 0: only w = 0, since no unconditional model exists), score with CLASSIFIER, and write
                 results.csv, table.md, accuracy.png, frechet.png, x0_outside.png, strips.png and meta.json."""),
             DROPOUT_WEIGHTS)):
        parser = experiments.add_parser(name, help=help_line, description=description)
        parser.add_argument("classifier", metavar="CLASSIFIER.pt", help="classifier checkpoint (train-classifier)")
        parser.add_argument("outdir", metavar="OUTDIR")
        if name == "collapse":
            parser.add_argument("--factors", nargs="*", default=[r.name for r in collapse_ladder()],
                                help="configurations to run (default: all, in ladder order)")
            parser.add_argument("--reference-classifier", default=str(paths.PRETRAINED_REFERENCE_CLASSIFIER),
                                metavar="CLASSIFIER.pt", help="the reference study's classifier, which scores the "
                                "first configurations (default data/pretrained/reference/classifier.pt)")
        else:
            parser.add_argument("--rates", type=float, nargs="*", default=list(DROPOUT_RATES),
                                help=f"label-dropout rates (default {' '.join(f'{p:g}' for p in DROPOUT_RATES)})")
        parser.add_argument("--weights", type=float, nargs="*", default=list(default_weights), metavar="W",
                            help=f"guidance weights w (default {' '.join(f'{w:g}' for w in default_weights)})")
        parser.add_argument("--n-per-class", type=int, default=10, help="samples per class, w and seed (default 10)")
        if name == "collapse":
            parser.add_argument("--ddpm-n-per-class", type=int, default=7,
                                help="samples per class, w and seed for the 1,000-step cells (DDPM and the reference "
                                     "study's sampler; default 7: 210 samples per w over three seeds)")
        parser.add_argument("--seeds", type=int, nargs="+", default=list(REPORT_SEEDS), help="sampling seeds")
        parser.add_argument("--train-seeds", type=int, nargs="+", default=[0],
                            help="one trained network per configuration and training seed (default 0)")
        parser.add_argument("--models-dir", default="data/models/ablations",
                            help="where trained models are kept and reused, by config (default data/models/ablations)")
        parser.add_argument("--train-steps", type=int, default=None,
                            help="shorten every training run to this many steps (a quick, smaller study)")
        parser.add_argument("--max-sampler-steps", type=int, default=None,
                            help="cap every sampler's steps (a quick, smaller study)")
        parser.add_argument("--dataset", choices=list(DATASETS), default="mnist",
                            help="train and score every configuration on this dataset (default mnist); the "
                                 "classifier must have been trained on it")
        parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
        parser.set_defaults(handler=_run_study, study=name)


def _study_classifiers(args: argparse.Namespace, rungs) -> dict:
    """The classifiers a study scores with: ours, and the reference study's where a rung needs it."""
    classifiers = {"ours": load_classifier(args.classifier, args.device)}
    if any(rung.scorer == "reference" for rung in rungs):
        if args.dataset != "mnist":
            raise UserInputError("the reference study's classifier reads MNIST only: leave out the factors "
                                 f"{', '.join(r.name for r in rungs if r.scorer == 'reference')} on {args.dataset}")
        classifiers["reference"] = load_classifier(args.reference_classifier, args.device)
    for classifier in classifiers.values():
        check_classifier_dataset(classifier, args.dataset)
    return classifiers


def _study_arguments(args: argparse.Namespace) -> tuple[list, list[float], int | None]:
    """The study's rungs, weights w and 1,000-step sample count, validated before anything is loaded."""
    if args.study == "collapse":
        rungs = select(collapse_ladder(), args.factors)
    else:
        if not args.rates:
            raise UserInputError("the list of label-dropout rates is empty")
        for rate in args.rates:
            finite_number(rate, "label-dropout rate", low=0.0, high=1.0)
        rungs = label_dropout_grid(args.rates)
    weights = [w_from_s(s) for s in check_scales([s_from_w(w) for w in args.weights or []])]
    check_sweep_arguments([1.0], args.n_per_class, args.seeds)
    ddpm_n = getattr(args, "ddpm_n_per_class", None)
    for value, what, minimum in ((args.train_steps, "train steps", 1), (args.max_sampler_steps, "max sampler steps", 1),
                                 (ddpm_n, "DDPM samples per class", 2)):
        if value is not None:
            positive_int(value, what, minimum)
    if not args.train_seeds or len(set(args.train_seeds)) != len(args.train_seeds):
        raise UserInputError(f"--train-seeds must be distinct and non-empty, got {args.train_seeds}")
    return rungs, weights, ddpm_n


def _write_study_figures(outdir: Path, args: argparse.Namespace, rows: list[dict], extras: dict, weights) -> None:
    """accuracy.png, frechet.png, x0_outside.png, strips.png (and no-dropout.png) of a study."""
    import matplotlib.pyplot as plt

    names = list(dataset_info(args.dataset).class_names)
    figures = {"accuracy.png": plots.plot_study(rows, "accuracy",
                                                reference_curve=args.study == "collapse" and args.dataset == "mnist"),
               "frechet.png": plots.plot_study(rows, "frechet_distance"),
               "x0_outside.png": plots.plot_study(rows, "x0_outside"),
               "strips.png": plots.plot_study_strips(extras, 10.0 if 10.0 in weights else max(weights), names)}
    figures.update({"no-dropout.png": plots.plot_unguidable(extra["unguidable"], names) for extra in extras.values()
                    if "unguidable" in extra})
    for file_name, fig in figures.items():
        fig.savefig(outdir / file_name, dpi=plots.DPI, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)


def _resume_study(outdir: Path, settings: dict) -> tuple[list[dict], dict, dict]:
    """The rows, strips and meta of the configurations an earlier run of the same study completed in ``outdir``
    (nothing if it holds none); a folder holding a study with other settings is refused."""
    results, recorded = outdir / "results.csv", outdir / "settings.json"
    if not results.is_file():
        return [], {}, {}
    if not recorded.is_file() or json.loads(recorded.read_text()) != settings:
        raise UserInputError(f"{outdir} holds results of a study with other settings; use another folder to start "
                             "a new one (the same command resumes the study it holds)")
    rows = pd.read_csv(results, dtype={"correct_bits": str}).to_dict("records")  # bits keep their leading zeros
    strips = np.load(outdir / "strips.npz") if (outdir / "strips.npz").is_file() else {}
    extras = {}
    for key in getattr(strips, "files", []):
        label, scale = key.rsplit("|", 1)
        extras.setdefault(label, {"strips": {}})["strips"][float(scale)] = torch.from_numpy(strips[key])
    meta = json.loads((outdir / "meta.json").read_text()) if (outdir / "meta.json").is_file() else {}
    return rows, {label: extra for label, extra in extras.items() if label in {r["configuration"] for r in rows}}, meta


def _save_configuration(outdir: Path, label: str, new_rows: list[dict], extra: dict) -> None:
    """Append one completed configuration's rows to results.csv and its strips to strips.npz (a study resumes)."""
    results = outdir / "results.csv"
    frame = pd.DataFrame(new_rows)
    if results.is_file():
        frame = pd.concat([pd.read_csv(results, dtype={"correct_bits": str}), frame], ignore_index=True)
    frame.to_csv(results, index=False)
    stored = dict(np.load(outdir / "strips.npz")) if (outdir / "strips.npz").is_file() else {}
    stored.update({f"{label}|{scale:g}": images.numpy() for scale, images in extra["strips"].items()})
    np.savez_compressed(outdir / "strips.npz", **stored)


def _run_study(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    rungs, weights, ddpm_n = _study_arguments(args)
    outdir = check_output_dir(args.outdir)
    settings = {"study": args.study, "dataset": args.dataset, "weights_w": weights, "seeds": args.seeds,
                "train_seeds": args.train_seeds, "n_per_class": args.n_per_class, "ddpm_n_per_class": ddpm_n,
                "train_steps": args.train_steps, "max_sampler_steps": args.max_sampler_steps}
    previous_rows, previous_extras, previous_meta = _resume_study(outdir, settings)
    classifiers = _study_classifiers(args, rungs)
    start = time.perf_counter()
    staged = stage_pretrained(rungs, Path(args.models_dir), train_seeds=args.train_seeds, train_steps=args.train_steps)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    done = {row["configuration"] for row in previous_rows}
    keep = lambda label, new_rows, extra: _save_configuration(outdir, label, new_rows, extra)  # noqa: E731
    new_rows, extras = run_study(rungs, classifiers, weights, Path(args.models_dir), args.n_per_class, args.seeds,
                                 args.train_steps, args.max_sampler_steps, args.device, ddpm_n_per_class=ddpm_n,
                                 dataset=args.dataset, train_seeds=args.train_seeds, skip=done, on_configuration=keep)
    rows, extras = previous_rows + new_rows, {**previous_extras, **extras}
    _write_study_figures(outdir, args, rows, extras, weights)
    (outdir / "table.md").write_text(study_markdown(args.study, rows, args.dataset) + "\n")
    runs = [*previous_meta.get("runs", []), {**run_record(), "wall_time_s": round(time.perf_counter() - start, 1),
                                             "configurations": sorted({row["configuration"] for row in new_rows})}]
    meta = {**settings, "runs": runs, "classifier": str(args.classifier),
            "reference_classifier": str(args.reference_classifier) if "reference" in classifiers else None,
            "shipped_models_used": staged, "rungs": [r.name for r in rungs],
            "trained_here": {**previous_meta.get("trained_here", {}),
                             **{name: extra["trained_here"] for name, extra in extras.items() if "trained_here" in extra}},
            "training_data": sorted({*previous_meta.get("training_data", []),
                                     *(extra["training_data"] for extra in extras.values() if "training_data" in extra)}),
            "reference_data": load_dataset(args.dataset, "test").source,
            "wall_time_s": round(sum(run["wall_time_s"] for run in runs), 1)}
    (outdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(study_markdown(args.study, rows, args.dataset))
    print(f"wrote results.csv, table.md, figures and meta.json to {outdir}")
    return 0


#: the weights whose samples the reproduction keeps for its strip figure
REPRODUCTION_STRIP_WEIGHTS = (0.0, 2.0, 10.0, 15.0)
REPRODUCE_DESCRIPTION = (
    prose("""
        Sample each reference network (the reference study's UNet, preset `reference`; any diffusion model may be
        given) with the reference study's sampler (ancestral steps t = 999 .. 1, eps = (1 + w) eps_c - w eps_u,
        nothing clipped, samples unclamped; --sampler ddpm: cfgutils' DDPM steps, also unclipped) at every weight, N
        of every class from the same noise, and score the same samples three ways: the reference classifier on the raw
        samples (as published), on samples clamped to [-1, 1], and cfgutils' classifier on clamped samples. Each
        (network, w) cell is appended to OUTDIR/results.csv as it completes; a rerun skips the cells already there.
        Then writes mechanism.csv (the noise-prediction error by t on held-out test images, for the reference networks
        and the --compare models), table.md, accuracy.png, strips.png and meta.json."""))


def _register_reproduction(experiments) -> None:
    parser = experiments.add_parser("reproduce", help="the reference study rebuilt: its network, sampler, classifier",
                                    description=REPRODUCE_DESCRIPTION)
    parser.add_argument("outdir", metavar="OUTDIR")
    parser.add_argument("--networks", nargs="+", metavar="MODEL.pt",
                        default=[str(p) for p in paths.PRETRAINED_REFERENCE_NETWORKS if p.is_file()],
                        help="reference networks, one per training seed (default: those of "
                             "data/pretrained/reference/seed0.pt seed1.pt seed2.pt that are shipped)")
    parser.add_argument("--reference-classifier", default=str(paths.PRETRAINED_REFERENCE_CLASSIFIER),
                        metavar="CLASSIFIER.pt", help="the reference study's classifier "
                                                      "(default data/pretrained/reference/classifier.pt)")
    parser.add_argument("--classifier", default=str(paths.PRETRAINED_CLASSIFIER), metavar="CLASSIFIER.pt",
                        help="cfgutils' classifier (default data/pretrained/classifier.pt)")
    parser.add_argument("--compare", nargs="*", default=[str(paths.PRETRAINED_REFERENCE_RECIPE)],
                        metavar="MODEL.pt", help=prose("""
        further models (raw weights) whose noise-prediction error is measured beside the reference networks' (default:
        cfgutils' UNet at the reference recipe, data/pretrained/reference-recipe.pt)"""))
    parser.add_argument("--weights", type=float, nargs="*", default=list(REFERENCE_WEIGHTS), metavar="W",
                        help="guidance weights w (default: the reference study's 18, 0 .. 20)")
    parser.add_argument("--n-per-class", type=int, default=20, help="samples per class, w and network (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every cell (default 0)")
    parser.add_argument("--sampler", choices=["ancestral", "ddpm"], default="ancestral",
                        help="ancestral (default): the study's sampler; ddpm: cfgutils' DDPM posterior steps (t = 999 "
                             ".. 0), also without clipping or clamping, to tell the sampler's part from the network's")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps (default: 999 for ancestral, t = 999 .. 1; 1000 for ddpm)")
    parser.add_argument("--batch-size", type=int, default=200, help="samples per model call chunk (default 200)")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    parser.set_defaults(handler=_run_reproduction)


def _reference_networks(paths_given, device, settings) -> dict:
    """The reference networks by file stem (raw weights), checked: MNIST, distinct names, settings that fit."""
    if not paths_given:
        raise UserInputError("no reference network: pass --networks MODEL.pt (train one with `python -m cfgutils "
                             "train OUT.pt -c reference`)")
    networks = {}
    for path in paths_given:
        loaded = load_model(path, device, raw_weights=True)
        settings.validate(loaded.diffusion.timesteps)
        if loaded.dataset != "mnist":
            raise UserInputError(f"{path} was trained on {loaded.dataset}: the reference study is MNIST only")
        networks[Path(path).stem] = loaded
    if len(networks) != len(paths_given):
        raise UserInputError("two --networks files share a name; give each network its own file name")
    return networks


def _write_reproduction_report(outdir: Path, results: pd.DataFrame, mechanism: list[dict], strips: dict) -> str:
    """pooled.csv, mechanism.csv, table.md and the figures of ``experiment reproduce``; returns the tables."""
    import matplotlib.pyplot as plt
    import torch

    pd.DataFrame(mechanism).to_csv(outdir / "mechanism.csv", index=False)
    pooled = pooled_reproduction(results)
    pooled.to_csv(outdir / "pooled.csv", index=False)
    table = "\n\n".join([
        "## The reference study rebuilt: accuracy by w, three scorings of the same samples",
        report.markdown(reproduction_markdown_table(pooled)),
        "## The norm of x_t along the reference sampler (mean over samples and networks)",
        report.markdown(trajectory_table(results)),
        "## Noise-prediction error by t on held-out test images (mean squared error, 95% interval)",
        report.markdown(mechanism_table(mechanism))])
    (outdir / "table.md").write_text(table + "\n")
    figures = {"accuracy.png": plots.plot_reproduction(pooled, results)}
    if strips:
        figures["strips.png"] = plots.plot_reproduction_strips(
            {float(k.split("=")[1]): torch.from_numpy(v) for k, v in strips.items()})
    for file_name, fig in figures.items():
        fig.savefig(outdir / file_name, dpi=plots.DPI, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
    return table


def _run_reproduction(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    weights = check_weights(args.weights)
    positive_int(args.n_per_class, "n per class")
    positive_int(args.batch_size, "batch size")
    settings = replace(REFERENCE_SAMPLER, sampler=args.sampler, steps=args.steps)
    outdir = check_output_dir(args.outdir)
    networks = _reference_networks(args.networks, args.device, settings)
    compared = {Path(path).stem: load_model(path, args.device, raw_weights=True) for path in args.compare or []}
    scorers = Scorers(load_classifier(args.reference_classifier, args.device), load_classifier(args.classifier, args.device))
    for classifier in (scorers.reference, scorers.ours):
        check_classifier_dataset(classifier, "mnist")
    meta_path, settings_path = outdir / "meta.json", outdir / "settings.json"
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    wanted = {"n_per_class": args.n_per_class, "sampling_seed": args.seed, "sampler": settings.sampler,
              "steps": settings.resolved_steps(), "batch_size": args.batch_size}  # chunks are seeded per batch
    if settings_path.is_file():
        recorded = json.loads(settings_path.read_text())
    else:  # a folder from before settings.json was written: its meta.json (batch 200, the default then)
        recorded = {key: previous.get(key) for key in wanted} | {"batch_size": 200} if previous else None
    if recorded is not None and recorded != wanted:
        raise UserInputError(f"{outdir} holds a reproduction sampled with other settings ({recorded}); use another "
                             "folder (the same command resumes or extends the one it holds)")
    start = time.perf_counter()
    outdir.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(wanted, indent=2) + "\n")  # before any cell: an interrupted run is checked too
    strips_path = outdir / "strips.npz"
    strips = dict(np.load(strips_path)) if strips_path.is_file() else {}
    first = next(iter(networks))

    def keep_strip(name, row, samples):
        if name == first and row["w"] in REPRODUCTION_STRIP_WEIGHTS and f"w={row['w']:g}" not in strips:
            strips[f"w={row['w']:g}"] = samples.reshape(10, -1, 1, 28, 28)[:, 0].half().numpy()
            np.savez_compressed(strips_path, **strips)

    results_csv = run_reproduction(networks, scorers, outdir, weights, args.n_per_class, args.seed,
                                   args.batch_size, settings=settings, on_cell=keep_strip)
    test = load_dataset("mnist", "test")
    mechanism = [{"network": name, **row} for name, loaded in {**networks, **compared}.items()
                 for row in eps_error_by_t(loaded, test, EPS_ERROR_TIMESTEPS)]
    results = pd.read_csv(results_csv)
    table = _write_reproduction_report(outdir, results, mechanism, strips)
    runs = [*previous.get("runs", []), {**run_record(), "wall_time_s": round(time.perf_counter() - start, 1)}]
    named = {**previous.get("networks", {}), **{name: str(path) for name, path in zip(networks, args.networks)}}
    meta = {"study": "reproduce", "runs": runs, "networks": dict(sorted(named.items())),
            "network_training_data": sorted({*previous.get("network_training_data", []),
                                             *(str(n.metadata.get("data_source")) for n in networks.values())}),
            "compared": list(args.compare or []), "reference_classifier": args.reference_classifier,
            "reference_classifier_test_accuracy": scorers.reference.metadata.get("test_accuracy"),
            "classifier": args.classifier, "classifier_test_accuracy": scorers.ours.metadata.get("test_accuracy"),
            "weights_w": weights, "n_per_class": args.n_per_class, "sampling_seed": args.seed, **settings.describe(),
            "convention": "eps = (1 + w) eps_c - w eps_u; s = w + 1", "eps_error_data": test.source,
            "cells": len(results), "cell_sample_seconds_total": round(float(results["sample_seconds"].sum()), 1),
            "wall_time_s": round(previous.get("wall_time_s", 0.0) + time.perf_counter() - start, 1)}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(table)
    print(f"wrote results.csv, pooled.csv, mechanism.csv, table.md, figures and meta.json to {outdir}")
    return 0
