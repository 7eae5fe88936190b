"""report: the papers' tables and figures from the evaluation outputs, in reports/."""

from pathlib import Path

from mner.config import load_params, section, to_dict
from mner.data.images import ImagesConfig
from mner.data.prepared import PrepareConfig
from mner.evaluation import EvaluateConfig
from mner.report import Pipeline, ReportConfig, write_report

params = load_params()
settings = {
    "scheme": section(params, "evaluate", EvaluateConfig).scheme,
    "bio": section(params, "prepare", PrepareConfig).bio,
    "images": to_dict(section(params, "images", ImagesConfig)),
}
pipeline = Pipeline(**params["pipeline"])
record = write_report(pipeline, section(params, "report", ReportConfig), settings, Path("reports"))
print(f"reports/results.md: {len(record['results'])} datasets, {len(pipeline.runs)} runs each")
print("figures (PNG, readable offline, unlike the CDN-backed page of `dvc plots show`):")
for figure in record["figures"]:
    print(f"  reports/{figure}")
