"""analyze: what the report shows of a trained multimodal run that takes running its model
(the interaction phase's speed, the attention figure's example, the visual use), written as
JSON under the run's analysis/ for the report to read."""

import sys

from mner import run_stage
from mner.analysis import analyze_run, write_analysis
from mner.core.config import load_params
from mner.core.workspace import run_arguments, run_dir


def main() -> None:
    args = run_arguments(__doc__).parse_args()
    run = run_dir(args.dataset, args.run, args.seed)
    analysis = analyze_run(run, load_params())
    for path in write_analysis(run, analysis):
        unread = analysis[path.stem] is None
        print(f"{path}: {'null (the report does not read it)' if unread else 'written'}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
