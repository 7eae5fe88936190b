"""report: the papers' tables and figures from the evaluation and analysis outputs, in reports/."""

import sys
from pathlib import Path

from mner import run_stage
from mner.core.config import load_params, section, to_dict
from mner.data.prepared import PrepareConfig
from mner.report import ReportConfig, evaluated_scheme, write_report
from mner.runs import Pipeline
from mner.settings.images import ImagesConfig


def main() -> None:
    params = load_params()
    pipeline = Pipeline.from_params(params)
    settings = {
        "scheme": evaluated_scheme(pipeline),
        "bio": section(params, "prepare", PrepareConfig).bio,
        "images": to_dict(section(params, "images", ImagesConfig)),
    }
    record = write_report(pipeline, section(params, "report", ReportConfig), settings, Path("reports"))
    print(f"reports/results.md: {len(record['results'])} datasets, {len(pipeline.run_names)} runs each")
    print("figures (PNG, readable offline, unlike the CDN-backed page of `dvc plots show`):")
    for figure in record["figures"]:
        print(f"  reports/{figure}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
