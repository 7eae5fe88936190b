"""The ``mner`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import typing
from collections.abc import Sequence

from mner import __version__
from mner.data.conll import BIO_POLICIES, ConllFormatError, read_dataset
from mner.data.labels import SCHEMES
from mner.data.stats import dataset_stats, table_columns
from mner.metrics import format_scores, format_table, score_files

DEVICE_HELP = "auto (cuda when present), cpu, cuda, cuda:1, ..."
SCHEME_HELP = (
    "how entities are chunked: conlleval (default; an I- tag that continues no entity starts one) "
    "or strict (IOB2: such a tag is in no entity)"
)


class UsageError(SystemExit):
    """A command line the parser refused, its one line printed already (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr, exit status 2 (the usage is
    in ``--help``), as ``main`` gives the errors of a command's run."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise UsageError(2)


def count(text: str) -> int:
    """An argument that counts something: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r:.80} is not a whole number of at least 1")
    return value


def device(text: str) -> str:
    """A torch device as the ``device`` params take it (:class:`mner.core.config.DeviceName`)."""
    from mner.core.config import DeviceName, OutOfRange

    try:
        DeviceName().check(text, "device")
    except OutOfRange as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("device: ")) from None
    return text


def existing_file(text: str) -> str:
    """A file to read."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: a directory, not a file")
    return text


def existing_dir(text: str) -> str:
    """A directory to read."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: not a directory")
    return text


def new_dir(text: str) -> str:
    """A directory to make: absent or empty."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a directory; name a new directory")
    if os.path.isdir(text) and os.listdir(text):
        raise argparse.ArgumentTypeError(f"{text}: exists and is not empty; name a new directory")
    return text


def image_file(text: str) -> str:
    """An image to read; one that is not there is read as the blank image (with a warning)."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: a directory, not an image file")
    return text


def output_file(text: str) -> str:
    """A file to write (it may exist; a directory of that name may not)."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: a directory, not a file")
    return text


def stats(args: argparse.Namespace) -> None:
    table = dataset_stats(read_dataset(args.data_dir, bio=args.bio), args.scheme)
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print(f"{args.data_dir} (BIO policy: {args.bio}; entities chunked by the {args.scheme} scheme)")
    print(format_table(table, table_columns(table)))


def score(args: argparse.Namespace) -> None:
    scores = score_files(args.gold, args.pred, args.scheme)
    print(json.dumps(scores.to_dict(), indent=2) if args.json else format_scores(scores))


def offline_workspace(args: argparse.Namespace) -> None:
    from mner.offline import make_offline_workspace, repro_and_commit

    dest = make_offline_workspace(args.dest)
    if not args.repro:
        print(f"offline workspace ready: cd {dest} && dvc repro")
        return
    repro_and_commit(dest)
    print(f"offline workspace {dest}: every stage run, committed as the baseline")


def quickstart(args: argparse.Namespace) -> None:
    from mner.offline import make_quickstart_workspace, repro_and_commit
    from mner.runs import list_runs, runs_table

    start = time.perf_counter()
    dest = make_quickstart_workspace(args.dest)
    repro_and_commit(dest)
    minutes, seconds = divmod(round(time.perf_counter() - start), 60)
    print(f"\nquickstart done in {minutes} min {seconds:02d} s; the report is {dest}/reports/results.md\n")
    print(runs_table(list_runs(dest)))
    print(
        f"\ntry: cd {dest} && dvc exp run -S ++train.lr=0.002 && mner runs --compare "
        "HEAD:twitter2017/fmit/seed1 twitter2017/fmit/seed1"
    )


def train(args: argparse.Namespace) -> None:
    from mner.offline import make_own_workspace, repro_and_commit
    from mner.runs import list_runs, runs_table

    dest = make_own_workspace(args.dest, args.data_dir, args.runs or (), args.images)
    repro_and_commit(dest)
    print(f"\n{dest}: trained on {args.data_dir}; the report is {dest}/reports/results.md\n")
    print(runs_table(list_runs(dest)))


def runs(args: argparse.Namespace) -> None:
    from mner.runs import compare_table, comparison, list_runs, locate_run, runs_table

    if args.compare:
        (a, label_a), (b, label_b) = (locate_run(spec, args.workspace) for spec in args.compare)
        both = {"runs": [label_a, label_b], **comparison(a, b)}
        print(json.dumps(both, indent=2) if args.json else compare_table(a, b, (label_a, label_b)))
        return
    found = list_runs(args.workspace)
    if args.json:
        print(json.dumps([run.to_dict() for run in found], indent=2))
    else:
        print(runs_table(found) if found else f"{args.workspace}/runs: no runs yet")


