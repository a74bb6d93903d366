"""The run report: `report.json` (`json_report`), `report.md` with PNG plots (`markdown`, its sections,
`plots`, `tensorboard`) and the plain-text console summary (`console`).

`from pipeline.report import write_run_report` is the entry point the CLI and the stage runner use.
"""

from pipeline.report.console import format_summary
from pipeline.report.json_report import REPORT_SCHEMA, build_run_report, write_run_report

__all__ = ["REPORT_SCHEMA", "build_run_report", "format_summary", "write_run_report"]