def predict(args: argparse.Namespace) -> None:
    from mner.posts import Post, PostPredictor, PostsError, read_posts

    if args.input and (args.image or args.caption):
        raise ValueError("--image and --caption go with --text; give each post's in the --input file")
    posts = (
        read_posts(args.input)
        if args.input
        else [Post.from_text(args.text, args.image, clue=args.caption or ())]
    )
    predictor = PostPredictor(
        args.checkpoint, args.device, captioner(args.describe) if args.describe else None
    )
    if not args.input:
        result = predictor.predict(posts)[0]
        warn_blank_image(result, "mner predict")
        print(json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False))
        return
    failed = 0
    for result in predictor.stream(posts):  # allow_nan=False: never a NaN, which is not JSON
        if "error" in result:
            failed += 1
            print(f"{args.input}: post {result['id']!r}: {result['error']}", file=sys.stderr, flush=True)
            continue
        warn_blank_image(result, f"{args.input}: post {result['id']!r}")
        print(json.dumps(result, ensure_ascii=False, allow_nan=False), flush=True)
    if failed:
        raise PostsError(
            f"{args.input}: {failed} of {len(posts)} posts failed (each named above), the rest printed"
        )


def warn_blank_image(result: dict, where: str) -> None:
    """A warning on stderr when a post's image could not be read (its record's ``image_problem``:
    missing, empty, truncated, ...) and the model read the blank image in its place."""
    if result.get("image_problem"):
        print(
            f"{where}: warning: image {result['image']}: {result['image_problem']}; the blank image was read",
            file=sys.stderr,
            flush=True,
        )


def captioner(params_file: str):
    """The describe model of ``params_file`` (its ``describe`` section) as a predictor's captioner."""
    from mner.core.config import load_params, section
    from mner.features.describe import Captioner, caption_images
    from mner.settings.describe import DescribeConfig

    model = Captioner(section(load_params(params_file), "describe", DescribeConfig))
    return lambda images: caption_images(model, [image.image for image in images])


def visual_use(args: argparse.Namespace) -> None:
    from mner.visual_use import format_visual_use, visual_use

    result = visual_use(args.run_dir, args.device, args.scheme, args.batch_size)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_visual_use(result))


def clue_use(args: argparse.Namespace) -> None:
    from mner.clue_use import clue_use, format_clue_use

    result = clue_use(args.run_dir, args.device, args.scheme)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_clue_use(result))


def merge_shards(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mner.core.workspace import Workspace
    from mner.runner.shards import merge_shards

    prepared = args.prepared or Workspace(Path(args.cache).stem).prepared
    merge_shards(args.cache, args.shards, prepared, keep=args.keep)
    print(f"merged {args.shards} shards into {args.cache}")


def params(args: argparse.Namespace) -> None:
    from mner.core.config import load_params
    from mner.params import commented_yaml, effective_params, setting_notes

    loaded = load_params(args.params)
    settings = effective_params(loaded)
    if args.section:
        if args.section not in settings:
            raise ValueError(f"{args.params}: no section {args.section!r}; sections: {', '.join(settings)}")
        settings = {args.section: settings[args.section]}
    print(commented_yaml(settings, setting_notes(loaded)))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mner", description="Multimodal NER on social-media posts.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("stats", help="tweets, tokens and entities per split of a dataset")
    p.add_argument("data_dir", type=existing_dir, help="directory with train.txt, valid.txt and test.txt")
    p.add_argument("--bio", choices=BIO_POLICIES, default="keep", help="BIO policy (default: keep)")
    p.add_argument("--scheme", choices=SCHEMES, default="conlleval", help=SCHEME_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=stats)

    p = commands.add_parser("score", help="entity-level precision, recall and F1")
    p.add_argument(
        "gold",
        type=existing_file,
        help="gold file in the dataset format (or one file with gold and pred columns)",
    )
    p.add_argument("pred", nargs="?", type=existing_file, help="predictions in the dataset format")
    p.add_argument("--scheme", choices=SCHEMES, default="conlleval", help=SCHEME_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=score)

    p = commands.add_parser(
        "offline-workspace", help="a copy of the pipeline that runs offline (tiny random BERT)"
    )
    p.add_argument("dest", type=new_dir, help="new directory for the workspace")
    p.add_argument("--repro", action="store_true", help="then run dvc repro and commit the baseline")
    p.set_defaults(run=offline_workspace)

    p = commands.add_parser(
        "quickstart",
        help="a real result in minutes: MiniLM on Twitter-2017, linear-crf and FMIT, no download",
    )
    p.add_argument("dest", type=new_dir, help="new directory for the workspace")
    p.set_defaults(run=quickstart)

    p = commands.add_parser(
        "train", help="train on a dataset of your own: the quickstart's workspace over your CoNLL files"
    )
    p.add_argument(
        "data_dir",
        type=existing_dir,
        help="a directory with train.txt, valid.txt and test.txt (the dataset's name)",
    )
    p.add_argument("dest", type=new_dir, help="new directory for the workspace")
    p.add_argument("--runs", nargs="+", help="runs to train (default: the quickstart's linear-crf and fmit)")
    p.add_argument(
        "--images",
        type=existing_dir,
        help="the directory of the dataset's <image id>.jpg (default: every image blank)",
    )
    p.set_defaults(run=train)

    p = commands.add_parser("params", help="every setting as the stages read it, the defaults filled in")
    p.add_argument(
        "params",
        nargs="?",
        default="params.yaml",
        type=existing_file,
        help="the params file (default: params.yaml)",
    )
    p.add_argument("--section", help="only this section (pipeline, a stage's, or models)")
    p.set_defaults(run=params)

    p = commands.add_parser("runs", help="every run of a workspace: its config, test and dev scores")
    p.add_argument(
        "workspace", nargs="?", default=".", type=existing_dir, help="the pipeline's directory (default: .)"
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="two runs side by side, e.g. twitter2017/fmit/seed1 train_visual@twitter2017-fmit-no-obj-1; "
        "WHERE:RUN is the run in another workspace directory or in a git revision (a commit, branch, "
        "tag or DVC experiment) of WORKSPACE, e.g. HEAD:twitter2017/fmit/seed1",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=runs)

    p = commands.add_parser("predict", help="entities of new posts (text and image) with a trained model")
    p.add_argument(
        "--checkpoint",
        required=True,
        type=existing_dir,
        help="a run's checkpoint directory (or the run directory)",
    )
    posts = p.add_mutually_exclusive_group(required=True)
    posts.add_argument("--text", help="one post's text (printed as indented JSON)")
    posts.add_argument(
        "--input",
        type=existing_file,
        help='JSON lines, a post a line: {"text" or "tokens", "image", "caption", "id"} (JSON out per line)',
    )
    p.add_argument("--image", type=image_file, help="the image of the --text post (default: the blank image)")
    p.add_argument(
        "--caption",
        action="append",
        help="the --text post's clue, for a run trained over a clue set: its image's caption (repeat "
        'for each source of a clue set of several, in order); in --input, a "caption" key',
    )
    p.add_argument(
        "--describe",
        nargs="?",
        const="params.yaml",
        metavar="PARAMS",
        type=existing_file,
        help="caption the image of each post that has no caption with the describe model of PARAMS "
        "(default: params.yaml)",
    )
    p.add_argument("--device", default="auto", type=device, help=DEVICE_HELP)
    p.set_defaults(run=predict)

    p = commands.add_parser(
        "visual-use",
        help="does a multimodal run use the image? test F1 with own, blank and other tweets' images",
    )
    p.add_argument(
        "run_dir", type=existing_dir, help="a multimodal run directory, runs/<dataset>/<model>/seed<k>"
    )
    p.add_argument("--device", default="auto", type=device, help=DEVICE_HELP)
    p.add_argument("--scheme", choices=SCHEMES, default="conlleval", help=SCHEME_HELP)
    p.add_argument("--batch-size", type=count, default=128, help="tweets per forward pass")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=visual_use)

    p = commands.add_parser(
        "clue-use",
        help="does a run over a clue set use its clue? test F1 with own, no and other tweets' clues",
    )
    p.add_argument(
        "run_dir", type=existing_dir, help="a run read with a clue set, runs/<dataset>/<run>+<clues>/seed<k>"
    )
    p.add_argument("--device", default="auto", type=device, help=DEVICE_HELP)
    p.add_argument("--scheme", choices=SCHEMES, default="conlleval", help=SCHEME_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=clue_use)

    p = commands.add_parser(
        "merge-shards", help="merge the shard files of a feature cache (after N jobs run with --shard I/N)"
    )
    p.add_argument(
        "cache", type=output_file, help="the cache the stage writes, e.g. features/objects/twitter2017.h5"
    )
    p.add_argument("--shards", type=count, required=True, help="N, the number of shards")
    p.add_argument(
        "--prepared",
        type=existing_dir,
        help="the prepared dataset directory (default: prepared/<cache name>)",
    )
    p.add_argument("--keep", action="store_true", help="keep the shard files after merging")
    p.set_defaults(run=merge_shards)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError:
        return 2
    try:
        args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:  # the reader went away (mner ... | head): stop quietly, as Unix tools do
        quiet_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped so
    except (ConllFormatError, OSError, ValueError) as error:  # OSError: a file unreadable, a disk full
        print(f"mner {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def quiet_stdout() -> None:
    """Point stdout at the null device, so that Python's flush at exit finds no closed pipe
    (which it would report on stderr)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # not a file (a test's capture)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
